//! `/detect`, `/denoise` and `/embed` over real HTTP with the shipped models: held-out scenes and
//! digits, every image form, the quality bars on a sample, and hostile inputs.
mod common;
use base64::Engine as _;
use common::*;
use serde_json::json;

/// A server over copies of the named shipped models.
async fn shipped(models: &[&str], flags: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(&shipped_models().join(m), &tmp.path().join(m));
    }
    let dir = tmp.path().to_path_buf();
    start_in(dir, Some(tmp), flags).await
}

fn data(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn index(dir: &str) -> serde_json::Value {
    serde_json::from_slice(&data(&format!("{dir}/index.json"))).unwrap()
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

fn boxes(result: &serde_json::Value) -> Vec<(usize, Vec<f64>)> {
    result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b = &d["box"];
            let v = ["x_min", "y_min", "x_max", "y_max"].iter().map(|k| b[*k].as_f64().unwrap()).collect();
            (d["index"].as_u64().unwrap() as usize, v)
        })
        .collect()
}

/// Every truth box found once with its label at IoU >= 0.5, and nothing else.
fn matches_truth(got: &[(usize, Vec<f64>)], truth: &serde_json::Value, what: &str) {
    let tb = truth["boxes"].as_array().unwrap();
    let tl = truth["labels"].as_array().unwrap();
    assert_eq!(got.len(), tb.len(), "{what}: {got:?} vs {truth}");
    for (b, l) in tb.iter().zip(tl) {
        let b: Vec<f64> = b.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let l = l.as_u64().unwrap() as usize;
        let best = got.iter().filter(|g| g.0 == l).map(|g| iou(&g.1, &b)).fold(0.0, f64::max);
        assert!(best >= 0.5, "{what}: digit {l} at {b:?} found with IoU {best:.2} ({got:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_finds_every_digit_of_held_out_scenes_in_upload_coordinates() {
    let s = shipped(&["digits-detector"], &[]).await;
    let idx = index("detector");
    let images = idx["images"].as_array().unwrap();
    assert!(images.len() >= 8);
    for img in images {
        let file = img["file"].as_str().unwrap();
        let r = s.post_png("/detect", data(&format!("detector/{file}"))).await;
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["x-model-name"], "digits-detector");
        let b: serde_json::Value = r.json().await.unwrap();
        let res = &b["results"][0];
        assert_eq!((res["width"].clone(), res["height"].clone()), (img["width"].clone(), img["height"].clone()));
        assert_eq!(res["inverted"], img["kind"].as_str().unwrap().starts_with("paper"), "{file}");
        matches_truth(&boxes(res), img, file);
        let scores: Vec<f64> =
            res["detections"].as_array().unwrap().iter().map(|d| d["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score: {scores:?}");
    }
    // Several images in one multipart request, answered in order; parameters as form fields.
    let files = ["scene_004.png", "scene_wide_paper.png"];
    let mut form = reqwest::multipart::Form::new().text("max_detections", "2");
    for f in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(data(&format!("detector/{f}"))).file_name(f).mime_str("image/png").unwrap(),
        );
    }
    let b: serde_json::Value =
        s.client.post(s.url("/detect")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(b["max_detections"], 2);
    assert_eq!(b["results"].as_array().unwrap().len(), 2);
    assert_eq!(b["results"][1]["width"], 192);
    assert!(b["results"].as_array().unwrap().iter().all(|r| r["detections"].as_array().unwrap().len() == 2));
    // JSON with base64, and raw pixel arrays of the same scene, give the same boxes.
    let png = data("detector/scene_002.png");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let a: serde_json::Value = s.post_json("/detect", json!({"images": [{"base64": b64}]})).await.json().await.unwrap();
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    let px: Vec<u8> = img.into_raw();
    let p: serde_json::Value =
        s.post_json("/detect", json!({"images": [{"pixels": px, "shape": [96, 96]}]})).await.json().await.unwrap();
    assert_eq!(a["results"], p["results"]);
    matches_truth(&boxes(&a["results"][0]), &images[2], "scene_002 as JSON");
    // A threshold of 1 keeps nothing; query parameters apply.
    let b: serde_json::Value = s.post_png("/detect?score_threshold=1", png.clone()).await.json().await.unwrap();
    assert_eq!(b["results"][0]["detections"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_png_draws_the_boxes_on_the_upload() {
    let s = shipped(&["digits-detector"], &[]).await;
    let file = data("detector/scene_wide_paper.png");
    let r = s.post_png("/detect?format=png", file.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let drawn = image::load_from_memory(&r.bytes().await.unwrap()).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), (192, 128), "the size of the upload");
    let coloured = drawn.pixels().filter(|p| !(p.0[0] == p.0[1] && p.0[1] == p.0[2])).count();
    assert!(coloured > 500, "boxes and tags in colour: {coloured} pixels");
    // Two images cannot make one PNG.
    let form = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(file.clone()).file_name("a.png"))
        .part("b", reqwest::multipart::Part::bytes(file).file_name("b.png"));
    let r = s.client.post(s.url("/detect?format=png")).multipart(form).send().await.unwrap();
    let (st, _, msg, field) = error_of(r).await;
    assert_eq!((st, field.as_deref()), (422, Some("format")), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_refuses_hostile_parameters_and_images_naming_the_limit() {
    let s = shipped(&["digits-detector", "digits-denoiser"], &["--max-image-pixels", "1000000"]).await;
    let png = data("detector/scene_000.png");
    for (q, field) in [
        ("max_detections=1000000000", "max_detections"),
        ("max_detections=0", "max_detections"),
        ("score_threshold=1.5", "score_threshold"),
        ("iou_threshold=-0.1", "iou_threshold"),
    ] {
        let (st, ty, msg, f) = error_of(s.post_png(&format!("/detect?{q}"), png.clone()).await).await;
        assert_eq!((st, ty.as_str(), f.as_deref()), (422, "invalid_input", Some(field)), "{q}: {msg}");
    }
    let (_, _, msg, _) = error_of(s.post_png("/detect?max_detections=1000000000", png.clone()).await).await;
    assert!(msg.contains("1000"), "names the limit: {msg}");
    // The same parameters in a JSON body, and an unknown one.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let r = s.post_json("/detect", json!({"max_detections": 1e9, "images": [{"base64": b64}]})).await;
    assert_eq!(error_of(r).await.3.as_deref(), Some("max_detections"));
    let r = s.post_json("/detect", json!({"top_k": 3, "images": [{"base64": b64}]})).await;
    let (st, _, msg, field) = error_of(r).await;
    assert_eq!((st, field.as_deref()), (422, Some("top_k")), "{msg}");
    // Huge and empty images.
    let big = png_of(2000, 2000);
    let (st, ty, _, _) = error_of(s.post_png("/detect", big.clone()).await).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"));
    let (st, _, _, _) = error_of(s.post_png("/denoise", big).await).await;
    assert_eq!(st, 413);
    let r = s.post_json("/detect", json!({"images": [{"pixels": [], "shape": [0, 4]}]})).await;
    assert_eq!(error_of(r).await.0, 422);
    let r = s.post_json("/denoise", json!({"images": [{"pixels": [[]]}]})).await;
    assert_eq!(error_of(r).await.0, 422);
    let (st, ty, _, _) = error_of(s.post_png("/detect", b"\x89PNG not really".to_vec()).await).await;
    assert_eq!((st, ty.as_str()), (400, "undecodable_image"));
    // The wrong kind of model for the endpoint.
    let (st, _, msg, field) = error_of(s.post_png("/detect?model=digits-denoiser", png.clone()).await).await;
    assert_eq!((st, field.as_deref()), (400, Some("model")), "{msg}");
    let r = s.client.post(s.url("/detect")).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(error_of(r).await.0, 415);
    // Still serving.
    assert_eq!(s.post_png("/detect", png).await.status(), 200);
}

fn png_of(w: u32, h: u32) -> Vec<u8> {
    png(w, h, |x, y| ((x ^ y) & 0xff) as u8)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_denoiser_cleans_held_out_digits_by_more_than_8_db() {
    let s = shipped(&["digits-denoiser"], &[]).await;
    let idx = index("denoise");
    let entries = idx.as_array().unwrap();
    let mut gains = Vec::new();
    for e in entries {
        let noisy = data(&format!("denoise/{}", e["file"].as_str().unwrap()));
        let clean = image::load_from_memory(&data(&format!("denoise/{}", e["clean_file"].as_str().unwrap())))
            .unwrap()
            .to_luma8()
            .into_raw();
        let r = s.post_png("/denoise", noisy.clone()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        let out = image::load_from_memory(&r.bytes().await.unwrap()).unwrap().to_luma8();
        assert_eq!(out.dimensions(), (28, 28));
        let before = psnr(&image::load_from_memory(&noisy).unwrap().to_luma8().into_raw(), &clean);
        let after = psnr(&out.into_raw(), &clean);
        let want = e["psnr_denoised_db"].as_f64().unwrap();
        assert!((after - want).abs() < 0.5, "{e}: {after:.2} dB served vs {want} dB in PyTorch");
        gains.push(after - before);
    }
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    assert!(mean >= 8.0, "mean PSNR gain {mean:.2} dB on {gains:?}");
    // Paper (dark ink on white) comes back as paper; pixel arrays as JSON.
    let e = &entries[0];
    let noisy = image::load_from_memory(&data(&format!("denoise/{}", e["file"].as_str().unwrap()))).unwrap().to_luma8();
    let paper: Vec<u8> = noisy.as_raw().iter().map(|v| 255 - v).collect();
    let b: serde_json::Value = s
        .post_json("/denoise", json!({"format": "json", "images": [{"pixels": paper, "shape": [28, 28]}, {"pixels": noisy.as_raw(), "shape": [28, 28]}]}))
        .await
        .json()
        .await
        .unwrap();
    let res = b["results"].as_array().unwrap();
    assert_eq!((res[0]["inverted"].as_bool(), res[1]["inverted"].as_bool()), (Some(true), Some(false)));
    let flat = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8))
            .collect()
    };
    let (p, n) = (flat(&res[0]["pixels"]), flat(&res[1]["pixels"]));
    assert_eq!(p.len(), 784);
    assert!(p.iter().zip(&n).all(|(a, b)| (*a as i32 + *b as i32 - 255).abs() <= 1), "paper is the inverse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_of_held_out_digits_and_rows_come_from_the_encoders() {
    let s = shipped(&["digits-denoiser", "cancer-ae", "digits-cnn"], &[]).await;
    // The held-out digits as one JSON request: each one's nearest other digit shares its label.
    let idx: Vec<serde_json::Value> = serde_json::from_slice(&data("digits/index.json")).unwrap();
    let plain: Vec<&serde_json::Value> =
        idx.iter().filter(|e| !e["file"].as_str().unwrap().contains("paper")).collect();
    let images: Vec<serde_json::Value> = plain
        .iter()
        .map(|e| {
            let b = data(&format!("digits/{}", e["file"].as_str().unwrap()));
            json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
        })
        .collect();
    let r = s.post_json("/embed", json!({"images": images})).await;
    assert_eq!(r.status(), 200, "one model embeds images, so none need be named");
    assert_eq!(r.headers()["x-model-name"], "digits-denoiser");
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["dim"], 32);
    let vecs: Vec<Vec<f64>> = b["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vecs.len(), plain.len());
    assert!(vecs.iter().all(|v| v.len() == 32));
    let labels: Vec<u64> = plain.iter().map(|e| e["label"].as_u64().unwrap()).collect();
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let nearest = |q: &[f64], skip: Option<usize>| {
        (0..vecs.len())
            .filter(|j| Some(*j) != skip)
            .min_by(|a, b| dist(q, &vecs[*a]).total_cmp(&dist(q, &vecs[*b])))
            .unwrap()
    };
    let right = (0..vecs.len()).filter(|i| labels[nearest(&vecs[*i], Some(*i))] == labels[*i]).count();
    assert!(right as f64 >= 0.9 * vecs.len() as f64, "leave-one-out 1-NN: {right} of {}", vecs.len());
    // Noisy held-out digits (other instances) land next to clean digits of their class.
    for e in index("denoise").as_array().unwrap() {
        let r = s.post_png("/embed", data(&format!("denoise/{}", e["file"].as_str().unwrap()))).await;
        let b: serde_json::Value = r.json().await.unwrap();
        let q: Vec<f64> = b["embeddings"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(labels[nearest(&q, None)], e["label"].as_u64().unwrap(), "{e}");
    }
    // Rows go to the tabular autoencoder: 16-d, in request order, deterministic.
    let row: Vec<f64> = vec![
        13.5, 14.4, 87.5, 566.3, 0.098, 0.081, 0.066, 0.043, 0.18, 0.06, 0.3, 1.2, 2.1, 23.6, 0.006, 0.02, 0.025, 0.01,
        0.02, 0.003, 15.1, 19.3, 99.7, 711.2, 0.14, 0.21, 0.22, 0.11, 0.29, 0.08,
    ];
    let mut other = row.clone();
    other[0] = 20.0;
    let r = s.post_json("/embed", json!({"rows": [row, other, row]})).await;
    assert_eq!(r.headers()["x-model-name"], "cancer-ae");
    let b: serde_json::Value = r.json().await.unwrap();
    let e = b["embeddings"].as_array().unwrap();
    assert_eq!((b["dim"].as_u64(), e.len(), e[0].as_array().unwrap().len()), (Some(16), 3, 16));
    assert_eq!(e[0], e[2]);
    assert_ne!(e[0], e[1]);
    // Errors name the field: a model without an encoder, the wrong input for a model, bad rows.
    let (st, _, msg, field) =
        error_of(s.post_png("/embed?model=digits-cnn", data("digits/000_label0.png")).await).await;
    assert_eq!((st, field.as_deref()), (400, Some("model")), "{msg}");
    assert!(msg.contains("[embedding]"), "{msg}");
    let (st, _, msg, field) = error_of(s.post_json("/embed?model=digits-denoiser", json!({"rows": [row]})).await).await;
    assert_eq!((st, field.as_deref()), (400, Some("model")), "{msg}");
    let (st, _, _, field) = error_of(s.post_json("/embed", json!({"rows": [[1.0, 2.0]]})).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("rows[0]")));
    let (st, _, _, field) = error_of(s.post_json("/embed", json!({"rows": []})).await).await;
    assert_eq!((st, field.as_deref()), (422, Some("rows")));
    let (st, _, _, field) = error_of(s.post_json("/embed", json!({"rows": [row], "colour": 1})).await).await;
    assert_eq!(st, 422, "{field:?}");
    // The encoder's queue shows in the metrics under its own name.
    assert!(s.metrics().await.contains("model=\"cancer-ae.encode\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_reaches_the_detector_and_denoiser_tensors() {
    let s = shipped(&["digits-detector", "digits-denoiser"], &[]).await;
    let m: serde_json::Value = s.get("/v2/models/digits-detector").await.json().await.unwrap();
    assert_eq!(m["inputs"][0]["shape"], json!([-1, 1, 96, 96]));
    assert_eq!(m["outputs"][0], json!({"name": "candidates", "datatype": "FP32", "shape": [-1, -1, 15]}));
    let body = json!({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 96, 96], "data": vec![-0.2636f32; 9216]}]});
    let b: serde_json::Value = s.post_json("/v2/models/digits-detector/infer", body).await.json().await.unwrap();
    assert_eq!(b["outputs"][0]["shape"], json!([1, 144, 15]), "{b}");
    let body = json!({"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 1, 28, 28], "data": vec![0.0f32; 1568]}]});
    let b: serde_json::Value = s.post_json("/v2/models/digits-denoiser/infer", body).await.json().await.unwrap();
    assert_eq!(b["outputs"][0]["shape"], json!([2, 1, 28, 28]), "{b}");
    // /models lists the kinds, their endpoints' sections and the embedding table.
    let m: serde_json::Value = s.get("/models/digits-denoiser").await.json().await.unwrap();
    assert_eq!(m["kind"], "denoiser");
    assert_eq!(m["config"]["embedding"], json!({"method": "encode", "dim": 32}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_serves_each_encoder_as_model_dot_method_equal_to_embed() {
    use dlserve::api::grpc::pb;
    let s = shipped(&["cancer-ae", "digits-denoiser"], &[]).await;
    // Metadata: the model's inputs, one output `embedding` [-1, dim].
    let m: serde_json::Value = s.get("/v2/models/cancer-ae.encode").await.json().await.unwrap();
    assert_eq!(m["inputs"][0]["shape"], json!([-1, 30]), "{m}");
    let dim = m["outputs"][0]["shape"][1].as_i64().unwrap();
    assert_eq!(m["outputs"], json!([{"name": "embedding", "datatype": "FP32", "shape": [-1, dim]}]));
    assert_eq!(s.get("/v2/models/digits-denoiser.encode/ready").await.status(), 200);
    // The index lists both encoders beside their models.
    let idx: serde_json::Value = s.post_json("/v2/repository/index", json!({})).await.json().await.unwrap();
    let names: Vec<&str> = idx.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    for n in ["cancer-ae", "cancer-ae.encode", "digits-denoiser", "digits-denoiser.encode"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    // A row through V2 (already scaled: V2 is the model's own space) against /embed's vector.
    let golden: serde_json::Value =
        serde_json::from_slice(&data("golden/cancer-ae.json")).expect("the cancer-ae golden file");
    let flat: Vec<f32> = serde_json::from_value(golden["inputs"][0]["data"].clone()).unwrap();
    let row = flat[..30].to_vec();
    let encoded: Vec<f64> = serde_json::from_value(golden["methods"]["encode"]["outputs"][0]["data"].clone()).unwrap();
    let cfg = std::fs::read_to_string(shipped_models().join("cancer-ae/config.toml")).unwrap();
    let cfg: toml::Value = toml::from_str(&cfg).unwrap();
    let (mean, std) = (&cfg["anomaly"]["scaling"]["mean"], &cfg["anomaly"]["scaling"]["std"]);
    let raw: Vec<f64> = row
        .iter()
        .enumerate()
        .map(|(i, x)| *x as f64 * std[i].as_float().unwrap() + mean[i].as_float().unwrap())
        .collect();
    let e: serde_json::Value =
        s.post_json("/embed", json!({"model": "cancer-ae", "rows": [raw]})).await.json().await.unwrap();
    let want: Vec<f64> = e["embeddings"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(want.len() as i64, dim);
    let body = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": row}]});
    let b: serde_json::Value = s.post_json("/v2/models/cancer-ae.encode/infer", body).await.json().await.unwrap();
    assert_eq!(b["model_name"], "cancer-ae.encode");
    assert_eq!(b["outputs"][0]["name"], "embedding");
    assert_eq!(b["outputs"][0]["shape"], json!([1, dim]), "{b}");
    let got: Vec<f64> = b["outputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for ((g, w), e) in got.iter().zip(&want).zip(&encoded) {
        assert!((g - e).abs() < 1e-4, "V2 {got:?} vs the golden encoding {encoded:?}");
        // /embed scales the raw row itself (rounding in the f32 round trip of the scaling).
        assert!((g - w).abs() < 1e-3, "V2 {got:?} vs /embed {want:?}");
    }
    // The same over gRPC, raw tensors.
    let ch = tonic::transport::Channel::from_shared(s.base.clone()).unwrap().connect().await.unwrap();
    let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch);
    let req = pb::ModelInferRequest {
        model_name: "cancer-ae.encode".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![1, 30],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()],
        ..Default::default()
    };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(r.outputs[0].name, "embedding");
    let raw = &r.raw_output_contents[0];
    let grpc: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(grpc.len() as i64, dim);
    for (g, w) in grpc.iter().zip(&got) {
        assert!((*g as f64 - w).abs() < 1e-6);
    }
    assert!(
        c.model_ready(pb::ModelReadyRequest { name: "digits-denoiser.encode".into(), version: String::new() })
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // A method the model does not have, or a model without an encoder, is not found.
    assert_eq!(s.get("/v2/models/cancer-ae.decode").await.status(), 404);
    assert_eq!(s.get("/v2/models/digits-denoiser.forward").await.status(), 404);
}

/// Loads an `.npz` with the project's NumPy and prints what the test checks.
fn numpy_summary(npz: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.npz");
    std::fs::write(&path, npz).unwrap();
    let py = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    let script = "import json, sys, numpy as np\n\
        z = np.load(sys.argv[1])\n\
        i, l = z['images'], z['labels']\n\
        print(json.dumps({'files': sorted(z.files), 'shape': list(i.shape), 'dtype': str(i.dtype), \
        'ldtype': str(l.dtype), 'labels': l[:8].tolist(), 'first': i[0].flatten().tolist(), \
        'counts': np.bincount(l, minlength=10).tolist(), 'mean': float(i.mean())}))";
    let out = std::process::Command::new(py).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(out.status.success(), "numpy.load: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_streams_an_augmentation_set_numpy_can_load() {
    let s = shipped(&["digits-cgan"], &[]).await;
    let get = |q: &str| s.client.get(s.url(&format!("/generate?{q}"))).send();
    let r = get("n=1000&seed=7&format=npz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-npz");
    assert_eq!(r.headers()["x-seed"], "7");
    let a = r.bytes().await.unwrap();
    let sum = numpy_summary(&a);
    assert_eq!(sum["files"], json!(["images", "labels"]));
    assert_eq!(
        (sum["shape"].clone(), sum["dtype"].clone(), sum["ldtype"].clone()),
        (json!([1000, 28, 28]), json!("uint8"), json!("int64"))
    );
    let counts: Vec<u64> = sum["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    assert!(counts.iter().all(|c| (50..=150).contains(c)), "labels drawn over the ten classes: {counts:?}");
    let mean = sum["mean"].as_f64().unwrap();
    assert!((10.0..80.0).contains(&mean), "digits are mostly black background: mean {mean}");
    // Same seed, same bytes.
    assert_eq!(get("n=1000&seed=7&format=npz").await.unwrap().bytes().await.unwrap(), a);
    // The images are what format=json gives for the same seed and labels.
    let z = numpy_summary(&get("n=70&seed=3&label=4&format=npz").await.unwrap().bytes().await.unwrap());
    assert_eq!(z["labels"], json!([4, 4, 4, 4, 4, 4, 4, 4]));
    let j: serde_json::Value = get("n=1&seed=3&label=4&format=json").await.unwrap().json().await.unwrap();
    let first: Vec<u64> = j["images"][0]["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .collect();
    assert_eq!(z["first"], json!(first));
    // Limits: n beyond 10,000 and 0 are refused before anything is sent.
    for n in ["10001", "0", "1000000000"] {
        let (st, _, msg, field) = error_of(get(&format!("n={n}&format=npz")).await.unwrap()).await;
        assert_eq!((st, field.as_deref()), (422, Some("n")), "{msg}");
        assert!(msg.contains("10000"), "{msg}");
    }
    // A client that goes away after the first bytes stops the work: computed items stop growing.
    let computed = || s.metric("dlserve_items_total{fate=\"computed\",model=\"digits-cgan\"");
    let before = computed().await;
    let mut r = get("n=10000&seed=1&format=npz").await.unwrap();
    let _ = r.chunk().await.unwrap();
    drop(r);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after_drop = computed().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let later = computed().await;
    assert_eq!(later, after_drop, "no rounds after the client left");
    assert!(after_drop - before < 10_000.0, "stopped early: {} of 10000 computed", after_drop - before);
}
