//! Patch grids, shared by [`crate::vision`], [`crate::embed`] and [`crate::vae`] (and
//! below all three, so none of them depends on another): image <-> patch rows in BAGEL's
//! `(py, px, c)` order, position-id checks, and [`VisionError`], the error of all of them on
//! bad user input.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// Memory layout of a single image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelLayout {
    /// `[C, H, W]` (PyTorch's layout, BAGEL's input).
    #[default]
    Chw,
    /// `[H, W, C]` (decoded image files).
    Hwc,
}

/// Cut an image into `patch x patch` patches, one row per patch.
///
/// Rows are in raster order (`row * cols + col`, `rows = H / patch`, `cols = W / patch`);
/// each row is the flattened patch in `(py, px, c)` order, i.e. element
/// `(py * patch + px) * C + c` is pixel `(row * patch + py, col * patch + px)` of channel
/// `c`. This is BAGEL's `patchify` (`einsum("chpwq->hwpqc")`), the order its Linear patch
/// embedding (the SigLIP conv weight permuted `(0, 2, 3, 1)`) and its 2x2 latent tokens use.
///
/// Returns the rows and the grid `[rows, cols]`.
///
/// # Shapes
/// - `image`: `[C, H, W]` or `[H, W, C]`, as `layout` says
/// - output: `[rows * cols, patch * patch * C]`
///
/// # Errors
/// [`VisionError::NotDivisible`] when `H` or `W` is not a multiple of `patch` (or `patch` is
/// zero).
pub fn patchify<B: Backend>(
    image: Tensor<B, 3>,
    patch: usize,
    layout: PixelLayout,
) -> Result<(Tensor<B, 2>, [usize; 2]), VisionError> {
    let (c, h, w) = match layout {
        PixelLayout::Chw => {
            let [c, h, w] = image.dims();
            (c, h, w)
        }
        PixelLayout::Hwc => {
            let [h, w, c] = image.dims();
            (c, h, w)
        }
    };
    VisionError::check_divisible("patchify", h, w, patch)?;
    let (rows, cols) = (h / patch, w / patch);
    let grid = match layout {
        // [c, rows, py, cols, px] -> [rows, cols, py, px, c]
        PixelLayout::Chw => image
            .reshape([c, rows, patch, cols, patch])
            .permute([1, 3, 2, 4, 0]),
        // [rows, py, cols, px, c] -> [rows, cols, py, px, c]
        PixelLayout::Hwc => image
            .reshape([rows, patch, cols, patch, c])
            .permute([0, 2, 1, 3, 4]),
    };
    Ok((grid.reshape([rows * cols, patch * patch * c]), [rows, cols]))
}

/// Inverse of [`patchify`]: patch rows back to an image in `layout`, with
/// `C = row_len / patch^2`.
///
/// # Shapes
/// - `patches`: `[rows * cols, patch * patch * C]`, `grid` = `[rows, cols]`
/// - output: `[C, rows * patch, cols * patch]` or `[rows * patch, cols * patch, C]`
///
/// # Errors
/// [`VisionError::ShapeMismatch`] when the number of rows is not `rows * cols` or the row
/// length is not a positive multiple of `patch^2`.
pub fn unpatchify<B: Backend>(
    patches: Tensor<B, 2>,
    grid: [usize; 2],
    patch: usize,
    layout: PixelLayout,
) -> Result<Tensor<B, 3>, VisionError> {
    let [n, d] = patches.dims();
    let [rows, cols] = grid;
    if n != rows * cols {
        return Err(VisionError::shape(
            "unpatchify: number of patch rows",
            rows * cols,
            n,
        ));
    }
    let pp = patch * patch;
    if pp == 0 || d == 0 || d % pp != 0 {
        return Err(VisionError::shape(
            "unpatchify: patch row length (a positive multiple of patch^2)",
            format!("k * {pp}"),
            d,
        ));
    }
    let c = d / pp;
    let grid = patches.reshape([rows, cols, patch, patch, c]);
    Ok(match layout {
        PixelLayout::Chw => grid
            .permute([4, 0, 2, 1, 3])
            .reshape([c, rows * patch, cols * patch]),
        PixelLayout::Hwc => grid
            .permute([0, 2, 1, 3, 4])
            .reshape([rows * patch, cols * patch, c]),
    })
}

/// Errors on bad user input to the vision, embedding and VAE pieces. Every message names the
/// offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VisionError {
    /// An image side is not a multiple of the patch (or downsampling) size.
    #[error(
        "{what}: image of {height}x{width} is not divisible by {patch} (height and width must be multiples)"
    )]
    NotDivisible {
        /// The operation that checked (e.g. `"patchify"`).
        what: &'static str,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// The size both sides must be multiples of.
        patch: usize,
    },
    /// A position id indexes past the end of a position table.
    #[error("{what}: position id {id} at index {index} is out of the table of {rows} rows")]
    PositionIdOutOfRange {
        /// The table or operation that checked.
        what: &'static str,
        /// The offending id.
        id: usize,
        /// Its index in the id list.
        index: usize,
        /// Rows of the table (ids must be below this).
        rows: usize,
    },
    /// An image's patch grid is larger than the position table's side.
    #[error("{what}: patch grid {rows}x{cols} exceeds the position table's {max}x{max}")]
    GridTooLarge {
        /// The operation that checked.
        what: &'static str,
        /// Patch rows of the image.
        rows: usize,
        /// Patch columns of the image.
        cols: usize,
        /// Side of the position table (SigLIP: 70).
        max: usize,
    },
    /// A tensor or list does not have the shape or length that was expected.
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// The tensor or list, and the operation that checked it.
        what: &'static str,
        /// The expected shape or length, `Debug`-formatted.
        expected: String,
        /// The actual shape or length, `Debug`-formatted.
        found: String,
    },
    /// A configuration value cannot describe a valid module.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl VisionError {
    /// `Ok` when both sides are multiples of a non-zero `patch`, else [`Self::NotDivisible`].
    pub(crate) fn check_divisible(
        what: &'static str,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<(), Self> {
        if patch == 0 || !height.is_multiple_of(patch) || !width.is_multiple_of(patch) {
            return Err(Self::NotDivisible {
                what,
                height,
                width,
                patch,
            });
        }
        Ok(())
    }

    pub(crate) fn shape(
        what: &'static str,
        expected: impl core::fmt::Debug,
        found: impl core::fmt::Debug,
    ) -> Self {
        Self::ShapeMismatch {
            what,
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }
}

/// Check position ids against a table of `rows` rows.
pub(crate) fn check_ids(what: &'static str, ids: &[usize], rows: usize) -> Result<(), VisionError> {
    match ids.iter().enumerate().find(|(_, id)| **id >= rows) {
        Some((index, &id)) => Err(VisionError::PositionIdOutOfRange {
            what,
            id,
            index,
            rows,
        }),
        None => Ok(()),
    }
}

/// Position ids as an Int tensor on `device`.
pub(crate) fn ids_tensor<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [ids.len()]), device)
}
