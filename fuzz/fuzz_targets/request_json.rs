//! Request JSON of every inference endpoint: byte 0 picks the endpoint, the rest is the body.
//! Each body goes through `dlserve::api::error::parse_json::<T>` (the parser the handlers use),
//! then through the same pure per-kind checks the handler runs with a fixed model config:
//!
//! * 0 `/classify`  `ClassifyRequest`: base64 → `decode` → `from_image` → `to_row`; pixels →
//!   `from_values` → `to_row`.
//! * 1 `/forecast`  `ForecastRequest`: `check_horizon`, series rows, `parse_frequency`,
//!   `timestamps`, `prepare`, `split_output`/`roll`/`unscale` on a fake model output.
//! * 2 `/anomaly`   `AnomalyRequest`: `named_row` / number rows → `prepare` → `score` against a
//!   fake reconstruction.
//! * 3 `/v2/.../infer` `InferRequest`: inputs named like the shipped models' feed the same checks.
//!
//! The handlers' series and pixel flattening (`kinds::forecaster::series_rows`,
//! `kinds::classifier::flatten_pixels`) are called directly, as is everything in `dlserve::kinds` and
//! the JSON parser. Bar: no panic.
#![no_main]

#[path = "common.rs"]
mod common;

use base64::Engine;
use dlserve::api::error::parse_json;
use dlserve::kinds::{anomaly, classifier, forecaster};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 4 {
        0 => classify(body),
        1 => forecast(body),
        2 => anomaly_req(body),
        _ => v2(body),
    }
});

fn classify(body: &[u8]) {
    // The streaming pixel parser on the raw bytes too (the handler parses `pixels` with it).
    if let Ok(px) = serde_json::from_slice::<classifier::NestedPixels>(body) {
        let _ = classifier::flatten_pixels(px, None, "images[0]");
    }
    let Ok(req) = parse_json::<dlserve::api::classify::ClassifyRequest>(body) else { return };
    for (i, img) in req.images.iter().enumerate() {
        let field = format!("images[{i}]");
        if let Some(b64) = &img.base64 {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                if let Ok(decoded) = classifier::decode(&bytes, &field, common::MAX_PIXELS) {
                    common::classify_image(&decoded);
                }
            }
        }
        if let Some(px) = &img.pixels {
            let Ok((values, shape)) = classifier::flatten_pixels(classifier::NestedPixels::from_value(px), img.shape.clone(), &field) else {
                continue;
            };
            for cfg in [common::gray_classifier(), common::rgb_classifier()] {
                if let Ok(p) = classifier::from_values(&values, &shape, &cfg, &field, common::MAX_PIXELS) {
                    let (row, _) = classifier::to_row(p, &cfg);
                    assert!(row.iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}

fn forecast(body: &[u8]) {
    let Ok(req) = parse_json::<dlserve::api::forecast::ForecastRequest>(body) else { return };
    for cfg in [common::forecaster(), common::forecaster_multi()] {
        if forecaster::check_horizon(req.horizon, &cfg).is_err() {
            continue;
        }
        let Ok((rows, _)) = dlserve::kinds::forecaster::series_rows(&req.series, cfg.features as usize) else { continue };
        if let (Some(start), Some(freq)) = (&req.start, &req.frequency) {
            if let Ok(step) = forecaster::parse_frequency(freq) {
                if let Ok(ts) = forecaster::timestamps(start, step, rows.len(), req.horizon) {
                    assert_eq!(ts.len(), req.horizon);
                }
            }
        }
        let Ok(prepared) = forecaster::prepare(&rows, &cfg) else { continue };
        let f = cfg.features as usize;
        assert_eq!(prepared.window.len(), prepared.context_used * f);
        assert!(prepared.context_used >= cfg.min_context && prepared.context_used <= cfg.max_context);
        // A fake model output of the right size: the last window step repeated.
        let q = cfg.quantiles.len().max(1);
        let h = if cfg.one_step { 1 } else { cfg.model_horizon };
        let last = prepared.window[prepared.window.len() - 1];
        let out = vec![last; h * f * q];
        let chunk = forecaster::split_output(&out, &cfg);
        let mut window = prepared.window.clone();
        forecaster::roll(&mut window, &chunk.point, &cfg);
        assert!(window.len() <= cfg.max_context * f);
        for step in &chunk.point {
            for (i, x) in step.iter().enumerate() {
                let _ = forecaster::unscale(*x, i, &cfg);
            }
        }
    }
}

fn score_rows(rows: &[Value], top: Option<usize>) {
    for cfg in [common::anomaly(), common::anomaly_plain()] {
        let d = cfg.features as usize;
        let top = top.unwrap_or(3.min(d));
        if top > d {
            continue;
        }
        for (i, row) in rows.iter().enumerate() {
            let raw: Vec<f64> = match row {
                Value::Array(vals) => match vals.iter().map(|x| x.as_f64()).collect::<Option<_>>() {
                    Some(r) => r,
                    None => continue,
                },
                Value::Object(m) => match anomaly::named_row(m, i, &cfg) {
                    Ok(r) => r,
                    Err(_) => continue,
                },
                _ => continue,
            };
            let Ok(scaled) = anomaly::prepare(&raw, i, &cfg) else { continue };
            assert_eq!(scaled.len(), d);
            // A fake reconstruction: the row reversed.
            let recon: Vec<f32> = scaled.iter().rev().copied().collect();
            let (score, contributions) = anomaly::score(&scaled, &recon, &raw, &cfg, top);
            assert!(score >= 0.0 || score.is_nan() || score.is_infinite());
            assert_eq!(contributions.len(), top);
        }
    }
}

fn anomaly_req(body: &[u8]) {
    let Ok(req) = parse_json::<dlserve::api::anomaly::AnomalyRequest>(body) else { return };
    score_rows(&req.rows, req.top_features);
}

fn v2(body: &[u8]) {
    let Ok(req) = parse_json::<dlserve::api::v2::InferRequest>(body) else { return };
    for input in &req.inputs {
        let Some(data) = &input.data else { continue };
        let numel = input.shape.iter().try_fold(1i64, |a, d| if *d < 0 { None } else { a.checked_mul(*d) });
        match (input.name.as_str(), input.shape.as_slice()) {
            // cancer-ae: features [B, 30] → the /anomaly checks, one row per batch entry.
            ("features", [_, 30]) => {
                let mut flat = Vec::new();
                flatten(data, &mut flat);
                if numel != Some(flat.len() as i64) {
                    continue;
                }
                let rows: Vec<Value> = flat.chunks(30).map(|c| Value::Array(c.to_vec())).collect();
                score_rows(&rows, None);
            }
            // co2-lstm: series [B, T, 1] → the /forecast checks per batch entry.
            ("series", [_, t, 1]) if *t > 0 => {
                let mut flat = Vec::new();
                flatten(data, &mut flat);
                if numel != Some(flat.len() as i64) {
                    continue;
                }
                let cfg = common::forecaster();
                for window in flat.chunks(*t as usize) {
                    let rows: Option<Vec<Vec<f64>>> = window.iter().map(|x| x.as_f64().map(|v| vec![v])).collect();
                    if let Some(rows) = rows {
                        let _ = forecaster::prepare(&rows, &cfg);
                    }
                }
            }
            _ => {}
        }
    }
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        other => out.push(other.clone()),
    }
}
