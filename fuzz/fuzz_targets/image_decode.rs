//! Image decoding and preprocessing: any bytes a client can send as an image file (raw body,
//! multipart part or base64 in JSON) go through `decode`, then `from_image` and `to_row`.
//! Bar: no panic, no hang, no unbounded allocation; errors are values.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = dlserve::kinds::classifier::decode(data, "f", common::MAX_PIXELS) {
        let (w, h) = (img.width() as u64, img.height() as u64);
        assert!(w >= 1 && h >= 1 && w * h <= common::MAX_PIXELS, "decode let through {w}x{h}");
        common::classify_image(&img);
    }
});
