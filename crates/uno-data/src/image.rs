//! Host-side RGB images: what data sets produce and codecs / the ViT consume.

use std::path::Path;

use ::image::DynamicImage;

use crate::DataError;

/// An RGB image, channel-major `[3, height, width]`, values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `3 * height * width` values, channel-major (all red, then green, then blue).
    pub data: Vec<f32>,
}

impl RgbImage {
    /// A uniformly coloured image.
    pub fn filled(height: usize, width: usize, rgb: [f32; 3]) -> Self {
        let plane = height * width;
        let mut data = vec![0.0; 3 * plane];
        for (c, value) in rgb.iter().enumerate() {
            data[c * plane..(c + 1) * plane].fill(*value);
        }
        Self {
            height,
            width,
            data,
        }
    }

    /// The value of `channel` (0 = red, 1 = green, 2 = blue) at `(row, col)`.
    pub fn get(&self, channel: usize, row: usize, col: usize) -> f32 {
        self.data[(channel * self.height + row) * self.width + col]
    }

    /// Set all three channels of the pixel at `(row, col)`.
    pub fn set_pixel(&mut self, row: usize, col: usize, rgb: [f32; 3]) {
        let plane = self.height * self.width;
        for (c, value) in rgb.iter().enumerate() {
            self.data[c * plane + row * self.width + col] = *value;
        }
    }

    /// From 8-bit RGB.
    pub fn from_rgb8(image: &::image::RgbImage) -> Self {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let mut out = Self::filled(height, width, [0.0; 3]);
        for (col, row, pixel) in image.enumerate_pixels() {
            let rgb = pixel.0.map(|v| f32::from(v) / 255.0);
            out.set_pixel(row as usize, col as usize, rgb);
        }
        out
    }

    /// From a decoded image of any colour type (alpha dropped, values scaled to `[0, 1]`).
    pub fn from_dynamic(image: &DynamicImage) -> Self {
        let rgb = image.to_rgb32f();
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let mut out = Self::filled(height, width, [0.0; 3]);
        for (col, row, pixel) in rgb.enumerate_pixels() {
            out.set_pixel(row as usize, col as usize, pixel.0);
        }
        out
    }

    /// To 8-bit RGB (values clamped to `[0, 1]`, rounded).
    pub fn to_rgb8(&self) -> ::image::RgbImage {
        ::image::RgbImage::from_fn(self.width as u32, self.height as u32, |col, row| {
            let px =
                |c| (self.get(c, row as usize, col as usize).clamp(0.0, 1.0) * 255.0).round() as u8;
            ::image::Rgb([px(0), px(1), px(2)])
        })
    }

    /// Save as PNG (or any format the extension names and the `image` crate writes).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        self.to_rgb8().save(path).map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Decode any image the `image` crate reads. It is returned as decoded (any colour
    /// type); [`Self::from_dynamic`] converts it.
    pub fn load(path: &Path) -> Result<DynamicImage, DataError> {
        ::image::open(path).map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}
