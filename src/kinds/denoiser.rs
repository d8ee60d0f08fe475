//! Denoising autoencoders (`POST /denoise`): images to `[C, H, W]` rows in [0, 1], and the
//! model's cleaned `[C, H, W]` back to 8-bit pixels, in the polarity of the upload.
//!
//! Contract: `[B, C, H, W]` float32 in [0, 1] (the model's polarity: `invert` says how uploads
//! reach it) to `[B, C, H, W]` in [0, 1]. With an `[embedding]` table the same model also maps the
//! images to latent vectors (`POST /embed`).

use super::classifier::{resized_planes, InvertPolicy, Pixels};
use super::{field_error, positive, spec, FieldError, Kind, TensorSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The denoiser kind.
pub struct Denoiser;

impl Kind for Denoiser {
    const NAME: &'static str = "denoiser";
    const ENDPOINT: &'static str = "POST /denoise";
    type Config = DenoiserConfig;

    fn validate(c: &DenoiserConfig) -> Result<(), FieldError> {
        let [ch, h, w] = c.input_shape;
        if ch != 1 && ch != 3 {
            return Err(field_error("input_shape", "channels must be 1 or 3"));
        }
        if !(1..=4096).contains(&h) || !(1..=4096).contains(&w) {
            return Err(field_error("input_shape", "height and width must be between 1 and 4096"));
        }
        if !positive(c.pixel_scale) {
            return Err(field_error("pixel_scale", "must be positive"));
        }
        if !(0.0..=1.0).contains(&c.alpha_background) {
            return Err(field_error("alpha_background", "must be between 0 (black) and 1 (white)"));
        }
        Ok(())
    }

    fn inputs(c: &DenoiserConfig) -> Vec<TensorSpec> {
        let [ch, h, w] = c.input_shape;
        vec![spec("images", "FP32", vec![-1, ch, h, w])]
    }

    fn outputs(c: &DenoiserConfig, _labels: &[String]) -> Vec<TensorSpec> {
        let [ch, h, w] = c.input_shape;
        vec![spec("denoised", "FP32", vec![-1, ch, h, w])]
    }
}

/// How a denoiser's images reach it (`[denoiser]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenoiserConfig {
    /// Input and output shape per item, `[C, H, W]`; C is 1 (grayscale) or 3 (RGB).
    pub input_shape: [i64; 3],
    /// Pixel value that maps to 1.0 (255 for 8-bit images).
    #[serde(default = "default_pixel_scale")]
    pub pixel_scale: f32,
    /// Whether to invert images before the model (and the result back): `auto` inverts when the
    /// border is lighter than mid-grey (the model was trained on light strokes on black).
    #[serde(default)]
    pub invert: InvertPolicy,
    /// The value transparent pixels take, from 0 (black) to 1 (white).
    #[serde(default = "default_alpha_background")]
    pub alpha_background: f32,
}

fn default_pixel_scale() -> f32 {
    255.0
}
fn default_alpha_background() -> f32 {
    1.0
}

/// One image resized to the model's `[C, H, W]` in [0, 1], CHW, in the model's polarity; with
/// whether it was inverted.
pub fn prepare(p: Pixels, cfg: &DenoiserConfig) -> (Vec<f32>, bool) {
    let [_, h, w] = cfg.input_shape;
    let (h, w) = (h as u32, w as u32);
    let invert = cfg.invert.applies(&p);
    let planes = resized_planes(p, w, h);
    let row = planes
        .iter()
        .flat_map(|plane| {
            plane.iter().map(move |v| {
                let v = v.clamp(0.0, 1.0);
                if invert {
                    1.0 - v
                } else {
                    v
                }
            })
        })
        .collect();
    (row, invert)
}

/// The model's `[C, H, W]` output as 8-bit HWC pixels, inverted back when the upload was.
pub fn to_pixels(out: &[f32], c: usize, h: usize, w: usize, inverted: bool) -> Vec<u8> {
    let mut px = vec![0u8; c * h * w];
    for k in 0..c {
        for i in 0..h * w {
            let v = out[k * h * w + i].clamp(0.0, 1.0);
            let v = if inverted { 1.0 - v } else { v };
            px[i * c + k] = (v * 255.0).round() as u8;
        }
    }
    px
}

/// Peak signal-to-noise ratio in dB between two images in [0, 255] (infinite when equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma};

    fn cfg() -> DenoiserConfig {
        DenoiserConfig { input_shape: [1, 2, 2], pixel_scale: 255.0, invert: InvertPolicy::Auto, alpha_background: 1.0 }
    }

    #[test]
    fn paper_goes_in_inverted_and_comes_back_as_paper() {
        let img = ImageBuffer::from_fn(2, 2, |x, y| Luma([if (x, y) == (0, 0) { 0.0 } else { 1.0 }]));
        let (row, inverted) = prepare(Pixels::Gray(img), &cfg());
        assert!(inverted);
        assert_eq!(row, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(to_pixels(&row, 1, 2, 2, inverted), vec![0, 255, 255, 255]);
        assert_eq!(to_pixels(&[0.5, 2.0, -1.0, 0.0], 1, 2, 2, false), vec![128, 255, 0, 0], "clamped");
    }

    #[test]
    fn rgb_planes_are_interleaved_back() {
        let out = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(to_pixels(&out, 3, 1, 2, false), vec![0, 255, 0, 255, 0, 0]);
    }

    #[test]
    fn psnr_of_known_errors() {
        assert!(psnr(&[10, 20], &[10, 20]).is_infinite());
        assert!((psnr(&[0, 0], &[255, 255]) - 0.0).abs() < 1e-9);
        assert!((psnr(&[0; 4], &[1, 1, 1, 1]) - 48.1308).abs() < 1e-3);
    }
}
