//! Object detectors (`POST /detect`): images to a `[C, H, W]` canvas (letterboxed or stretched),
//! and the model's fixed-size candidates back to scored, thresholded, class-wise-suppressed boxes
//! in the pixel coordinates of the image as uploaded.
//!
//! Contract: `[B, C, H, W]` float32 images to `[B, N, 5 + K]` candidates, each
//! `x_min, y_min, x_max, y_max` (canvas pixels, max exclusive), `objectness` in [0, 1], and K class
//! probabilities (K = the labels file's lines). A candidate's score is objectness times its best
//! class probability; its label is that class.

use super::classifier::{resized_planes, InvertPolicy, Pixels};
use super::{field_error, plain_file_name, positive, spec, FieldError, Kind, TensorSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most detections a request may ask for per image.
pub const MAX_DETECTIONS: usize = 1000;

/// The detector kind.
pub struct Detector;

impl Kind for Detector {
    const NAME: &'static str = "detector";
    const ENDPOINT: &'static str = "POST /detect";
    type Config = DetectorConfig;

    fn validate(c: &DetectorConfig) -> Result<(), FieldError> {
        let [ch, h, w] = c.input_shape;
        if ch != 1 && ch != 3 {
            return Err(field_error("input_shape", "channels must be 1 or 3"));
        }
        if !(8..=4096).contains(&h) || !(8..=4096).contains(&w) {
            return Err(field_error("input_shape", "height and width must be between 8 and 4096"));
        }
        if c.mean.len() != ch as usize || c.mean.iter().any(|m| !m.is_finite()) {
            return Err(field_error("mean", format!("needs {ch} finite values, one per channel")));
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
        check_params(c.score_threshold, c.iou_threshold, c.max_detections)
            .map_err(|(field, message)| field_error(field, message))
    }

    fn labels_file(c: &DetectorConfig) -> Option<&str> {
        Some(&c.labels_file)
    }

    fn inputs(c: &DetectorConfig) -> Vec<TensorSpec> {
        let [ch, h, w] = c.input_shape;
        vec![spec("images", "FP32", vec![-1, ch, h, w])]
    }

    fn outputs(_c: &DetectorConfig, labels: &[String]) -> Vec<TensorSpec> {
        vec![spec("candidates", "FP32", vec![-1, -1, 5 + labels.len() as i64])]
    }
}

/// How a detector's images become its canvas, and its default post-processing (`[detector]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Canvas per item, `[C, H, W]`; C is 1 (grayscale) or 3 (RGB).
    pub input_shape: [i64; 3],
    /// File next to config.toml with one class name per line, in the model's class order.
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
    /// The value transparent pixels take, from 0 (black) to 1 (white).
    #[serde(default = "default_alpha_background")]
    pub alpha_background: f32,
    /// `letterbox` (keep the aspect ratio, pad with black, centred) or `stretch` (resize each axis).
    #[serde(default)]
    pub resize: ResizeMode,
    /// Default score threshold, in [0, 1].
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// Default IoU above which a lower-scored box of the same class is suppressed, in [0, 1].
    #[serde(default = "default_iou_threshold")]
    pub iou_threshold: f32,
    /// Default number of detections kept per image, 1 to 1000.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
}

/// How an image is fitted to the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale by the same factor on both axes, centre, pad with black (the model's background).
    #[default]
    Letterbox,
    /// Scale each axis to the canvas.
    Stretch,
}

fn default_labels_file() -> String {
    "labels.txt".into()
}
fn default_pixel_scale() -> f32 {
    255.0
}
fn default_alpha_background() -> f32 {
    1.0
}
fn default_score_threshold() -> f32 {
    0.5
}
fn default_iou_threshold() -> f32 {
    0.5
}
fn default_max_detections() -> usize {
    100
}

/// Checks post-processing parameters; the error names the field and its limit.
pub fn check_params(score: f32, iou: f32, max: usize) -> Result<(), (&'static str, String)> {
    if !(0.0..=1.0).contains(&score) {
        return Err(("score_threshold", "must be a number between 0 and 1".into()));
    }
    if !(0.0..=1.0).contains(&iou) {
        return Err(("iou_threshold", "must be a number between 0 and 1".into()));
    }
    if !(1..=MAX_DETECTIONS).contains(&max) {
        return Err(("max_detections", format!("must be an integer between 1 and {MAX_DETECTIONS}")));
    }
    Ok(())
}

/// Where an uploaded image sits on the canvas: canvas = image x scale + pad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Horizontal scale.
    pub scale_x: f32,
    /// Vertical scale.
    pub scale_y: f32,
    /// Left padding in canvas pixels.
    pub pad_x: f32,
    /// Top padding in canvas pixels.
    pub pad_y: f32,
    /// Width of the image as uploaded.
    pub width: u32,
    /// Height of the image as uploaded.
    pub height: u32,
}

impl Placement {
    /// Fits a `w` x `h` image to a `cw` x `ch` canvas; returns the placement and the resized size.
    pub fn fit(w: u32, h: u32, cw: u32, ch: u32, mode: ResizeMode) -> (Placement, u32, u32) {
        match mode {
            ResizeMode::Stretch => {
                let p = Placement {
                    scale_x: cw as f32 / w as f32,
                    scale_y: ch as f32 / h as f32,
                    pad_x: 0.0,
                    pad_y: 0.0,
                    width: w,
                    height: h,
                };
                (p, cw, ch)
            }
            ResizeMode::Letterbox => {
                let s = (cw as f32 / w as f32).min(ch as f32 / h as f32);
                let nw = ((w as f32 * s).round() as u32).clamp(1, cw);
                let nh = ((h as f32 * s).round() as u32).clamp(1, ch);
                let p = Placement {
                    scale_x: s,
                    scale_y: s,
                    pad_x: ((cw - nw) / 2) as f32,
                    pad_y: ((ch - nh) / 2) as f32,
                    width: w,
                    height: h,
                };
                (p, nw, nh)
            }
        }
    }

    /// A canvas box mapped back onto the uploaded image, clamped to it.
    pub fn to_image(&self, b: [f32; 4]) -> BoundingBox {
        let (w, h) = (self.width as f32, self.height as f32);
        let x = |v: f32| ((v - self.pad_x) / self.scale_x).clamp(0.0, w);
        let y = |v: f32| ((v - self.pad_y) / self.scale_y).clamp(0.0, h);
        BoundingBox { x_min: x(b[0]), y_min: y(b[1]), x_max: x(b[2]), y_max: y(b[3]) }
    }
}

/// One image fitted to the model's canvas: the normalised CHW row, where it sits, and whether it
/// was inverted.
pub fn prepare(p: Pixels, cfg: &DetectorConfig) -> (Vec<f32>, Placement, bool) {
    let [c, ch, cw] = cfg.input_shape;
    let (ch, cw) = (ch as u32, cw as u32);
    let invert = cfg.invert.applies(&p);
    let (w, h) = match &p {
        Pixels::Gray(b) => b.dimensions(),
        Pixels::Rgb(b) => b.dimensions(),
    };
    let (place, nw, nh) = Placement::fit(w, h, cw, ch, cfg.resize);
    // The resized image as planes of nw x nh, inverted below when the policy says so.
    let planes = resized_planes(p, nw, nh);
    debug_assert_eq!(planes.len() as i64, c);
    let (px, py) = (place.pad_x as usize, place.pad_y as usize);
    let (cw, ch, nw, nh) = (cw as usize, ch as usize, nw as usize, nh as usize);
    let mut row = Vec::with_capacity(c as usize * cw * ch);
    for (k, plane) in planes.iter().enumerate() {
        let (m, s) = (cfg.mean[k], cfg.std[k]);
        // Padding is black in the model's space (0 before normalisation), after any inversion.
        let mut canvas = vec![(0.0 - m) / s; cw * ch];
        for y in 0..nh {
            for x in 0..nw {
                let v = plane[y * nw + x].clamp(0.0, 1.0);
                let v = if invert { 1.0 - v } else { v };
                canvas[(y + py) * cw + x + px] = (v - m) / s;
            }
        }
        row.extend(canvas);
    }
    (row, place, invert)
}

/// A box in the uploaded image's pixel coordinates (edges; max exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct BoundingBox {
    /// Left edge.
    pub x_min: f32,
    /// Top edge.
    pub y_min: f32,
    /// Right edge.
    pub x_max: f32,
    /// Bottom edge.
    pub y_max: f32,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Detection {
    /// Class name from the labels file.
    #[schema(example = "7")]
    pub label: String,
    /// Class index.
    pub index: usize,
    /// Objectness times the class probability, in [0, 1].
    pub score: f32,
    /// Where it is, in the uploaded image's pixels.
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
}

/// Post-processing parameters of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Candidates scoring below are dropped.
    pub score_threshold: f32,
    /// A box overlapping a better one of its class by more than this is suppressed.
    pub iou_threshold: f32,
    /// Detections kept per image, best first.
    pub max_detections: usize,
}

/// Intersection over union of two `[x_min, y_min, x_max, y_max]` boxes (0 when both are empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Scores one image's candidates (`[N, 5 + K]` flattened), thresholds, runs class-wise greedy
/// non-maximum suppression, keeps the best `max_detections` and maps the boxes to the image.
/// Ties keep the lower candidate index, so the result is deterministic.
pub fn postprocess(out: &[f32], k: usize, p: &Params, place: &Placement, labels: &[String]) -> Vec<Detection> {
    let stride = 5 + k;
    let mut cands: Vec<(usize, [f32; 4], f32, usize)> = out
        .chunks_exact(stride)
        .enumerate()
        .filter_map(|(i, c)| {
            let (best, prob) =
                c[5..]
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |acc, (j, v)| if *v > acc.1 { (j, *v) } else { acc });
            let score = c[4] * prob;
            (score >= p.score_threshold).then_some((i, [c[0], c[1], c[2], c[3]], score, best))
        })
        .collect();
    cands.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut kept: Vec<(usize, [f32; 4], f32, usize)> = Vec::new();
    for c in cands {
        if kept.len() >= p.max_detections {
            break;
        }
        // Sorted by score, so a kept box of the class always outranks this one.
        if kept.iter().any(|q| q.3 == c.3 && iou(&q.1, &c.1) > p.iou_threshold) {
            continue;
        }
        kept.push(c);
    }
    kept.into_iter()
        .map(|(_, b, score, class)| Detection {
            label: labels.get(class).cloned().unwrap_or_else(|| class.to_string()),
            index: class,
            score,
            bbox: place.to_image(b),
        })
        .collect()
}

/// 3x5 glyphs (rows top to bottom, 3 bits each, left bit first) for labels drawn on images.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'a' => [2, 5, 7, 5, 5],
        'b' => [6, 5, 6, 5, 6],
        'c' => [3, 4, 4, 4, 3],
        'd' => [6, 5, 5, 5, 6],
        'e' => [7, 4, 6, 4, 7],
        'f' => [7, 4, 6, 4, 4],
        'g' => [3, 4, 5, 5, 3],
        'h' => [5, 5, 7, 5, 5],
        'i' => [7, 2, 2, 2, 7],
        'j' => [1, 1, 1, 5, 2],
        'k' => [5, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 7],
        'm' => [5, 7, 7, 5, 5],
        'n' => [6, 5, 5, 5, 5],
        'o' => [2, 5, 5, 5, 2],
        'p' => [6, 5, 6, 4, 4],
        'q' => [2, 5, 5, 3, 1],
        'r' => [6, 5, 6, 5, 5],
        's' => [3, 4, 2, 1, 6],
        't' => [7, 2, 2, 2, 2],
        'u' => [5, 5, 5, 5, 7],
        'v' => [5, 5, 5, 5, 2],
        'w' => [5, 5, 7, 7, 5],
        'x' => [5, 5, 2, 5, 5],
        'y' => [5, 5, 2, 2, 2],
        'z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        ':' => [0, 2, 0, 2, 0],
        ' ' => [0, 0, 0, 0, 0],
        _ => [7, 1, 2, 0, 2],
    }
}

/// A colour per class, distinct for neighbouring indices.
pub fn class_colour(index: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ];
    PALETTE[index % PALETTE.len()]
}

/// Draws each detection's box (2 px, its class colour) and a `label score` tag above it onto an
/// RGB8 image of `w` x `h`, in place.
pub fn draw(rgb: &mut [u8], w: u32, h: u32, dets: &[Detection]) {
    let (w, h) = (w as i64, h as i64);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    let scale = (w.min(h) / 160).max(1);
    for d in dets {
        let c = class_colour(d.index);
        let (x0, y0) = (d.bbox.x_min.floor() as i64, d.bbox.y_min.floor() as i64);
        let (x1, y1) = ((d.bbox.x_max.ceil() as i64 - 1).max(x0), (d.bbox.y_max.ceil() as i64 - 1).max(y0));
        for t in 0..2 {
            for x in x0..=x1 {
                put(x, y0 + t, c);
                put(x, y1 - t, c);
            }
            for y in y0..=y1 {
                put(x0 + t, y, c);
                put(x1 - t, y, c);
            }
        }
        // The tag sits above the box, or inside it at the top edge of the image.
        let text = format!("{} {:.2}", d.label, d.score);
        let th = 7 * scale;
        let ty = if y0 >= th { y0 - th } else { y0 + 2 };
        let tw = text.chars().count() as i64 * 4 * scale + scale;
        for y in ty..ty + th {
            for x in x0..x0 + tw {
                put(x, y, c);
            }
        }
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                let x = x0 + scale + (k as i64 * 4 + col) * scale + dx;
                                put(x, ty + scale + row as i64 * scale + dy, [255, 255, 255]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma};

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn cand(b: [f32; 4], obj: f32, pa: f32) -> Vec<f32> {
        vec![b[0], b[1], b[2], b[3], obj, pa, 1.0 - pa]
    }

    fn ident(w: u32, h: u32) -> Placement {
        Placement { scale_x: 1.0, scale_y: 1.0, pad_x: 0.0, pad_y: 0.0, width: w, height: h }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0, "empty boxes");
    }

    #[test]
    fn nms_is_class_wise_thresholded_and_capped() {
        let out: Vec<f32> = [
            cand([0.0, 0.0, 10.0, 10.0], 0.9, 1.0),   // a, 0.9
            cand([1.0, 0.0, 11.0, 10.0], 0.8, 1.0),   // a, overlaps the first (IoU 0.82): suppressed
            cand([1.0, 0.0, 11.0, 10.0], 0.7, 0.0),   // b, same place: kept (other class)
            cand([50.0, 50.0, 60.0, 60.0], 0.6, 1.0), // a, far away: kept
            cand([70.0, 70.0, 80.0, 80.0], 0.2, 1.0), // below the threshold
        ]
        .concat();
        let p = Params { score_threshold: 0.3, iou_threshold: 0.5, max_detections: 10 };
        let d = postprocess(&out, 2, &p, &ident(100, 100), &labels());
        let got: Vec<(&str, f32)> = d.iter().map(|d| (d.label.as_str(), d.score)).collect();
        assert_eq!(got, vec![("a", 0.9), ("b", 0.7), ("a", 0.6)]);
        let p1 = Params { max_detections: 1, ..p };
        assert_eq!(postprocess(&out, 2, &p1, &ident(100, 100), &labels()).len(), 1);
        // A looser IoU threshold keeps the overlapping box.
        let loose = Params { iou_threshold: 0.9, ..p };
        assert_eq!(postprocess(&out, 2, &loose, &ident(100, 100), &labels()).len(), 4);
        // Equal scores: the lower index wins, whatever the order.
        let tie = [cand([0.0, 0.0, 10.0, 10.0], 0.5, 1.0), cand([0.5, 0.0, 10.5, 10.0], 0.5, 1.0)].concat();
        let d = postprocess(&tie, 2, &p, &ident(100, 100), &labels());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].bbox.x_min, 0.0);
    }

    #[test]
    fn letterbox_boxes_map_back_to_the_upload() {
        // 192 x 128 onto 96 x 96: scale 0.5, 96 x 64, 16 rows of padding above.
        let (p, nw, nh) = Placement::fit(192, 128, 96, 96, ResizeMode::Letterbox);
        assert_eq!((nw, nh, p.pad_x, p.pad_y, p.scale_x), (96, 64, 0.0, 16.0, 0.5));
        let b = p.to_image([10.0, 26.0, 20.0, 36.0]);
        assert_eq!(b, BoundingBox { x_min: 20.0, y_min: 20.0, x_max: 40.0, y_max: 40.0 });
        // Boxes in the padding are clamped to the image.
        let b = p.to_image([-5.0, 0.0, 100.0, 96.0]);
        assert_eq!(b, BoundingBox { x_min: 0.0, y_min: 0.0, x_max: 192.0, y_max: 128.0 });
        let (s, _, _) = Placement::fit(48, 24, 96, 96, ResizeMode::Stretch);
        assert_eq!(
            s.to_image([48.0, 48.0, 96.0, 96.0]),
            BoundingBox { x_min: 24.0, y_min: 12.0, x_max: 48.0, y_max: 24.0 }
        );
        // A one-pixel-high strip still gets a row of the canvas.
        let (_, nw, nh) = Placement::fit(4096, 1, 96, 96, ResizeMode::Letterbox);
        assert_eq!((nw, nh), (96, 1));
    }

    #[test]
    fn prepare_inverts_paper_and_pads_with_black() {
        let cfg = DetectorConfig {
            input_shape: [1, 4, 4],
            labels_file: "labels.txt".into(),
            pixel_scale: 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            invert: InvertPolicy::Auto,
            alpha_background: 1.0,
            resize: ResizeMode::Letterbox,
            score_threshold: 0.5,
            iou_threshold: 0.5,
            max_detections: 100,
        };
        // 4 x 2 white paper with one black pixel: rows 1-2 of the canvas, inverted.
        let img = ImageBuffer::from_fn(4, 2, |x, y| Luma([if (x, y) == (1, 0) { 0.0 } else { 1.0 }]));
        let (row, place, inverted) = prepare(Pixels::Gray(img), &cfg);
        assert!(inverted);
        assert_eq!(place.pad_y, 1.0);
        assert_eq!(&row[0..4], &[0.0; 4], "padding is black");
        assert_eq!(&row[4..8], &[0.0, 1.0, 0.0, 0.0], "the ink is bright");
        assert_eq!(&row[12..16], &[0.0; 4]);
    }

    #[test]
    fn boxes_are_drawn_in_their_class_colour() {
        let mut rgb = vec![0u8; 40 * 40 * 3];
        let d = Detection {
            label: "7".into(),
            index: 1,
            score: 0.9,
            bbox: BoundingBox { x_min: 10.0, y_min: 20.0, x_max: 30.0, y_max: 35.0 },
        };
        draw(&mut rgb, 40, 40, &[d]);
        let at = |x: usize, y: usize| &rgb[(y * 40 + x) * 3..(y * 40 + x) * 3 + 3];
        assert_eq!(at(20, 20), class_colour(1), "top edge");
        assert_eq!(at(29, 30), class_colour(1), "right edge (max exclusive)");
        assert_eq!(at(20, 28), [0, 0, 0], "inside stays");
        assert!((13..20).any(|y| (10..30).any(|x| at(x, y) == [255, 255, 255])), "a tag above the box");
        // Boxes partly outside the image are clipped, not a panic.
        let far = Detection {
            label: "x".into(),
            index: 0,
            score: 1.0,
            bbox: BoundingBox { x_min: 35.0, y_min: 0.0, x_max: 80.0, y_max: 80.0 },
        };
        draw(&mut rgb, 40, 40, &[far]);
    }

    #[test]
    fn parameters_name_their_limit() {
        assert_eq!(check_params(1.5, 0.5, 10).unwrap_err().0, "score_threshold");
        assert_eq!(check_params(0.5, -0.1, 10).unwrap_err().0, "iou_threshold");
        let (f, m) = check_params(0.5, 0.5, 1_000_000_000).unwrap_err();
        assert_eq!(f, "max_detections");
        assert!(m.contains("1000"), "{m}");
        assert!(check_params(f32::NAN, 0.5, 10).is_err());
    }
}
