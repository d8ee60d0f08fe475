//! The shipped default models: each loads through the registry, honours its contract, matches
//! the golden outputs PyTorch computed for it, and does something true end to end.
mod common;
use common::*;
use dlserve::tensor::ItemTensor;
use serde_json::json;

fn golden(name: &str) -> serde_json::Value {
    let p = format!("{}/tests/data/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

const DEFAULT_MODELS: [&str; 9] = [
    "digits-cnn",
    "co2-lstm",
    "cancer-ae",
    "digits-cgan",
    "digits-detector",
    "digits-denoiser",
    "elnino-gru",
    "fortunes-lstm",
    "fortunes-gru",
];

/// What serves each default model as shipped (README, "Which format each default model uses").
/// Every default model has a package; the generator's config pins TorchScript, whose outputs do
/// not depend on the batch.
fn shipped_engine(name: &str) -> &'static str {
    if name == "digits-cgan" {
        "torchscript"
    } else {
        "aoti"
    }
}

/// The default models with a `model.pt2`: all of them (the forecasters with their context
/// length dynamic, 24..120).
fn packaged(name: &str) -> bool {
    shipped_models().join(name).join("1/model.pt2").is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_model_loads_and_matches_its_golden_outputs() {
    let s = start_in(shipped_models(), None, &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200, "every default model is ready");
    check_goldens(&s, &DEFAULT_MODELS, shipped_engine).await;
}

/// The shipped models with every config's `format` set to `format`.
async fn start_as(format: &str, models: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    for name in models {
        copy_dir(&shipped_models().join(name), &tmp.path().join(name));
        let cfg = tmp.path().join(name).join("config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text: String = text.lines().filter(|l| !l.starts_with("format =")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&cfg, format!("format = \"{format}\"\n{text}")).unwrap();
    }
    let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_torchscript_files_match_the_same_goldens() {
    let s = start_as("torchscript", &DEFAULT_MODELS).await;
    check_goldens(&s, &DEFAULT_MODELS, |_| "torchscript").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packages_match_the_same_goldens() {
    // Compiled from the same weights (training/export_pt2.py); the goldens were computed with the
    // TorchScript files, and the packages agree with them within the same atol.
    let models: Vec<&str> = DEFAULT_MODELS.into_iter().filter(|n| packaged(n)).collect();
    assert_eq!(models, DEFAULT_MODELS, "every default model ships a package");
    let s = start_as("pt2", &models).await;
    check_goldens(&s, &models, |_| "aoti").await;
}

/// Every default model's golden inputs through its queue (and its embedding queue), against the
/// outputs PyTorch computed with the TorchScript file, within the golden's atol.
async fn check_goldens(s: &Server, models: &[&str], engine: fn(&str) -> &'static str) {
    for &name in models {
        let g = golden(name);
        let v = s.registry.resolve(name, None).unwrap();
        assert_eq!(v.engine, engine(name), "{name}: the engine serving it");
        // Split the golden batch into items, as requests would be.
        let inputs = g["inputs"].as_array().unwrap();
        let b = inputs[0]["shape"][0].as_u64().unwrap() as usize;
        let items: Vec<Vec<ItemTensor>> = (0..b)
            .map(|row| {
                inputs
                    .iter()
                    .map(|i| {
                        let shape: Vec<i64> =
                            i["shape"].as_array().unwrap().iter().skip(1).map(|d| d.as_i64().unwrap()).collect();
                        let per = shape.iter().product::<i64>() as usize;
                        let data = i["data"].as_array().unwrap();
                        if i["dtype"] == "int64" {
                            ItemTensor::i64(
                                shape,
                                data[row * per..(row + 1) * per].iter().map(|x| x.as_i64().unwrap()).collect(),
                            )
                        } else {
                            ItemTensor::f32(
                                shape,
                                data[row * per..(row + 1) * per].iter().map(|x| x.as_f64().unwrap() as f32).collect(),
                            )
                        }
                    })
                    .collect()
            })
            .collect();
        // forward through the model's queue, and each golden method through the `[embedding]` queue.
        let mut runs = vec![(&v.batcher, &g["outputs"][0], "forward".to_string())];
        if let Some(methods) = g["methods"].as_object() {
            assert_eq!(methods.len(), 1, "{name}: one embedding method");
            for (m, out) in methods {
                assert_eq!(v.config.manifest.embedding.as_ref().unwrap().method, *m);
                runs.push((v.embedder.as_ref().expect("an embedding queue"), &out["outputs"][0], m.clone()));
            }
        }
        for (batcher, want, what) in runs {
            let outs = batcher
                .infer(items.clone(), dlserve::batching::Deadline::after(std::time::Duration::from_secs(10)))
                .await
                .unwrap();
            let want_shape: Vec<i64> =
                want["shape"].as_array().unwrap().iter().skip(1).map(|d| d.as_i64().unwrap()).collect();
            let want_data: Vec<f64> = want["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let atol = g["atol"].as_f64().unwrap();
            let per = want_data.len() / b;
            for (row, o) in outs.iter().enumerate() {
                assert_eq!(o.outputs[0].shape, want_shape, "{name} {what}: contract shape");
                for (j, got) in o.outputs[0].data.iter().enumerate() {
                    let w = want_data[row * per + j];
                    assert!(
                        (*got as f64 - w).abs() <= atol,
                        "{name} {what} row {row} element {j}: {got} vs golden {w} (atol {atol})"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classifier_recognises_held_out_digits_posted_as_png_files() {
    let s = start_in(shipped_models(), None, &[]).await;
    let dir = format!("{}/tests/data/digits", env!("CARGO_MANIFEST_DIR"));
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/index.json")).unwrap()).unwrap();
    assert!(index.len() >= 20);
    let mut right = 0;
    for entry in &index {
        let file = entry["file"].as_str().unwrap();
        let label = entry["label"].as_i64().unwrap().to_string();
        let png = std::fs::read(format!("{dir}/{file}")).unwrap();
        let r = s.post_png("/classify", png).await;
        assert_eq!(r.status(), 200);
        let b: serde_json::Value = r.json().await.unwrap();
        if b["results"][0]["label"] == label.as_str() {
            right += 1;
        } else {
            eprintln!("{file}: got {}", b["results"][0]);
        }
        if file.contains("paper") {
            assert_eq!(b["results"][0]["inverted"], true, "{file}: dark ink on white paper is inverted");
        }
    }
    assert_eq!(right, index.len(), "every held-out digit, in both styles, is classified right");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_digits_are_recognised_by_the_classifier() {
    let s = start_in(shipped_models(), None, &[]).await;
    let mut right = 0;
    let mut total = 0;
    for label in 0..10 {
        let g: serde_json::Value =
            s.get(&format!("/generate?n=10&seed={label}&label={label}&format=json")).await.json().await.unwrap();
        let images: Vec<_> = g["images"].as_array().unwrap().iter().map(|i| json!({"pixels": i["pixels"]})).collect();
        let c: serde_json::Value = s
            .post_json("/classify?model=digits-cnn", json!({"images": images, "top_k": 1}))
            .await
            .json()
            .await
            .unwrap();
        for r in c["results"].as_array().unwrap() {
            total += 1;
            if r["label"] == label.to_string().as_str() {
                right += 1;
            }
        }
    }
    let share = right as f64 / total as f64;
    assert!(share >= 0.85, "the CNN recognises {right}/{total} generated digits as the requested label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_and_anomaly_answer_in_user_units() {
    let s = start_in(shipped_models(), None, &[]).await;
    // Monthly CO2-like history: trend plus a yearly cycle, in ppm.
    let series: Vec<f64> =
        (0..60).map(|i| 360.0 + 0.13 * i as f64 + 3.0 * ((i as f64) * std::f64::consts::TAU / 12.0).sin()).collect();
    // Two forecasters are loaded; co2-lstm's config marks it default_for_kind, so it answers.
    let r = s.post_json("/forecast", json!({"series": series, "horizon": 24})).await;
    assert_eq!(r.headers()["x-model-name"], "co2-lstm");
    let b: serde_json::Value = r.json().await.unwrap();
    let f: Vec<f64> = b["forecast"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(f.len(), 24);
    assert!(f.iter().all(|v| (355.0..380.0).contains(v)), "forecast stays in the plausible range: {f:?}");
    assert_eq!(b["forward_passes"], 2);
    // elnino-gru, named: four years of a seasonal Nino 1+2 temperature cycle (deg C) in, degrees out.
    let sst: Vec<f64> = (0..48).map(|i| 23.0 + 2.5 * ((i as f64 - 2.0) * std::f64::consts::TAU / 12.0).cos()).collect();
    let b: serde_json::Value = s
        .post_json("/forecast", json!({"model": "elnino-gru", "series": sst, "horizon": 12}))
        .await
        .json()
        .await
        .unwrap();
    let f: Vec<f64> = b["forecast"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((f.len(), b["model"].as_str()), (12, Some("elnino-gru")));
    assert!(f.iter().all(|v| (17.0..30.0).contains(v)), "sea temperatures in deg C: {f:?}");
    // The golden anomaly rows (already scaled) are unscaled back to raw features here.
    let cfg =
        s.registry.resolve("cancer-ae", None).unwrap().config.section::<dlserve::kinds::anomaly::Anomaly>().unwrap();
    let sc = cfg.scaling.clone().unwrap();
    let g = golden("cancer-ae");
    let data: Vec<f64> = g["inputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let rows: Vec<Vec<f64>> = data
        .chunks(30)
        .map(|r| r.iter().enumerate().map(|(i, v)| v * sc.std[i] as f64 + sc.mean[i] as f64).collect())
        .collect();
    let b: serde_json::Value = s.post_json("/anomaly", json!({"rows": rows})).await.json().await.unwrap();
    for r in b["results"].as_array().unwrap() {
        assert!(r["score"].as_f64().unwrap().is_finite());
        assert_eq!(r["top_features"].as_array().unwrap().len(), 3);
        assert!(r["top_features"][0]["feature"].as_str().unwrap().chars().any(|c| c.is_alphabetic()), "named features");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_generator_is_bit_identical_per_seed_under_concurrent_batching() {
    let s = std::sync::Arc::new(start_in(shipped_models(), None, &[]).await);
    let alone = s.get("/generate?n=3&seed=42&format=json").await.bytes().await.unwrap();
    for round in 0..3 {
        let mut noise = Vec::new();
        for k in 0..12 {
            let s = s.clone();
            noise.push(tokio::spawn(async move {
                s.get(&format!("/generate?n={}&seed={}", 1 + k % 5, 100 + k)).await.status()
            }));
        }
        let again = s.get("/generate?n=3&seed=42&format=json").await.bytes().await.unwrap();
        for h in noise {
            assert_eq!(h.await.unwrap(), 200);
        }
        assert_eq!(alone, again, "round {round}: same seed, same bytes, whatever was batched alongside");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_row_is_the_same_float_for_float_whatever_its_batch() {
    // libtorch picks CPU kernels by batch size. On CPU the generator runs unpadded
    // (`[batching.cpu] fixed_batch_size = false`): its first Linear runs in fixed 8-row blocks and,
    // at the one intra-op thread its config sets there, its convolutions do not depend on the batch
    // size, so the row below is bit-identical in forwards of 1, 3, 5 and 8 rows. (On CUDA the config
    // pads every forward to 8 rows instead.)
    let s = start_in(shipped_models(), None, &[]).await;
    let z: Vec<f32> = dlserve::kinds::generator::latent(7, 0, 64);
    let infer = |rows: usize| {
        let mut data = Vec::new();
        for r in 0..rows {
            data.extend(if r == 0 { z.clone() } else { dlserve::kinds::generator::latent(99, r as u64, 64) });
        }
        let labels: Vec<i64> = (0..rows as i64).map(|r| r % 10).collect();
        json!({"inputs": [
            {"name": "z", "shape": [rows, 64], "datatype": "FP32", "data": data},
            {"name": "labels", "shape": [rows], "datatype": "INT64", "data": labels}]})
    };
    let mut first: Option<Vec<f64>> = None;
    for rows in [1, 3, 5, 16] {
        let b: serde_json::Value = s.post_json("/v2/models/digits-cgan/infer", infer(rows)).await.json().await.unwrap();
        let row0: Vec<f64> =
            b["outputs"][0]["data"].as_array().unwrap()[..784].iter().map(|v| v.as_f64().unwrap()).collect();
        match &first {
            None => first = Some(row0),
            Some(f) => assert!(f == &row0, "row 0 differs when computed among {rows} rows"),
        }
    }
}
