//! CNN classifiers (`POST /classify`): images (encoded files or raw pixel arrays) to `[C, H, W]`
//! rows, logits to top-k.

use super::{field_error, invalid, plain_file_name, positive, spec, FieldError, Kind, KindError, TensorSpec};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageReader, Limits, Luma, Rgb};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use utoipa::ToSchema;

/// The classifier kind: `[B, C, H, W]` float32 images to `[B, classes]` logits or probabilities.
pub struct Classifier;

impl Kind for Classifier {
    const NAME: &'static str = "classifier";
    const ENDPOINT: &'static str = "POST /classify";
    type Config = ClassifierConfig;

    fn validate(c: &ClassifierConfig) -> Result<(), FieldError> {
        let [ch, h, w] = c.input_shape;
        if ch != 1 && ch != 3 {
            return Err(field_error("input_shape", "channels must be 1 or 3"));
        }
        if !(1..=4096).contains(&h) || !(1..=4096).contains(&w) {
            return Err(field_error("input_shape", "height and width must be between 1 and 4096"));
        }
        if c.mean.len() != ch as usize {
            return Err(field_error("mean", format!("needs {ch} values, one per channel")));
        }
        if c.std.len() != ch as usize || c.std.iter().any(|s| !positive(*s)) {
            return Err(field_error("std", format!("needs {ch} positive values, one per channel")));
        }
        if !positive(c.pixel_scale) {
            return Err(field_error("pixel_scale", "must be positive"));
        }
        if !(0.0..=1.0).contains(&c.alpha_background) {
            return Err(field_error("alpha_background", "must be between 0 (black) and 1 (white)"));
        }
        if !plain_file_name(&c.labels_file) {
            return Err(field_error("labels_file", "must be a file name in the model directory"));
        }
        Ok(())
    }

    fn labels_file(c: &ClassifierConfig) -> Option<&str> {
        Some(&c.labels_file)
    }

    fn inputs(c: &ClassifierConfig) -> Vec<TensorSpec> {
        let [ch, h, w] = c.input_shape;
        vec![spec("images", "FP32", vec![-1, ch, h, w])]
    }

    fn outputs(c: &ClassifierConfig, labels: &[String]) -> Vec<TensorSpec> {
        let name = match c.output {
            ClassifierOutput::Logits => "logits",
            ClassifierOutput::Probabilities => "probabilities",
        };
        vec![spec(name, "FP32", vec![-1, labels.len() as i64])]
    }
}

/// How a classifier's images are turned into its input tensor (`[classifier]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Input shape per item, `[C, H, W]`; C is 1 (grayscale) or 3 (RGB).
    pub input_shape: [i64; 3],
    /// Whether the model returns `logits` (softmax is applied by the server) or `probabilities`.
    #[serde(default = "default_output")]
    pub output: ClassifierOutput,
    /// File next to config.toml with one class name per line, in output order.
    #[serde(default = "default_labels_file")]
    pub labels_file: String,
    /// Pixel value that maps to 1.0 before normalisation (255 for 8-bit images).
    #[serde(default = "default_pixel_scale")]
    pub pixel_scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    pub std: Vec<f32>,
    /// Whether to invert images: `auto` inverts when the border is lighter than mid-grey.
    #[serde(default)]
    pub invert: InvertPolicy,
    /// The value transparent pixels take before anything else, from 0 (black) to 1 (white).
    #[serde(default = "default_alpha_background")]
    pub alpha_background: f32,
}

fn default_alpha_background() -> f32 {
    1.0
}

/// Meaning of a classifier's output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierOutput {
    /// Unnormalised scores; the server applies softmax.
    Logits,
    /// Already a probability distribution.
    Probabilities,
}

/// When to invert an image before it is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvertPolicy {
    /// Invert when the mean of the border pixels is lighter than mid-grey (dark ink on paper).
    #[default]
    Auto,
    /// Never invert.
    Never,
    /// Always invert.
    Always,
}

fn default_output() -> ClassifierOutput {
    ClassifierOutput::Logits
}
fn default_labels_file() -> String {
    "labels.txt".to_string()
}
fn default_pixel_scale() -> f32 {
    255.0
}

/// Where one image of a request comes from: an encoded file, or raw pixel values with a shape.
pub enum Source {
    /// An encoded image file, named by its request field.
    Encoded(String, bytes::Bytes),
    /// Raw pixel values with their `[H, W]` or `[H, W, C]` shape, named by their request field.
    Values(String, Vec<f64>, Vec<usize>),
}

/// Decodes, converts, inverts, resizes and normalises each image into one model row; returns the
/// rows with whether each was inverted. Heavy: run it off the async workers.
pub fn preprocess_all(
    sources: Vec<Source>,
    cfg: &ClassifierConfig,
    max_pixels: u64,
) -> Result<Vec<(Vec<f32>, bool)>, KindError> {
    sources
        .into_iter()
        .map(|s| {
            let px = source_pixels(s, cfg.input_shape[0], cfg.pixel_scale, cfg.alpha_background, max_pixels)?;
            Ok(to_row(px, cfg))
        })
        .collect()
}

/// A JSON `pixels` array parsed straight into flat values and its nesting, without building a
/// `serde_json::Value` first (for a 28x28 image that tree was about 12 % of the server's CPU on
/// `/classify` with JSON pixels; issue 24's profile). It never fails to deserialize: the first
/// problem (ragged arrays, more than 3 levels, a value that is not a number) is kept, the rest of
/// the array is skipped, and [`flatten_pixels`] reports it against the field.
#[derive(Debug, Default)]
pub struct NestedPixels {
    values: Vec<f64>,
    /// The length of the arrays at each depth (the first one's, which every other must match).
    dims: Vec<Option<usize>>,
    problem: Option<&'static str>,
}

impl NestedPixels {
    /// From a JSON value (tests, and callers that already hold one).
    pub fn from_value(v: &serde_json::Value) -> NestedPixels {
        serde::Deserialize::deserialize(v)
            .unwrap_or_else(|_| NestedPixels { problem: Some("must hold only numbers"), ..Default::default() })
    }

    fn number(&mut self, depth: usize, x: f64) {
        if self.problem.is_none() {
            if depth != self.dims.len() {
                self.problem = Some("nested arrays must be rectangular");
            } else {
                self.values.push(x);
            }
        }
    }
}

/// One level of a pixel array: the seed carries the state and the depth.
struct Level<'a> {
    px: &'a mut NestedPixels,
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Level<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers in nested arrays")
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.px.number(self.depth, v as f64);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.px.number(self.depth, v as f64);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.px.number(self.depth, v);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (px, depth) = (self.px, self.depth);
        if px.problem.is_none() {
            if depth > 3 {
                px.problem = Some("at most 3 levels of nesting ([H][W][C])");
            } else if px.dims.len() == depth {
                if !px.values.is_empty() {
                    px.problem = Some("nested arrays must be rectangular");
                }
                px.dims.push(None);
            }
        }
        let mut n = 0usize;
        loop {
            let more = if px.problem.is_some() {
                seq.next_element::<serde::de::IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(Level { px: &mut *px, depth: depth + 1 })?.is_some()
            };
            if !more {
                break;
            }
            n += 1;
        }
        if px.problem.is_none() {
            match px.dims[depth] {
                None => px.dims[depth] = Some(n),
                Some(m) if m != n => px.problem = Some("nested arrays must be rectangular"),
                Some(_) => {}
            }
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        self.px.problem.get_or_insert("must hold only numbers");
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.px.problem.get_or_insert("must hold only numbers");
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.px.problem.get_or_insert("must hold only numbers");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.px.problem.get_or_insert("must hold only numbers");
        Ok(())
    }
}

impl<'de> Deserialize<'de> for NestedPixels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut px = NestedPixels::default();
        serde::de::DeserializeSeed::deserialize(Level { px: &mut px, depth: 0 }, d)?;
        Ok(px)
    }
}

/// Flattens nested pixel arrays (`[H][W]` or `[H][W][C]`) or checks a flat array against `shape`.
pub fn flatten_pixels(
    px: NestedPixels,
    shape: Option<Vec<usize>>,
    field: &str,
) -> Result<(Vec<f64>, Vec<usize>), KindError> {
    let pf = format!("{field}.pixels");
    if let Some(p) = px.problem {
        return Err(invalid(pf, p));
    }
    let dims: Vec<usize> = px.dims.into_iter().map(|d| d.unwrap_or(0)).collect();
    match (shape, dims.len()) {
        (Some(s), 1) => Ok((px.values, s)),
        (None, 2 | 3) => Ok((px.values, dims)),
        (None, _) => Err(invalid(pf, "give nested [H][W] or [H][W][C] arrays, or a flat array with shape")),
        (Some(_), _) => Err(invalid(format!("{field}.shape"), "only goes with a flat pixels array")),
    }
}

/// An image as float channels in [0, 1], HWC, before resizing.
pub enum Pixels {
    /// One channel.
    Gray(ImageBuffer<Luma<f32>, Vec<f32>>),
    /// Three channels.
    Rgb(ImageBuffer<Rgb<f32>, Vec<f32>>),
}

/// Decodes an encoded image (PNG, JPEG, WebP, GIF, BMP), refusing one above `max_pixels` from its
/// header alone, before any pixel is decoded (decompression bombs).
pub fn decode(bytes: &[u8], field: &str, max_pixels: u64) -> Result<DynamicImage, KindError> {
    let undecodable = |m: String| KindError::Undecodable { field: field.to_string(), message: m };
    if bytes.is_empty() {
        return Err(invalid(field, "image is empty"));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| undecodable(e.to_string()))?;
    if reader.format().is_none() {
        return Err(undecodable("unrecognised image format; send PNG, JPEG, WebP, GIF or BMP".into()));
    }
    let (width, height) = reader.into_dimensions().map_err(|e| match e {
        // The decoder's own ceiling on dimensions (a header claiming 2^31 pixels) is a size refusal too.
        image::ImageError::Limits(l) => KindError::TooLargeToRead { field: field.to_string(), message: l.to_string() },
        other => undecodable(other.to_string()),
    })?;
    if width as u64 * height as u64 > max_pixels {
        return Err(KindError::TooLarge { field: field.to_string(), width, height, limit: max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(undecodable("image has no pixels".into()));
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| undecodable(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // 16 bytes per pixel of the size the header declares covers RGBA32F, the widest decoded
    // layout; a frame or chunk inside the file that claims more is refused, not allocated.
    let max_alloc = (width as u64 * height as u64).saturating_mul(16).max(4 << 20);
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        // The header passed, so what broke the limits is inside the file: a frame (GIF, WebP) or
        // a chunk declaring more pixels than the image says it has.
        image::ImageError::Limits(_) => KindError::TooLargeToRead {
            field: field.to_string(),
            message: format!(
                "the header says {width}x{height} pixels, but a frame or chunk inside the file declares a larger \
                 size: decoding it would take more than the {max_alloc} bytes that size allows"
            ),
        },
        other => undecodable(other.to_string()),
    })
}

/// Converts a decoded image to float channels for a model with `channels` input channels.
/// Transparent pixels are composited onto white, as a browser shows them.
pub fn from_image(img: &DynamicImage, channels: i64) -> Pixels {
    from_image_on(img, channels, 1.0)
}

/// Converts a decoded image to float channels, compositing any alpha channel onto `background`
/// (0 black to 1 white): an HTML canvas exports black strokes on transparent pixels, and
/// dropping the alpha would make the whole image black.
pub fn from_image_on(img: &DynamicImage, channels: i64, background: f32) -> Pixels {
    if img.color().has_alpha() {
        let rgba = img.to_rgba32f();
        let (w, h) = rgba.dimensions();
        let over = |p: &image::Rgba<f32>, c: usize| p.0[c] * p.0[3] + background * (1.0 - p.0[3]);
        return if channels == 1 {
            // ITU-R BT.601 luma, as image's own grayscale conversion uses.
            Pixels::Gray(ImageBuffer::from_fn(w, h, |x, y| {
                let p = rgba.get_pixel(x, y);
                Luma([0.299 * over(p, 0) + 0.587 * over(p, 1) + 0.114 * over(p, 2)])
            }))
        } else {
            Pixels::Rgb(ImageBuffer::from_fn(w, h, |x, y| {
                let p = rgba.get_pixel(x, y);
                Rgb([over(p, 0), over(p, 1), over(p, 2)])
            }))
        };
    }
    if channels == 1 {
        Pixels::Gray(img.to_luma32f())
    } else {
        Pixels::Rgb(img.to_rgb32f())
    }
}

/// Builds an image from raw pixel values in `[0, pixel_scale]` with shape `[H, W]` or `[H, W, C]`
/// (C = 1 or 3), converting channels to what the model takes.
pub fn from_values(
    values: &[f64],
    shape: &[usize],
    cfg: &ClassifierConfig,
    field: &str,
    max_pixels: u64,
) -> Result<Pixels, KindError> {
    from_values_as(values, shape, cfg.pixel_scale, cfg.input_shape[0], field, max_pixels)
}

/// One image of a request as float pixels with `channels` channels: decoded (alpha composited
/// onto `background`) or built from raw values in `[0, pixel_scale]`.
pub fn source_pixels(
    s: Source,
    channels: i64,
    pixel_scale: f32,
    background: f32,
    max_pixels: u64,
) -> Result<Pixels, KindError> {
    match s {
        Source::Encoded(field, bytes) => Ok(from_image_on(&decode(&bytes, &field, max_pixels)?, channels, background)),
        Source::Values(field, values, shape) => {
            from_values_as(&values, &shape, pixel_scale, channels, &field, max_pixels)
        }
    }
}

/// [`from_values`] for any image kind: `pixel_scale` and the model's `channels`.
pub fn from_values_as(
    values: &[f64],
    shape: &[usize],
    pixel_scale: f32,
    channels: i64,
    field: &str,
    max_pixels: u64,
) -> Result<Pixels, KindError> {
    let (h, w, c) = match shape {
        [h, w] => (*h, *w, 1),
        [h, w, c] if *c == 1 || *c == 3 => (*h, *w, *c),
        _ => return Err(invalid(format!("{field}.shape"), "must be [H, W] or [H, W, C] with C = 1 or 3")),
    };
    if h == 0 || w == 0 {
        return Err(invalid(format!("{field}.shape"), "height and width must be at least 1"));
    }
    if (h as u64) * (w as u64) > max_pixels {
        return Err(KindError::TooLarge {
            field: field.to_string(),
            width: w as u32,
            height: h as u32,
            limit: max_pixels,
        });
    }
    if values.len() != h * w * c {
        return Err(invalid(
            format!("{field}.pixels"),
            format!("has {} values but shape {:?} needs {}", values.len(), shape, h * w * c),
        ));
    }
    let scale = pixel_scale as f64;
    if let Some(bad) = values.iter().position(|v| !v.is_finite() || *v < 0.0 || *v > scale) {
        return Err(invalid(
            format!("{field}.pixels[{bad}]"),
            format!("must be a finite number between 0 and {scale}"),
        ));
    }
    let f: Vec<f32> = values.iter().map(|v| (*v / scale) as f32).collect();
    let want = channels;
    Ok(match (c, want) {
        (1, 1) => Pixels::Gray(ImageBuffer::from_raw(w as u32, h as u32, f).expect("sized above")),
        (3, 3) => Pixels::Rgb(ImageBuffer::from_raw(w as u32, h as u32, f).expect("sized above")),
        (1, _) => Pixels::Rgb(ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
            let v = f[(y as usize) * w + x as usize];
            Rgb([v, v, v])
        })),
        _ => Pixels::Gray(ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
            let i = ((y as usize) * w + x as usize) * 3;
            // ITU-R BT.601 luma, as image's own grayscale conversion uses.
            Luma([0.299 * f[i] + 0.587 * f[i + 1] + 0.114 * f[i + 2]])
        })),
    })
}

impl InvertPolicy {
    /// Whether the policy inverts this image (`auto`: its border is lighter than mid-grey).
    pub fn applies(self, p: &Pixels) -> bool {
        match self {
            InvertPolicy::Always => true,
            InvertPolicy::Never => false,
            InvertPolicy::Auto => border_mean(p) > 0.5,
        }
    }
}

/// The image resized to `w` x `h` (triangle filter; untouched when already that size), as one
/// plane per channel.
pub fn resized_planes(p: Pixels, w: u32, h: u32) -> Vec<Vec<f32>> {
    match p {
        Pixels::Gray(b) => {
            let b = if b.dimensions() == (w, h) { b } else { image::imageops::resize(&b, w, h, FilterType::Triangle) };
            vec![b.into_raw()]
        }
        Pixels::Rgb(b) => {
            let b = if b.dimensions() == (w, h) { b } else { image::imageops::resize(&b, w, h, FilterType::Triangle) };
            let raw = b.into_raw();
            (0..3).map(|ch| raw.iter().skip(ch).step_by(3).copied().collect()).collect()
        }
    }
}

/// Mean brightness in [0, 1] of the one-pixel border of an image.
pub fn border_mean(p: &Pixels) -> f32 {
    fn mean_of<F: Fn(u32, u32) -> f32>(w: u32, h: u32, f: F) -> f32 {
        let mut sum = 0.0;
        let mut n = 0.0;
        for x in 0..w {
            sum += f(x, 0) + f(x, h - 1);
            n += 2.0;
        }
        for y in 0..h {
            sum += f(0, y) + f(w - 1, y);
            n += 2.0;
        }
        sum / n
    }
    match p {
        Pixels::Gray(b) => mean_of(b.width(), b.height(), |x, y| b.get_pixel(x, y).0[0]),
        Pixels::Rgb(b) => mean_of(b.width(), b.height(), |x, y| {
            let [r, g, bl] = b.get_pixel(x, y).0;
            (r + g + bl) / 3.0
        }),
    }
}

/// Inverts if the policy says so, resizes to the model's input, normalises, and lays out as CHW.
/// Returns the row and whether it was inverted.
pub fn to_row(p: Pixels, cfg: &ClassifierConfig) -> (Vec<f32>, bool) {
    let [c, h, w] = cfg.input_shape;
    let (h, w) = (h as u32, w as u32);
    let invert = cfg.invert.applies(&p);
    let mut planes = resized_planes(p, w, h);
    debug_assert_eq!(planes.len() as i64, c);
    let mut row = Vec::with_capacity((c as usize) * (h * w) as usize);
    for (ch, plane) in planes.iter_mut().enumerate() {
        let (m, s) = (cfg.mean[ch], cfg.std[ch]);
        row.extend(plane.iter().map(|v| {
            let v = v.clamp(0.0, 1.0);
            let v = if invert { 1.0 - v } else { v };
            (v - m) / s
        }));
    }
    (row, invert)
}

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Class {
    /// Class name from the model's labels file.
    #[schema(example = "7")]
    pub label: String,
    /// Index in the model's output.
    #[schema(example = 7)]
    pub index: usize,
    /// Probability in [0, 1].
    #[schema(example = 0.993)]
    pub probability: f32,
}

/// Softmax (when the model gives logits) and the `top_k` classes, most probable first.
pub fn top_k(scores: &[f32], output: ClassifierOutput, labels: &[String], k: usize) -> Vec<Class> {
    let probs: Vec<f32> = match output {
        ClassifierOutput::Probabilities => scores.to_vec(),
        ClassifierOutput::Logits => {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        }
    };
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b)));
    idx.into_iter()
        .take(k)
        .map(|i| Class {
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            index: i,
            probability: probs[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClassifierConfig {
        ClassifierConfig {
            input_shape: [1, 4, 4],
            output: ClassifierOutput::Logits,
            labels_file: "labels.txt".into(),
            pixel_scale: 255.0,
            mean: vec![0.5],
            std: vec![0.5],
            invert: InvertPolicy::Auto,
            alpha_background: 1.0,
        }
    }

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)]));
        let mut out = Vec::new();
        DynamicImage::ImageLuma8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn light_background_is_inverted_and_normalised() {
        // White paper with one black pixel: after inversion the background is 0 -> (0-0.5)/0.5 = -1.
        let bytes = png(4, 4, |x, y| if (x, y) == (1, 1) { 0 } else { 255 });
        let img = decode(&bytes, "image", 1000).unwrap();
        let (row, inverted) = to_row(from_image(&img, 1), &cfg());
        assert!(inverted);
        assert_eq!(row.len(), 16);
        assert!((row[0] + 1.0).abs() < 1e-6);
        assert!((row[5] - 1.0).abs() < 1e-6, "the ink becomes bright: {}", row[5]);
    }

    #[test]
    fn transparent_pixels_are_composited_onto_white() {
        // Black strokes on a transparent canvas, as an HTML canvas exports a drawing.
        let img = image::RgbaImage::from_fn(8, 8, |x, _| {
            if x == 3 {
                image::Rgba([0, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(img).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        let decoded = decode(&bytes, "image", 1000).unwrap();
        let Pixels::Gray(g) = from_image(&decoded, 1) else { panic!("one channel") };
        assert!((g.get_pixel(0, 0).0[0] - 1.0).abs() < 1e-6, "transparent is white");
        assert!(g.get_pixel(3, 0).0[0].abs() < 1e-6, "the stroke stays black");
        // So automatic inversion sees dark ink on paper, as for the same strokes on white.
        let mut c = cfg();
        c.input_shape = [1, 8, 8];
        let (row, inverted) = to_row(from_image(&decoded, 1), &c);
        assert!(inverted);
        assert!(row[3] > row[0], "the stroke is the bright part after inversion");
        let Pixels::Gray(b) = from_image_on(&decoded, 1, 0.0) else { panic!() };
        assert!(b.get_pixel(0, 0).0[0].abs() < 1e-6, "a configured black background");
    }

    #[test]
    fn dark_background_is_kept() {
        let bytes = png(8, 8, |_, _| 0);
        let img = decode(&bytes, "image", 1000).unwrap();
        let (row, inverted) = to_row(from_image(&img, 1), &cfg());
        assert!(!inverted);
        assert_eq!(row.len(), 16, "resized to 4x4");
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let bytes = png(100, 100, |_, _| 0);
        match decode(&bytes, "image", 9_999) {
            Err(KindError::TooLarge { width: 100, height: 100, limit: 9_999, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_undecodable() {
        assert!(matches!(decode(b"not an image", "image", 100), Err(KindError::Undecodable { .. })));
        let mut truncated = png(16, 16, |x, _| x as u8);
        truncated.truncate(40);
        assert!(matches!(decode(&truncated, "image", 1000), Err(KindError::Undecodable { .. })));
    }

    #[test]
    fn raw_pixels_are_checked() {
        let c = cfg();
        assert!(from_values(&[0.0; 16], &[4, 4], &c, "images[0]", 100).is_ok());
        let e = from_values(&[0.0; 15], &[4, 4], &c, "images[0]", 100).err().unwrap();
        assert!(matches!(e, KindError::Invalid { ref field, .. } if field == "images[0].pixels"));
        let mut v = vec![0.0; 16];
        v[3] = f64::NAN;
        let e = from_values(&v, &[4, 4], &c, "images[0]", 100).err().unwrap();
        assert!(matches!(e, KindError::Invalid { ref field, .. } if field == "images[0].pixels[3]"));
        v[3] = 300.0;
        assert!(from_values(&v, &[4, 4], &c, "images[0]", 100).is_err());
    }

    #[test]
    fn pixel_arrays_parse_straight_into_values_and_shape() {
        let parse = |text: &str, shape: Option<Vec<usize>>| {
            let px: NestedPixels = serde_json::from_str(text).unwrap();
            flatten_pixels(px, shape, "images[0]")
        };
        let msg = |r: Result<(Vec<f64>, Vec<usize>), KindError>| match r {
            Err(KindError::Invalid { field, message }) => format!("{field}: {message}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(parse("[[1, 2.5], [-3, 4e0]]", None).unwrap(), (vec![1.0, 2.5, -3.0, 4.0], vec![2, 2]));
        let (v, s) = parse("[[[1,2,3],[4,5,6]]]", None).unwrap();
        assert_eq!((v.len(), s), (6, vec![1, 2, 3]));
        assert_eq!(parse("[1, 2, 3, 4]", Some(vec![2, 2])).unwrap(), (vec![1.0, 2.0, 3.0, 4.0], vec![2, 2]));
        assert_eq!(parse("[[]]", None).unwrap(), (vec![], vec![1, 0]));
        let ragged = "images[0].pixels: nested arrays must be rectangular";
        assert_eq!(msg(parse("[[1, 2], [3]]", None)), ragged);
        assert_eq!(msg(parse("[1, [2]]", None)), ragged);
        assert_eq!(msg(parse("[[1], 2]", None)), ragged);
        assert_eq!(msg(parse("[[[1]], [2]]", None)), ragged);
        assert_eq!(msg(parse("[[[[[1]]]]]", None)), "images[0].pixels: at most 3 levels of nesting ([H][W][C])");
        for bad in ["[[1, \"2\"]]", "[[1, null]]", "[[true]]", "[[{\"a\": 1}]]", "\"abc\""] {
            assert_eq!(msg(parse(bad, None)), "images[0].pixels: must hold only numbers", "{bad}");
        }
        let flat = "images[0].pixels: give nested [H][W] or [H][W][C] arrays, or a flat array with shape";
        assert_eq!(msg(parse("[1, 2]", None)), flat);
        assert_eq!(msg(parse("7", None)), flat);
        assert_eq!(msg(parse("[[1]]", Some(vec![1, 1]))), "images[0].shape: only goes with a flat pixels array");
        // The first problem is kept and the rest skipped, whatever follows; the JSON stays valid.
        assert_eq!(msg(parse("[[1, 2], [3], [\"x\", [[[[]]]]]]", None)), ragged);
        // Deep nesting: past the fourth level the rest is skipped (serde_json skips without
        // recursing), so 10,000 levels neither overflow the stack nor pass.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let px: NestedPixels = serde_json::from_str(&deep).unwrap();
        assert_eq!(
            msg(flatten_pixels(px, None, "images[0]")),
            "images[0].pixels: at most 3 levels of nesting ([H][W][C])"
        );
        // From a value, as from bytes.
        let px = NestedPixels::from_value(&serde_json::json!([[0, 255]]));
        assert_eq!(flatten_pixels(px, None, "f").unwrap(), (vec![0.0, 255.0], vec![1, 2]));
    }

    #[test]
    fn top_k_sorts_and_softmaxes() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let top = top_k(&[1.0, 3.0, 2.0], ClassifierOutput::Logits, &labels, 2);
        assert_eq!(top.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
        let total: f32 =
            top_k(&[1.0, 3.0, 2.0], ClassifierOutput::Logits, &labels, 3).iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
