//! Reading the images of a request, the same way for every image endpoint (`/classify`,
//! `/detect`, `/denoise`, `/embed`): a raw image body, `multipart/form-data` with one or more files
//! (and text fields), or JSON with `images` of base64 files or pixel arrays. Each endpoint names
//! the extra parameters it takes; anything else is refused, naming the field.

use super::error::{parse_json, ApiError, ErrorType};
use super::App;
use crate::kinds::classifier::{self, Source};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use base64::Engine as _;
use std::collections::HashMap;

/// Media types accepted as a raw image body.
pub const IMAGE_TYPES: [&str; 5] = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];

/// The images of a request and the parameters its body set.
#[derive(Default)]
pub struct ImageRequest {
    /// The images, in request order.
    pub sources: Vec<Source>,
    /// `model` from the body.
    pub model: Option<String>,
    /// `version` from the body.
    pub version: Option<u64>,
    /// The endpoint's own parameters from the body (multipart text fields, JSON members), as text.
    pub params: HashMap<String, String>,
}

/// The media type of a request, lower-cased, without parameters ("" when none).
pub fn media_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the images of `req` and its body parameters (`allowed` beyond model and version); the
/// item count is checked against the limit as the images arrive.
pub async fn read_images(app: &App, req: Request, allowed: &[&str]) -> Result<ImageRequest, ApiError> {
    let ctype = media_type(&req);
    let mut out = ImageRequest::default();
    let accepted = || {
        let mut all = vec!["model", "version"];
        all.extend_from_slice(allowed);
        all.join(", ")
    };
    if IMAGE_TYPES.contains(&ctype.as_str()) {
        let body = bytes::Bytes::from_request(req, &()).await.map_err(ApiError::from)?;
        out.sources.push(Source::Encoded("body".into(), body));
    } else if ctype == "multipart/form-data" {
        let mut mp =
            Multipart::from_request(req, &()).await.map_err(|e| ApiError::new(ErrorType::BadRequest, e.body_text()))?;
        let mut index = 0;
        while let Some(field) = mp.next_field().await.map_err(|e| multipart_error(e.status(), e.body_text()))? {
            let name = field.name().unwrap_or("").to_string();
            let is_file = field.file_name().is_some() || field.content_type().is_some_and(|c| c.starts_with("image/"));
            let data = field.bytes().await.map_err(|e| multipart_error(e.status(), e.body_text()))?;
            if is_file {
                out.sources.push(Source::Encoded(format!("file[{index}]"), data));
                index += 1;
                check_items_soft(app, out.sources.len())?;
                continue;
            }
            let text = String::from_utf8_lossy(&data).trim().to_string();
            match name.as_str() {
                "model" => out.model = Some(text),
                "version" => out.version = Some(parse_version(&text)?),
                p if allowed.contains(&p) => {
                    out.params.insert(name, text);
                }
                other => {
                    return Err(ApiError::invalid(
                        other,
                        format!("unknown form field; send image files plus optional {}", accepted()),
                    ))
                }
            }
        }
    } else if ctype == "application/json" {
        let body = bytes::Bytes::from_request(req, &()).await.map_err(ApiError::from)?;
        return json_images(app, &body, allowed);
    } else if ctype.is_empty() {
        return Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            format!(
                "missing Content-Type; send one of {}, multipart/form-data or application/json",
                IMAGE_TYPES.join(", ")
            ),
        ));
    } else {
        return Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            format!(
                "Content-Type {ctype} is not accepted; send one of {}, multipart/form-data or application/json",
                IMAGE_TYPES.join(", ")
            ),
        ));
    }
    app.check_items("images", out.sources.len())?;
    Ok(out)
}

/// The images and parameters of a JSON body: `images` plus `model`, `version` and `allowed`.
pub fn json_images(app: &App, body: &[u8], allowed: &[&str]) -> Result<ImageRequest, ApiError> {
    let mut out = ImageRequest::default();
    let accepted = || {
        let mut all = vec!["model", "version"];
        all.extend_from_slice(allowed);
        all.join(", ")
    };
    let json: JsonBody = parse_json(body)?;
    for (key, value) in json.fields {
        match key.as_str() {
            "model" => out.model = value_text(&key, &value)?,
            "version" => out.version = value_text(&key, &value)?.map(|t| parse_version(&t)).transpose()?,
            p if allowed.contains(&p) => {
                if let Some(t) = value_text(&key, &value)? {
                    out.params.insert(key, t);
                }
            }
            _ => return Err(ApiError::invalid(key, format!("unknown field; accepted: images, {}", accepted()))),
        }
    }
    let Some(Images::List(images)) = json.images else {
        return Err(ApiError::invalid("images", "is required: an array of {base64} or {pixels} objects"));
    };
    app.check_items("images", images.len())?;
    for (i, img) in images.into_iter().enumerate() {
        out.sources.push(json_image(img, i)?);
    }
    Ok(out)
}

/// A JSON image body as parsed: `images` typed (pixel arrays straight into numbers), every other
/// field as a value. Later duplicates win, as in a JSON object.
struct JsonBody {
    fields: serde_json::Map<String, serde_json::Value>,
    images: Option<Images>,
}

/// The `images` field: an array of entries, or anything else (refused with the usual message).
enum Images {
    List(Vec<ImageEntry>),
    NotAnArray,
}

/// One entry of `images`: an object (its `pixels` parsed, the other fields as values), or not.
enum ImageEntry {
    Object { pixels: Option<classifier::NestedPixels>, rest: serde_json::Map<String, serde_json::Value> },
    NotAnObject(serde_json::Value),
}

impl<'de> serde::Deserialize<'de> for JsonBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonBody;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonBody, A::Error> {
                let mut body = JsonBody { fields: serde_json::Map::new(), images: None };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "images" {
                        body.images = Some(map.next_value()?);
                    } else {
                        body.fields.insert(key, map.next_value()?);
                    }
                }
                Ok(body)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for Images {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Images;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of images")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Images, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(e) = seq.next_element()? {
                    list.push(e);
                }
                Ok(Images::List(list))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Images, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Images::NotAnArray)
            }
            fn visit_str<E>(self, _: &str) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
            fn visit_unit<E>(self) -> Result<Images, E> {
                Ok(Images::NotAnArray)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for ImageEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ImageEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an image object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ImageEntry, A::Error> {
                let (mut pixels, mut rest) = (None, serde_json::Map::new());
                while let Some(key) = map.next_key::<String>()? {
                    if key == "pixels" {
                        pixels = map.next_value::<Option<classifier::NestedPixels>>()?;
                        // kept as a placeholder so that unknown-field errors list it as before
                        rest.insert(key, serde_json::Value::Null);
                    } else {
                        rest.insert(key, map.next_value()?);
                    }
                }
                Ok(ImageEntry::Object { pixels, rest })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ImageEntry, A::Error> {
                use serde::Deserialize;
                let v = serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(ImageEntry::NotAnObject(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(v.into()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(v.into()))
            }
            fn visit_unit<E>(self) -> Result<ImageEntry, E> {
                Ok(ImageEntry::NotAnObject(serde_json::Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of a JSON `images` array.
fn json_image(entry: ImageEntry, i: usize) -> Result<Source, ApiError> {
    let field = format!("images[{i}]");
    let (v, pixels) = match entry {
        ImageEntry::Object { pixels, rest } => (serde_json::Value::Object(rest), pixels),
        ImageEntry::NotAnObject(v) => (v, None),
    };
    let img: super::classify::ImageInput = serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(&field, format!("must be an object with base64, or pixels (and shape): {e}")))?;
    match (img.base64, pixels) {
        (Some(b64), None) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| ApiError::invalid(format!("{field}.base64"), format!("is not valid base64: {e}")))?;
            Ok(Source::Encoded(field, bytes.into()))
        }
        (None, Some(px)) => {
            let (values, shape) = classifier::flatten_pixels(px, img.shape, &field)?;
            Ok(Source::Values(field, values, shape))
        }
        _ => Err(ApiError::invalid(field, "give exactly one of base64 or pixels")),
    }
}

/// A JSON parameter as text (numbers, strings, booleans); `null` is absent.
fn value_text(key: &str, v: &serde_json::Value) -> Result<Option<String>, ApiError> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(ApiError::invalid(key, "must be a number or a string")),
    }
}

fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::invalid("version", "must be a non-negative integer"))
}

/// A body parameter parsed as `T`, else the query's value; the error names the field.
pub fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    query: Option<T>,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name) {
        Some(t) => t.parse().map(Some).map_err(|_| ApiError::invalid(name, format!("must be {what}"))),
        None => Ok(query),
    }
}

/// Refuses a multipart request as soon as it has more files than allowed, before reading the rest.
fn check_items_soft(app: &App, n: usize) -> Result<(), ApiError> {
    if n > app.limits.max_items {
        return Err(ApiError::invalid(
            "images",
            format!("more than {} images; at most {} per request", app.limits.max_items, app.limits.max_items),
        ));
    }
    Ok(())
}

fn multipart_error(status: axum::http::StatusCode, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorType::PayloadTooLarge, "request body exceeds the body limit (--body-limit-bytes)")
    } else {
        ApiError::new(ErrorType::BadRequest, format!("malformed multipart body: {text}"))
    }
}

/// Bytes of memory budgeted per decoded pixel: the decoded buffer (up to RGBA as 32-bit floats
/// when the image has alpha, 16 bytes) plus the float planes it is converted and resized into.
pub const DECODE_BYTES_PER_PIXEL: u64 = 24;

/// A bound on the memory that image decoding holds at once, across all requests. Each request
/// reserves the decoded size of its images (from their headers) before decoding and gives it back
/// when done; a request that finds the budget in use waits up to `wait`, then gets 429 with
/// `Retry-After`, and one that could never fit gets 413.
pub struct DecodeBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    total_kib: u32,
    wait: std::time::Duration,
}

/// A reservation of decode memory, returned when dropped.
pub struct DecodeReservation {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl DecodeBudget {
    /// A budget of `bytes` (at least 1 MiB); requests wait up to `wait` for room.
    pub fn new(bytes: u64, wait: std::time::Duration) -> DecodeBudget {
        let total_kib = (bytes / 1024).clamp(1024, u32::MAX as u64 / 2) as u32;
        DecodeBudget { permits: std::sync::Arc::new(tokio::sync::Semaphore::new(total_kib as usize)), total_kib, wait }
    }

    /// The default budget: an eighth of physical memory, between 256 MiB and 4 GiB.
    pub fn default_bytes() -> u64 {
        // SAFETY: sysconf only reads system configuration values.
        let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        let physical = if pages > 0 && page > 0 { pages as u64 * page as u64 } else { 8 << 30 };
        (physical / 8).clamp(256 << 20, 4 << 30)
    }

    /// The budget in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_kib as u64 * 1024
    }

    /// Bytes in use now.
    pub fn in_use_bytes(&self) -> u64 {
        (self.total_kib as u64 - self.permits.available_permits() as u64) * 1024
    }

    /// Reserves room for decoding `sources`: encoded images by the size their header declares
    /// (an undecodable header costs nothing here; decoding reports it), pixel arrays by their values.
    pub async fn reserve(&self, sources: &[Source]) -> Result<DecodeReservation, ApiError> {
        let mut bytes: u64 = 0;
        let mut largest = ("", 0u64);
        for s in sources {
            let (field, b) = match s {
                Source::Encoded(field, data) => {
                    let px = image::ImageReader::new(std::io::Cursor::new(&data[..]))
                        .with_guessed_format()
                        .ok()
                        .and_then(|r| r.into_dimensions().ok())
                        .map(|(w, h)| w as u64 * h as u64)
                        .unwrap_or(0);
                    (field.as_str(), px.saturating_mul(DECODE_BYTES_PER_PIXEL))
                }
                Source::Values(field, values, _) => (field.as_str(), values.len() as u64 * 8),
            };
            if b > largest.1 {
                largest = (field, b);
            }
            bytes = bytes.saturating_add(b);
        }
        let kib = bytes.div_ceil(1024);
        if kib == 0 {
            return Ok(DecodeReservation { _permit: None });
        }
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        if kib > self.total_kib as u64 {
            return Err(ApiError {
                field: Some(largest.0.to_string()),
                ..ApiError::new(
                    ErrorType::PayloadTooLarge,
                    format!(
                        "decoding the images of this request takes about {:.0} MiB ({DECODE_BYTES_PER_PIXEL} bytes per pixel), \
                         more than the server's decode budget of {:.0} MiB (--decode-budget-mb); send fewer or smaller images",
                        mib(bytes),
                        mib(self.total_bytes())
                    ),
                )
            });
        }
        let acquire = self.permits.clone().acquire_many_owned(kib as u32);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(DecodeReservation { _permit: Some(permit) }),
            _ => Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorType::Overloaded,
                    format!(
                        "the server's decode budget of {:.0} MiB is in use by other requests' images and this request needs \
                         {:.0} MiB; retry after 1 s",
                        mib(self.total_bytes()),
                        mib(bytes)
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn png(w: u32, h: u32) -> Source {
        let img = image::DynamicImage::ImageLuma8(image::ImageBuffer::new(w, h));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        Source::Encoded("image".into(), out.into())
    }

    #[tokio::test]
    async fn a_full_budget_answers_429_after_its_wait_and_frees_on_drop() {
        let b = DecodeBudget::new(64 << 20, Duration::from_millis(50));
        let first = b.reserve(&[png(1024, 1024), png(1024, 1024)]).await.unwrap();
        assert_eq!(b.in_use_bytes(), 48 << 20, "24 bytes per pixel, from the headers");
        let e = b.reserve(&[png(1024, 1024)]).await.err().unwrap();
        assert_eq!((e.ty, e.retry_after), (ErrorType::Overloaded, Some(1)));
        assert!(e.message.contains("decode budget of 64 MiB"), "{}", e.message);
        drop(first);
        assert_eq!(b.in_use_bytes(), 0);
        let _again = b.reserve(&[png(1024, 1024)]).await.unwrap();
        let e = b.reserve(&[png(2048, 2048)]).await.err().unwrap();
        assert_eq!((e.ty, e.field.as_deref()), (ErrorType::PayloadTooLarge, Some("image")));
        // Nothing to decode costs nothing; an undecodable header is left to the decoder to report.
        let junk = Source::Encoded("image".into(), bytes::Bytes::from_static(b"not an image"));
        let _free = b.reserve(&[junk]).await.unwrap();
        assert_eq!(b.in_use_bytes(), 24 << 20);
    }
}
