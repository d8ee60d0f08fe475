//! GAN generators: latent vectors drawn from the server's own seeded RNG, and images in [-1, 1]
//! turned into 8-bit pixels and PNG grids.
//!
//! Image `i` of a request with seed `s` always gets the same `z`: it comes from a ChaCha8 stream
//! selected by `i` under key `s`, independent of any global RNG, of `n`, and of what else is batched.

use super::{invalid, KindError};
use crate::registry::config::GeneratorConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The latent vector of image `index` under `seed`.
pub fn latent(seed: u64, index: u64, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    (0..dim).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()
}

/// Labels for `n` images: one for all, one per image, or drawn from the seed when absent.
pub fn labels(spec: Option<&str>, n: usize, seed: u64, cfg: &GeneratorConfig) -> Result<Vec<i64>, KindError> {
    if cfg.num_classes == 0 {
        return match spec {
            Some(_) => Err(invalid("label", "this generator is unconditional; omit label")),
            None => Ok(Vec::new()),
        };
    }
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A stream no image uses, so labels and latents are independent.
        rng.set_stream(u64::MAX);
        return Ok((0..n).map(|_| rng.random_range(0..cfg.num_classes)).collect());
    };
    let parsed: Result<Vec<i64>, _> = spec.split(',').map(|s| s.trim().parse::<i64>()).collect();
    let limit = format!("each label must be an integer from 0 to {}", cfg.num_classes - 1);
    let parsed = parsed.map_err(|_| invalid("label", limit.clone()))?;
    if parsed.iter().any(|l| *l < 0 || *l >= cfg.num_classes) {
        return Err(invalid("label", limit));
    }
    match parsed.len() {
        1 => Ok(vec![parsed[0]; n]),
        k if k == n => Ok(parsed),
        k => Err(invalid("label", format!("gives {k} labels for n = {n}; give one label or exactly n"))),
    }
}

/// Maps values in [-1, 1] to 8-bit pixels.
pub fn to_u8(data: &[f32]) -> Vec<u8> {
    data.iter().map(|v| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8).collect()
}

/// Converts one CHW image of 8-bit values to HWC order (a no-op for one channel).
pub fn chw_to_hwc(px: &[u8], c: usize, h: usize, w: usize) -> Vec<u8> {
    if c == 1 {
        return px.to_vec();
    }
    let mut out = Vec::with_capacity(px.len());
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                out.push(px[ch * h * w + y * w + x]);
            }
        }
    }
    out
}

/// Lays out HWC images on a near-square grid with a 2-pixel gutter and encodes it as PNG.
pub fn png_grid(images: &[Vec<u8>], c: usize, h: usize, w: usize) -> Vec<u8> {
    let n = images.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let gap = 2;
    let gw = cols * w + (cols - 1) * gap;
    let gh = rows * h + (rows - 1) * gap;
    let mut canvas = vec![0u8; gw * gh * c];
    for (k, img) in images.iter().enumerate() {
        let (r, col) = (k / cols, k % cols);
        let (oy, ox) = (r * (h + gap), col * (w + gap));
        for y in 0..h {
            let src = &img[y * w * c..(y + 1) * w * c];
            let start = ((oy + y) * gw + ox) * c;
            canvas[start..start + w * c].copy_from_slice(src);
        }
    }
    let color = if c == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &canvas,
        gw as u32,
        gh as u32,
        color,
    )
    .expect("in-memory PNG encoding of a well-sized buffer cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GeneratorConfig {
        GeneratorConfig { latent_dim: 8, num_classes: 10, output_shape: [1, 4, 4], labels_file: None, max_n: 16 }
    }

    #[test]
    fn latents_depend_only_on_seed_and_index() {
        assert_eq!(latent(7, 3, 8), latent(7, 3, 8));
        assert_ne!(latent(7, 3, 8), latent(7, 4, 8));
        assert_ne!(latent(7, 3, 8), latent(8, 3, 8));
        let z = latent(1, 0, 10_000);
        let mean: f32 = z.iter().sum::<f32>() / z.len() as f32;
        let var: f32 = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / z.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "standard normal: mean {mean} var {var}");
    }

    #[test]
    fn label_forms() {
        let c = cfg();
        assert_eq!(labels(Some("3"), 2, 0, &c).unwrap(), vec![3, 3]);
        assert_eq!(labels(Some("1,2"), 2, 0, &c).unwrap(), vec![1, 2]);
        assert!(labels(Some("1,2,3"), 2, 0, &c).is_err());
        assert!(labels(Some("10"), 1, 0, &c).is_err());
        assert!(labels(Some("x"), 1, 0, &c).is_err());
        let drawn = labels(None, 50, 9, &c).unwrap();
        assert_eq!(drawn, labels(None, 50, 9, &c).unwrap());
        assert!(drawn.iter().all(|l| (0..10).contains(l)));
    }

    #[test]
    fn pixels_and_grid() {
        assert_eq!(to_u8(&[-1.0, 0.0, 1.0, 2.0]), vec![0, 128, 255, 255]);
        let png = png_grid(&[vec![255; 16], vec![0; 16], vec![9; 16]], 1, 4, 4);
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (4 * 2 + 2, 4 * 2 + 2));
    }
}
