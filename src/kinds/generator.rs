//! GAN generators: latent vectors drawn from the server's own seeded RNG, and images in [-1, 1]
//! turned into 8-bit pixels and PNG grids.
//!
//! Image `i` of a request with seed `s` always gets the same `z`: it comes from a ChaCha8 stream
//! selected by `i` under key `s`, independent of any global RNG, of `n`, and of what else is batched.

use super::{field_error, invalid, plain_file_name, spec, FieldError, Kind, KindError, TensorSpec};
use crate::tensor::{ItemTensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The generator kind (`GET /generate`): `z [B, Z]` (+ `labels [B]` int64) to `[B, C, H, W]` in [-1, 1].
pub struct Generator;

impl Kind for Generator {
    const NAME: &'static str = "generator";
    const ENDPOINT: &'static str = "GET /generate";
    type Config = GeneratorConfig;

    fn validate(g: &GeneratorConfig) -> Result<(), FieldError> {
        if !(1..=65_536).contains(&g.latent_dim) {
            return Err(field_error("latent_dim", "must be between 1 and 65536"));
        }
        if !(0..=100_000).contains(&g.num_classes) {
            return Err(field_error("num_classes", "must be between 0 and 100000"));
        }
        let [c, h, w] = g.output_shape;
        if !(c == 1 || c == 3) || !(1..=2048).contains(&h) || !(1..=2048).contains(&w) {
            return Err(field_error("output_shape", "needs C in {1, 3} and H, W between 1 and 2048"));
        }
        if g.max_n == 0 || g.max_n > 1024 {
            return Err(field_error("max_n", "must be between 1 and 1024"));
        }
        if g.labels_file.as_deref().is_some_and(|l| !plain_file_name(l)) {
            return Err(field_error("labels_file", "must be a file name in the model directory"));
        }
        Ok(())
    }

    fn labels_file(g: &GeneratorConfig) -> Option<&str> {
        g.labels_file.as_deref()
    }

    fn check_labels(g: &GeneratorConfig, labels: &[String]) -> Result<(), String> {
        if g.num_classes as usize != labels.len() {
            return Err(format!("{} labels but generator.num_classes = {}", labels.len(), g.num_classes));
        }
        Ok(())
    }

    fn inputs(g: &GeneratorConfig) -> Vec<TensorSpec> {
        let mut v = vec![spec("z", "FP32", vec![-1, g.latent_dim])];
        if g.num_classes > 0 {
            v.push(spec("labels", "INT64", vec![-1]));
        }
        v
    }

    fn outputs(g: &GeneratorConfig, _labels: &[String]) -> Vec<TensorSpec> {
        let [c, h, w] = g.output_shape;
        vec![spec("images", "FP32", vec![-1, c, h, w])]
    }

    /// A conditional generator's labels must name one of its classes, or its embedding lookup
    /// would fail the whole batch.
    fn check_v2_input(g: &GeneratorConfig, input: usize, _shape: &[i64], data: &TensorData) -> Result<(), String> {
        if let (1, TensorData::I64(labels)) = (input, data) {
            if let Some(i) = labels.iter().position(|l| *l < 0 || *l >= g.num_classes) {
                return Err(format!(
                    "input 'labels': element {i} must be a class index from 0 to {}",
                    g.num_classes - 1
                ));
            }
        }
        Ok(())
    }
}

/// A generator's contract (`[generator]`): `z [B, Z]` (+ `labels [B]` int64) to images `[B, C, H, W]` in [-1, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Latent size (Z).
    pub latent_dim: i64,
    /// Number of classes of a conditional generator; 0 for an unconditional one.
    #[serde(default)]
    pub num_classes: i64,
    /// Output shape per item, `[C, H, W]`.
    pub output_shape: [i64; 3],
    /// Optional class names file for a conditional generator.
    pub labels_file: Option<String>,
    /// Largest `n` one request may ask for.
    #[serde(default = "default_max_n")]
    pub max_n: usize,
}

fn default_max_n() -> usize {
    64
}

/// The model inputs of image `i` of a request: its latent vector under `seed`, and its label
/// when the generator is conditional.
pub fn item(seed: u64, i: usize, labels: &[i64], cfg: &GeneratorConfig) -> Vec<ItemTensor> {
    let mut item = vec![ItemTensor::f32(vec![cfg.latent_dim], latent(seed, i as u64, cfg.latent_dim as usize))];
    if let Some(l) = labels.get(i) {
        item.push(ItemTensor::i64(vec![], vec![*l]));
    }
    item
}

/// One HWC 8-bit image as nested JSON arrays: `[H][W]` for one channel, `[H][W][C]` otherwise.
pub fn pixels_json(px: &[u8], c: usize, w: usize) -> serde_json::Value {
    if c == 1 {
        serde_json::json!(px.chunks(w).map(|r| r.to_vec()).collect::<Vec<_>>())
    } else {
        serde_json::json!(px
            .chunks(w * c)
            .map(|r| r.chunks(c).map(|p| p.to_vec()).collect::<Vec<_>>())
            .collect::<Vec<_>>())
    }
}

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

    #[test]
    fn json_pixels_are_rows_of_pixels() {
        assert_eq!(pixels_json(&[1, 2, 3, 4], 1, 2), serde_json::json!([[1, 2], [3, 4]]));
        assert_eq!(pixels_json(&[1, 2, 3, 4, 5, 6], 3, 2), serde_json::json!([[[1, 2, 3], [4, 5, 6]]]));
        let it = item(3, 1, &[7, 8], &cfg());
        assert_eq!(it[1], ItemTensor::i64(vec![], vec![8]));
        assert_eq!(it[0].shape, vec![8]);
    }

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
