//! Raw pixel arrays (`{"pixels": ..., "shape": ...}` in /classify): `from_values` with any shape
//! and any values (NaN, infinities, negatives, out of range), then `to_row`.
//! Input layout: byte 0 = number of dimensions (0..=4), then one little-endian u16 per dimension,
//! byte = value encoding (0: one byte per value scaled to 0..=255, else raw little-endian f64),
//! then the values. Bar: no panic.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ndim, mut rest)) = data.split_first() else { return };
    let ndim = (ndim % 5) as usize;
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        if rest.len() < 2 {
            return;
        }
        shape.push(u16::from_le_bytes([rest[0], rest[1]]) as usize);
        rest = &rest[2..];
    }
    let Some((&enc, rest)) = rest.split_first() else { return };
    let values: Vec<f64> = if enc % 2 == 0 {
        rest.iter().map(|b| *b as f64).collect()
    } else {
        rest.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    for cfg in [common::gray_classifier(), common::rgb_classifier()] {
        if let Ok(px) = dlserve::kinds::classifier::from_values(&values, &shape, &cfg, "images[0]", common::MAX_PIXELS)
        {
            let (row, _) = dlserve::kinds::classifier::to_row(px, &cfg);
            let [c, h, w] = cfg.input_shape;
            assert_eq!(row.len() as i64, c * h * w);
            assert!(row.iter().all(|v| v.is_finite()), "accepted pixels gave a non-finite row");
        }
    }
});
