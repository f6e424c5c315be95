//! Images to PNG: one image, or a grid of several with a white gutter.

use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};

use super::GenerateError;

/// White pixels between and around the tiles of a grid.
pub const GUTTER: u32 = 2;

/// An image `[3, H, W]` in `[0, 1]` as 8-bit RGB (values clamped, rounded).
pub fn to_rgb8<B: Backend>(image: Tensor<B, 3>) -> Result<image::RgbImage, GenerateError> {
    let [c, h, w] = image.dims();
    if c != 3 {
        return Err(GenerateError::Request {
            index: 0,
            message: format!("an image to save must be [3, H, W], found [{c}, {h}, {w}]"),
        });
    }
    let data = image
        .clamp(0.0, 1.0)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 pixels");
    let plane = h * w;
    Ok(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|ch| {
            (data[ch * plane + i] * 255.0).round() as u8
        }))
    }))
}

/// Tile same-sized images `columns` per row (row-major) with a [`GUTTER`] of white.
pub fn grid<B: Backend>(
    images: Vec<Tensor<B, 3>>,
    columns: usize,
) -> Result<image::RgbImage, GenerateError> {
    let Some(first) = images.first() else {
        return Err(GenerateError::setting(
            "grid images",
            0,
            "at least one image",
        ));
    };
    if columns == 0 {
        return Err(GenerateError::setting("grid columns", 0, "at least 1"));
    }
    let [_, h, w] = first.dims();
    let rows = images.len().div_ceil(columns);
    let (th, tw) = (h as u32, w as u32);
    let mut canvas = image::RgbImage::from_pixel(
        columns as u32 * (tw + GUTTER) + GUTTER,
        rows as u32 * (th + GUTTER) + GUTTER,
        image::Rgb([255, 255, 255]),
    );
    for (k, tile) in images.into_iter().enumerate() {
        let dims = tile.dims();
        if dims[1..] != [h, w] {
            return Err(GenerateError::Request {
                index: k,
                message: format!(
                    "grid tiles must share one size: {h}x{w} vs {}x{}",
                    dims[1], dims[2]
                ),
            });
        }
        let tile = to_rgb8(tile)?;
        let (row, col) = ((k / columns) as u32, (k % columns) as u32);
        image::imageops::replace(
            &mut canvas,
            &tile,
            (GUTTER + col * (tw + GUTTER)) as i64,
            (GUTTER + row * (th + GUTTER)) as i64,
        );
    }
    Ok(canvas)
}

/// Save an RGB image as PNG (format from the extension, which should be `.png`).
pub fn save_png(image: &image::RgbImage, path: &Path) -> Result<(), GenerateError> {
    image.save(path).map_err(|source| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    })
}
