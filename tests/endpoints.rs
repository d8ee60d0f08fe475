//! The four domain endpoints over real HTTP, with fixture models whose outputs are exact.
mod common;
use base64::Engine;
use common::*;
use serde_json::json;

fn bright_row(row: u32) -> Vec<u8> {
    png(4, 4, move |_, y| if y == row { 255 } else { 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_accepts_every_input_format() {
    let s = start(&["tiny-classifier"], &[]).await;
    // Raw image body.
    let r = s.post_png("/classify?top_k=2", bright_row(1)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-model-name"], "tiny-classifier");
    assert_eq!(r.headers()["x-model-version"], "1");
    assert!(r.headers()["server-timing"].to_str().unwrap().contains("compute;dur="));
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["results"][0]["label"], "middle");
    assert_eq!(b["results"][0]["top_k"].as_array().unwrap().len(), 2);
    let p0 = b["results"][0]["top_k"][0]["probability"].as_f64().unwrap();
    let p1 = b["results"][0]["top_k"][1]["probability"].as_f64().unwrap();
    assert!(p0 > p1 && (p0 - 0.9999).abs() < 1e-3, "softmax of [0, 10, 0]: {p0}");
    // Multipart with several files, in order.
    let form = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(bright_row(2)).file_name("a.png").mime_str("image/png").unwrap())
        .part("b", reqwest::multipart::Part::bytes(bright_row(0)).file_name("b.png").mime_str("image/png").unwrap())
        .text("top_k", "1");
    let b: serde_json::Value =
        s.client.post(s.url("/classify")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(b["results"][0]["label"], "bottom");
    assert_eq!(b["results"][1]["label"], "top");
    assert_eq!(b["results"][1]["top_k"].as_array().unwrap().len(), 1);
    // JSON: base64, nested pixels, flat pixels with shape, HWC RGB pixels converted to gray.
    let b64 = base64::engine::general_purpose::STANDARD.encode(bright_row(0));
    let nested: Vec<Vec<u8>> = (0..4).map(|y| vec![if y == 2 { 255 } else { 0 }; 4]).collect();
    let flat: Vec<u8> = (0..16).map(|i| if i / 4 == 1 { 200 } else { 0 }).collect();
    let rgb: Vec<Vec<Vec<u8>>> = (0..4).map(|y| vec![vec![if y == 0 { 255 } else { 0 }; 3]; 4]).collect();
    let body = json!({"images": [{"base64": b64}, {"pixels": nested}, {"pixels": flat, "shape": [4, 4]}, {"pixels": rgb}], "top_k": 3});
    let b: serde_json::Value = s.post_json("/classify", body).await.json().await.unwrap();
    let labels: Vec<&str> = b["results"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, vec!["top", "bottom", "middle", "top"]);
    // Default top_k is 5 capped at the number of classes.
    let b: serde_json::Value =
        s.post_json("/classify", json!({"images": [{"base64": b64}]})).await.json().await.unwrap();
    assert_eq!(b["results"][0]["top_k"].as_array().unwrap().len(), 3);
    // A larger image is resized.
    let big = png(40, 40, |_, y| if (20..30).contains(&y) { 255 } else { 0 });
    let b: serde_json::Value = s.post_png("/classify", big).await.json().await.unwrap();
    assert_eq!(b["results"][0]["label"], "bottom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_refuses_bad_input_clearly() {
    let s = start(&["tiny-classifier", "tiny-anomaly"], &["--max-image-pixels", "400", "--max-items-per-request", "4"])
        .await;
    let post = |ct: &'static str, body: Vec<u8>| {
        s.client.post(s.url("/classify")).header("content-type", ct).body(body).send()
    };
    let (st, ty, _, _) = error_of(post("image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec()).await.unwrap()).await;
    assert_eq!((st, ty.as_str()), (400, "undecodable_image"));
    let (st, ty, msg, _) = error_of(post("image/png", png(21, 20, |_, _| 0)).await.unwrap()).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"));
    assert!(msg.contains("21x20") && msg.contains("400"), "{msg}");
    // A decompression bomb: a tiny file declaring a huge image is refused from its header.
    let bomb = png(5000, 5000, |_, _| 0);
    assert!(bomb.len() < 200_000);
    let (st, _, _, _) = error_of(post("image/png", bomb).await.unwrap()).await;
    assert_eq!(st, 413);
    let (st, ty, _, _) = error_of(post("image/tiff", vec![1, 2, 3]).await.unwrap()).await;
    assert_eq!((st, ty.as_str()), (415, "unsupported_media_type"));
    let (st, _, _, field) = error_of(s.post_png("/classify?top_k=4", png(4, 4, |_, _| 0)).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("top_k")));
    let (st, _, _, field) = error_of(s.post_json("/classify", json!({"images": []})).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("images")));
    let five: Vec<_> = (0..5).map(|_| json!({"pixels": [[0, 0], [0, 0]]})).collect();
    let (st, _, msg, _) = error_of(s.post_json("/classify", json!({"images": five})).await).await;
    assert_eq!(st, 422);
    assert!(msg.contains("at most 4"), "{msg}");
    let (st, _, _, field) = error_of(s.post_json("/classify", json!({"images": [{"pixels": [[0, 300]]}]})).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("images[0].pixels[1]")));
    let (st, _, _, field) = error_of(s.post_json("/classify", json!({"images": [{"base64": "!!!"}]})).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("images[0].base64")));
    let (st, ty, msg, _) =
        error_of(s.post_json("/classify", json!({"model": "tiny-anomaly", "images": [{"pixels": [[0]]}]})).await).await;
    assert_eq!((st, ty.as_str()), (400, "wrong_kind"));
    assert!(msg.contains("classifier"), "{msg}");
    let (st, _, _, _) =
        error_of(s.post_json("/classify", json!({"model": "nope", "images": [{"pixels": [[0]]}]})).await).await;
    assert_eq!(st, 404);
    let (st, _, _, _) =
        error_of(s.post_json("/classify", json!({"version": 9, "images": [{"pixels": [[0]]}]})).await).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_scales_rolls_out_and_timestamps() {
    let s = start(&["tiny-forecaster", "tiny-quantiles"], &["--default-model", "forecaster=tiny-forecaster"]).await;
    // Linear series 10, 12, 14, 16: the fixture extrapolates the last step (in scaled space).
    let r = s
        .post_json(
            "/forecast",
            json!({"series": [10, 12, 14, 16], "horizon": 5, "start": "2000-11-01", "frequency": "MS"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().await.unwrap();
    let got: Vec<f64> = b["forecast"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = [18.0, 20.0, 22.0, 24.0, 26.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-4, "{got:?}");
    }
    assert_eq!(b["forward_passes"], 3, "horizon 5 over a 2-step model rolls out 3 times");
    assert_eq!(b["timestamps"], json!(["2001-03-01", "2001-04-01", "2001-05-01", "2001-06-01", "2001-07-01"]));
    assert_eq!(b["truncated"], false);
    // A long history is cut to max_context (8), and the response says so.
    let long: Vec<f64> = (0..20).map(|i| i as f64).collect();
    let b: serde_json::Value =
        s.post_json("/forecast", json!({"series": long, "horizon": 1})).await.json().await.unwrap();
    assert_eq!(b["truncated"], true);
    assert_eq!(b["context_used"], 8);
    assert!((b["forecast"][0].as_f64().unwrap() - 20.0).abs() < 1e-4);
    // Quantiles become intervals.
    let b: serde_json::Value = s
        .post_json("/forecast", json!({"model": "tiny-quantiles", "series": [[1], [2], [3]], "horizon": 2}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["forecast"], json!([[3.0], [3.0]]));
    assert_eq!(b["quantiles"][0]["level"].as_f64().unwrap() as f32, 0.1);
    assert_eq!(b["quantiles"][0]["values"], json!([[2.0], [2.0]]));
    assert_eq!(b["quantiles"][2]["values"], json!([[4.0], [4.0]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_refuses_bad_input_clearly() {
    let s = start(&["tiny-forecaster"], &[]).await;
    let cases = [
        (json!({"series": [1, 2], "horizon": 1}), "series"),
        (json!({"series": [], "horizon": 1}), "series"),
        (json!({"series": [1, 2, 3], "horizon": 0}), "horizon"),
        (json!({"series": [1, 2, 3], "horizon": 6}), "horizon"),
        (json!({"series": [1, "x", 3], "horizon": 1}), "series[1]"),
        (json!({"series": [[1, 2], [3, 4], [5, 6]], "horizon": 1}), "series[0]"),
        (json!({"series": [1, 2, 3], "horizon": 1, "start": "2000-01-01"}), "frequency"),
        (json!({"series": [1, 2, 3], "horizon": 1, "start": "2000-01-01", "frequency": "fortnightly"}), "frequency"),
    ];
    for (body, field) in cases {
        let (st, _, msg, f) = error_of(s.post_json("/forecast", body.clone()).await).await;
        assert_eq!((st, f.as_deref()), (422, Some(field)), "{body}: {msg}");
    }
    let r = s.post_raw_json("/forecast", r#"{"series": [1, NaN, 3], "horizon": 1}"#).await;
    let (st, _, msg, _) = error_of(r).await;
    assert_eq!(st, 422, "{msg}");
    let (st, _, msg, f) = error_of(s.post_json("/forecast", json!({"series": [1, 2, 3], "horizon": 5.5})).await).await;
    assert_eq!((st, f.as_deref()), (422, Some("horizon")), "{msg}");
    let r = s.post_raw_json("/forecast", r#"{"series": [1, 2, 1e400], "horizon": 1}"#).await;
    let (st, _, msg, _) = error_of(r).await;
    assert_eq!(st, 422, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_scores_explains_and_takes_named_rows() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let r = s.post_json("/anomaly", json!({"rows": [[0, 0, 0.2], {"a": 0, "b": 4, "c": 0}], "top_features": 2})).await;
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().await.unwrap();
    let r0 = &b["results"][0];
    assert!((r0["score"].as_f64().unwrap() - 0.01 / 3.0).abs() < 1e-6);
    assert_eq!(r0["is_anomaly"], false);
    assert_eq!(r0["threshold"], 1.0);
    let r1 = &b["results"][1];
    assert!((r1["score"].as_f64().unwrap() - 4.0 / 3.0).abs() < 1e-5);
    assert_eq!(r1["is_anomaly"], true);
    assert_eq!(r1["top_features"][0]["feature"], "b");
    assert_eq!(r1["top_features"][0]["reconstructed"], 2.0);
    assert_eq!(r1["top_features"].as_array().unwrap().len(), 2);
    assert_eq!(b["threshold_source"], "calibrated");
    let b: serde_json::Value =
        s.post_json("/anomaly", json!({"rows": [[0, 4, 0]], "threshold": 2.0})).await.json().await.unwrap();
    assert_eq!(b["results"][0]["is_anomaly"], false);
    assert_eq!(b["threshold_source"], "request");
    for (body, field) in [
        (json!({"rows": []}), "rows"),
        (json!({"rows": [[1, 2, 3, 4]]}), "rows[0]"),
        (json!({"rows": [{"a": 1, "b": 2}]}), "rows[0].c"),
        (json!({"rows": [{"a": 1, "b": 2, "c": 3, "z": 1}]}), "rows[0].z"),
        (json!({"rows": [[1, 2, 3]], "threshold": -1}), "threshold"),
        (json!({"rows": [[1, 2, 3]], "top_features": 4}), "top_features"),
    ] {
        let (st, _, msg, f) = error_of(s.post_json("/anomaly", body.clone()).await).await;
        assert_eq!((st, f.as_deref()), (422, Some(field)), "{body}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generate_is_bit_identical_for_a_seed_even_under_concurrent_batching() {
    let s = std::sync::Arc::new(start(&["tiny-generator"], &[]).await);
    let first = s.get("/generate?n=5&seed=42&label=1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/png");
    assert_eq!(first.headers()["x-seed"], "42");
    let first = first.bytes().await.unwrap();
    let img = image::load_from_memory(&first).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 2 + 2 * 2, 2 * 2 + 2));
    // The same request while others with other seeds are batched alongside it.
    let mut noise = Vec::new();
    for k in 0..16 {
        let s = s.clone();
        noise.push(tokio::spawn(async move { s.get(&format!("/generate?n={}&seed={k}", 1 + k % 4)).await.status() }));
    }
    let again = s.get("/generate?n=5&seed=42&label=1").await.bytes().await.unwrap();
    for h in noise {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(first, again, "same seed, same bytes");
    let other = s.get("/generate?n=5&seed=43&label=1").await.bytes().await.unwrap();
    assert_ne!(first, other);
    // JSON: pixels and labels; per-image labels.
    let b: serde_json::Value = s.get("/generate?n=3&seed=7&label=0,1,2&format=json").await.json().await.unwrap();
    assert_eq!(b["seed"], 7);
    let imgs = b["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 3);
    assert_eq!(imgs[2]["label"], 2);
    assert_eq!(imgs[2]["label_name"], "two");
    assert_eq!(imgs[0]["pixels"].as_array().unwrap().len(), 2, "[H][W]");
    // Without a label, labels come from the seed.
    let a: serde_json::Value = s.get("/generate?n=4&seed=9&format=json").await.json().await.unwrap();
    let b2: serde_json::Value = s.get("/generate?n=4&seed=9&format=json").await.json().await.unwrap();
    assert_eq!(a, b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_refuses_bad_parameters_clearly() {
    let s = start(&["tiny-generator"], &[]).await;
    for (q, field) in
        [("n=0", "n"), ("n=17", "n"), ("label=3", "label"), ("n=2&label=1,2,0", "label"), ("label=x", "label")]
    {
        let (st, _, msg, f) = error_of(s.get(&format!("/generate?{q}")).await).await;
        assert_eq!((st, f.as_deref()), (422, Some(field)), "{q}: {msg}");
    }
    let (st, ty, _, _) = error_of(s.get("/generate?format=gif").await).await;
    assert_eq!((st, ty.as_str()), (400, "bad_request"));
    let (st, _, _, _) = error_of(s.get("/generate?seed=-1").await).await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_model_needs_naming_only_when_ambiguous() {
    let s = start(&["tiny-forecaster", "tiny-quantiles"], &[]).await;
    let (st, ty, msg, field) =
        error_of(s.post_json("/forecast", json!({"series": [1, 2, 3], "horizon": 1})).await).await;
    assert_eq!((st, ty.as_str(), field.as_deref()), (400, "model_required", Some("model")));
    assert!(msg.contains("tiny-forecaster") && msg.contains("tiny-quantiles"), "{msg}");
    let r = s.post_json("/forecast?model=tiny-quantiles", json!({"series": [1, 2, 3], "horizon": 1})).await;
    assert_eq!(r.headers()["x-model-name"], "tiny-quantiles");
}
