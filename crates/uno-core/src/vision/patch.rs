//! Image <-> patch rows in BAGEL's `(py, px, c)` order.

use burn::tensor::{Tensor, backend::Backend};

use super::VisionError;

/// Memory layout of a single image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageLayout {
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
/// Returns the rows `[rows * cols, patch * patch * C]` and the grid `[rows, cols]`.
///
/// # Errors
/// [`VisionError::NotDivisible`] when `H` or `W` is not a multiple of `patch` (or `patch` is
/// zero).
pub fn patchify<B: Backend>(
    image: Tensor<B, 3>,
    patch: usize,
    layout: ImageLayout,
) -> Result<(Tensor<B, 2>, [usize; 2]), VisionError> {
    let (c, h, w) = match layout {
        ImageLayout::Chw => {
            let [c, h, w] = image.dims();
            (c, h, w)
        }
        ImageLayout::Hwc => {
            let [h, w, c] = image.dims();
            (c, h, w)
        }
    };
    VisionError::check_divisible("patchify", h, w, patch)?;
    let (rows, cols) = (h / patch, w / patch);
    let grid = match layout {
        // [c, rows, py, cols, px] -> [rows, cols, py, px, c]
        ImageLayout::Chw => image
            .reshape([c, rows, patch, cols, patch])
            .permute([1, 3, 2, 4, 0]),
        // [rows, py, cols, px, c] -> [rows, cols, py, px, c]
        ImageLayout::Hwc => image
            .reshape([rows, patch, cols, patch, c])
            .permute([0, 2, 1, 3, 4]),
    };
    Ok((grid.reshape([rows * cols, patch * patch * c]), [rows, cols]))
}

/// Inverse of [`patchify`]: patch rows `[rows * cols, patch * patch * C]` back to an image in
/// `layout`, with `C = row_len / patch^2`.
///
/// # Errors
/// [`VisionError::ShapeMismatch`] when the number of rows is not `rows * cols` or the row
/// length is not a positive multiple of `patch^2`.
pub fn unpatchify<B: Backend>(
    patches: Tensor<B, 2>,
    grid: [usize; 2],
    patch: usize,
    layout: ImageLayout,
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
        ImageLayout::Chw => grid
            .permute([4, 0, 2, 1, 3])
            .reshape([c, rows * patch, cols * patch]),
        ImageLayout::Hwc => grid
            .permute([0, 2, 1, 3, 4])
            .reshape([rows * patch, cols * patch, c]),
    })
}
