//! torch.export + AOTInductor packages (`model.pt2`): served through the kinds' endpoints and V2
//! with dynamic batching, and every bad package refused before its code runs, with the reason in
//! `/models` and `/health/ready` while the other models serve.
mod common;
use common::*;
use dlserve::engine::aoti::{self, zip_members};
use dlserve::engine::{Engine, ReplicaPrep};
use dlserve::tensor::ItemTensor;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A repository with copies of shipped models; `pt2_only` drops their `model.pt`.
fn repo(models: &[&str], pt2_only: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(&shipped_models().join(m), &tmp.path().join(m));
        if pt2_only {
            std::fs::remove_file(tmp.path().join(m).join("1/model.pt")).unwrap();
        }
    }
    let dir = tmp.path().to_path_buf();
    (tmp, dir)
}

fn digit_pngs() -> Vec<(Vec<u8>, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/digits");
    let mut v: Vec<(Vec<u8>, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png") && !n.contains("paper"))
        .map(|n| {
            let label = n.split("label").nth(1).unwrap()[..1].to_string();
            (std::fs::read(dir.join(&n)).unwrap(), label)
        })
        .collect();
    v.sort();
    v
}

/// Rewrites the metadata JSON of every model in a package (same length, CRCs fixed), as a package
/// built elsewhere would carry it.
fn patch_metadata(pkg: &Path, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut bytes = std::fs::read(pkg).unwrap();
    let members = zip_members(&bytes).unwrap();
    let mut patched = 0;
    for m in members.iter().filter(|m| m.name.ends_with("wrapper_metadata.json")) {
        let mut meta: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[m.data.clone()]).unwrap();
        edit(&mut meta);
        let mut text = serde_json::to_string(&meta).unwrap().into_bytes();
        assert!(text.len() <= m.data.len(), "the edited metadata must fit in place");
        text.resize(m.data.len(), b' ');
        replace_member(&mut bytes, m, &text);
        patched += 1;
    }
    assert!(patched > 0, "{}: no metadata member", pkg.display());
    std::fs::write(pkg, bytes).unwrap();
}

fn replace_member(bytes: &mut [u8], m: &aoti::ZipMember, content: &[u8]) {
    assert_eq!(content.len(), m.data.len());
    bytes[m.data.clone()].copy_from_slice(content);
    let crc = crc32fast::hash(content).to_le_bytes();
    bytes[m.headers.0 + 14..m.headers.0 + 18].copy_from_slice(&crc);
    bytes[m.headers.1 + 16..m.headers.1 + 20].copy_from_slice(&crc);
}

fn host_flags() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap().lines().find(|l| l.starts_with("flags")).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pt2_classifier_serves_classify_and_v2_in_batches() {
    let (tmp, dir) = repo(&["digits-cnn"], true);
    edit_config(&dir, "digits-cnn", "max_queue_delay_ms = 0", "max_queue_delay_ms = 20");
    let s = start_in(dir, Some(tmp), &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    let models: serde_json::Value = s.get("/models").await.json().await.unwrap();
    let v = &models["models"][0]["versions"][0];
    assert_eq!(v["engine"], "aoti", "{models}");
    assert_eq!(v["file"], "model.pt2");
    assert_eq!(v["batched"], true);
    assert_eq!(v["max_batch_size"], 32);
    assert!(v["compiled_for"].as_str().unwrap().starts_with("cpu, ISA AVX2"), "{v}");

    // Concurrent requests: every digit right as often as the TorchScript model is (the shipped
    // digits are all classified correctly), and batches of more than one item.
    let digits = digit_pngs();
    let mut tasks = Vec::new();
    for round in 0..3 {
        for (png, label) in digits.clone() {
            let (c, url) = (s.client.clone(), s.url("/classify"));
            tasks.push(tokio::spawn(async move {
                let part = reqwest::multipart::Part::bytes(png).file_name("d.png").mime_str("image/png").unwrap();
                let r =
                    c.post(url).multipart(reqwest::multipart::Form::new().part("image", part)).send().await.unwrap();
                assert_eq!(r.status(), 200, "round {round}");
                let body: serde_json::Value = r.json().await.unwrap();
                (body["results"][0]["label"].as_str().unwrap().to_string(), label)
            }));
        }
    }
    let mut right = 0;
    let n = tasks.len();
    for t in tasks {
        let (got, want) = t.await.unwrap();
        right += usize::from(got == want);
    }
    assert_eq!(right, n, "every shipped digit is classified correctly by the package");
    let sum = s.metric("dlserve_batch_size_sum{model=\"digits-cnn\",version=\"1\"}").await;
    let count = s.metric("dlserve_batch_size_count{model=\"digits-cnn\",version=\"1\"}").await;
    assert_eq!(sum as usize, n, "every item went through a batch");
    assert!(sum / count > 1.0, "mean batch size {} over {count} batches", sum / count);

    let meta: serde_json::Value = s.get("/v2/models/digits-cnn").await.json().await.unwrap();
    assert_eq!(meta["platform"], "pytorch_aoti");
    let body = json!({"inputs": [{"name": "images", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": vec![0.0; 3 * 784]}]});
    let r = s.post_json("/v2/models/digits-cnn/infer", body).await;
    assert_eq!(r.status(), 200);
    let out: serde_json::Value = r.json().await.unwrap();
    assert_eq!(out["outputs"][0]["shape"], json!([3, 10]), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_with_two_models_serves_anomaly_and_embed_from_pt2() {
    let (tmp, dir) = repo(&["cancer-ae"], true);
    let s = start_in(dir, Some(tmp), &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    let v = s.registry.resolve("cancer-ae", None).unwrap();
    assert_eq!(v.engine, "aoti");
    // The benign training mean, in raw units, from the config's scaling.
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(s.dir.join("cancer-ae/config.toml")).unwrap()).unwrap();
    let row: Vec<f64> =
        cfg["anomaly"]["scaling"]["mean"].as_array().unwrap().iter().map(|x| x.as_float().unwrap()).collect();
    let r = s.post_json("/anomaly", json!({"rows": [row.clone(), row.clone()]})).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["results"][0]["is_anomaly"], false, "the mean benign row is normal: {body}");
    let r = s.post_json("/embed", json!({"model": "cancer-ae", "rows": [row]})).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["embeddings"][0].as_array().unwrap().len(), 16, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecaster_packages_take_every_context_length_of_their_range_and_no_other() {
    // co2-lstm (oneDNN's LSTM kernel) and elnino-gru (a scan) were exported with T in 24..=120.
    let (tmp, dir) = repo(&["co2-lstm", "elnino-gru"], true);
    let s = start_in(dir.clone(), Some(tmp), &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    for model in ["co2-lstm", "elnino-gru"] {
        let m: serde_json::Value = s.get(&format!("/models/{model}")).await.json().await.unwrap();
        assert_eq!(m["versions"][0]["engine"], "aoti", "{m}");
        // Every length of the range through one queue, at once: items of one length batch together.
        let mut calls = Vec::new();
        for t in [24usize, 37, 60, 119, 120, 150] {
            let series: Vec<f64> = (0..t).map(|i| 20.0 + (i as f64 * 0.52).sin()).collect();
            calls.push(s.post_json("/forecast", json!({"model": model, "series": series, "horizon": 12})));
        }
        for (r, t) in futures::future::join_all(calls).await.into_iter().zip([24usize, 37, 60, 119, 120, 150]) {
            assert_eq!(r.status(), 200, "{model} at T = {t}");
            let b: serde_json::Value = r.json().await.unwrap();
            assert_eq!(b["context_used"], t.min(120), "{b}");
            assert!(b["forecast"].as_array().unwrap().iter().all(|x| x.as_f64().is_some_and(f64::is_finite)), "{b}");
        }
    }
    // A config allowing more context than the package was exported for is refused at load,
    // naming both ranges (the warm-up runs max_context).
    edit_config(&s.dir, "elnino-gru", "max_context = 120", "max_context = 121");
    let reg = s.registry.clone();
    let r = tokio::task::spawn_blocking(move || reg.load("elnino-gru")).await.unwrap();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("dimension 1 is 121") && e.contains("24..=120"), "{e}");
    assert_eq!(
        s.post_json("/forecast", json!({"model": "elnino-gru", "series": vec![1.0; 30], "horizon": 12})).await.status(),
        200,
        "the previous load keeps serving"
    );
}

#[test]
fn bad_packages_are_refused_with_a_reason_and_the_others_serve() {
    // A temporary directory of this test's own (the package loader unpacks under TMPDIR), so that
    // what other tests' processes unpack meanwhile is not counted. Set before the runtime starts
    // its threads: setenv while another thread reads the environment is undefined behaviour, and
    // as a multi-thread tokio test this crashed about one run in fifteen under load.
    let private_tmp = tempfile::tempdir().unwrap();
    std::env::set_var("TMPDIR", private_tmp.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(bad_packages_are_refused(private_tmp));
}

async fn bad_packages_are_refused(_private_tmp: tempfile::TempDir) {
    let names = ["corrupt", "truncated", "for-cuda", "isa", "torch-version", "contract", "batch-range", "shape"];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    copy_dir(&shipped_models().join("cancer-ae"), &dir.join("cancer-ae"));
    let cnn = shipped_models().join("digits-cnn");
    for n in names {
        copy_dir(&cnn, &dir.join(n));
        std::fs::remove_file(dir.join(n).join("1/model.pt")).unwrap();
        std::fs::write(dir.join(n).join("config.toml"), std::fs::read_to_string(cnn.join("config.toml")).unwrap())
            .unwrap();
    }
    let pkg = |n: &str| dir.join(n).join("1/model.pt2");
    let good = std::fs::read(pkg("corrupt")).unwrap();
    std::fs::write(pkg("corrupt"), (0..good.len()).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    std::fs::write(pkg("truncated"), &good[..good.len() / 2]).unwrap();
    patch_metadata(&pkg("for-cuda"), |m| {
        m.insert("AOTI_DEVICE_KEY".into(), json!("cuda"));
    });
    // An instruction set this host lacks (AMX or AVX512-FP16 on most machines). A host that has
    // them all (Sapphire Rapids has AMX and AVX512-FP16) gets an ISA name the server cannot
    // check, which must be refused too.
    let flags = host_flags();
    let lacking = [("AMX_TILE", "amx_tile"), ("AVX512_FP16", "avx512_fp16"), ("AMX_INT8", "amx_int8")]
        .into_iter()
        .find(|(_, f)| !flags.split_whitespace().any(|h| h == *f));
    let (isa, isa_reason) = match lacking {
        Some((isa, flag)) => (isa, vec!["instructions this host lacks", flag]),
        None => ("SVE256", vec!["AOTI_CPU_ISA names \"SVE256\", which this server cannot check"]),
    };
    patch_metadata(&pkg("isa"), |m| {
        m.insert("AOTI_CPU_ISA".into(), json!(isa));
    });
    // A package from another torch release: its library needs a symbol this libtorch lacks.
    {
        let mut bytes = std::fs::read(pkg("torch-version")).unwrap();
        let members = zip_members(&bytes).unwrap();
        let so = members.iter().find(|m| m.name.ends_with(".wrapper.so")).unwrap();
        let mut lib = bytes[so.data.clone()].to_vec();
        let from = b"aoti_torch_get_dtype\0";
        let at = lib.windows(from.len()).position(|w| w == from).expect("the library imports aoti_torch_get_dtype");
        lib[at..at + from.len()].copy_from_slice(b"aoti_torch_get_dtypX\0");
        replace_member(&mut bytes, so, &lib);
        std::fs::write(pkg("torch-version"), bytes).unwrap();
    }
    // Outputs that break the kind's contract: 10 logits, but 11 labels.
    let labels = std::fs::read_to_string(cnn.join("labels.txt")).unwrap();
    std::fs::write(dir.join("contract/labels.txt"), format!("{labels}ten\n")).unwrap();
    // A max_batch_size beyond the package's declared range.
    patch_metadata(&pkg("batch-range"), |m| {
        m.insert("dlserve.batch_max".into(), json!("16"));
    });
    // A config whose items do not have the shape the package was exported for.
    edit_config(&dir, "shape", "input_shape = [1, 28, 28]", "input_shape = [1, 32, 32]");

    let s = start_in(dir.clone(), Some(tmp), &[]).await;
    let models: serde_json::Value = s.get("/models").await.json().await.unwrap();
    let error_of = |name: &str| -> String {
        let m = models["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
        assert_eq!(m["state"], "failed", "{name}: {m}");
        m["last_error"].as_str().unwrap().to_string()
    };
    let expect = [
        ("corrupt", vec!["corrupt/1/model.pt2", "not a loadable .pt2 package", "not a ZIP archive"]),
        ("truncated", vec!["truncated/1/model.pt2", "truncated"]),
        ("for-cuda", vec!["compiled for cuda", "device is cpu"]),
        ("isa", isa_reason),
        ("torch-version", vec!["not a loadable .pt2 package", "undefined symbol: aoti_torch_get_dtypX"]),
        ("contract", vec!["contract check", "model.pt2"]),
        ("batch-range", vec!["max_batch_size is 32", "at most 16"]),
        ("shape", vec!["exported for items of shape [B, 1, 28, 28]", "[1, 32, 32]"]),
    ];
    for (name, parts) in expect {
        let e = error_of(name);
        for p in parts {
            assert!(e.contains(p), "{name}: {p:?} not in {e:?}");
        }
    }
    let ready = s.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body.to_string().contains("compiled for cuda"), "{body}");
    // The good package serves.
    let row = vec![0.0; 30];
    let r = s.post_json("/anomaly", json!({"model": "cancer-ae", "rows": [row]})).await;
    assert_eq!(r.status(), 200);
    // Failed loads leave nothing behind: not the library that would not open (unpacked before
    // dlopen failed), and no package copy but the live cancer-ae's two (forward and encode).
    assert_eq!(unpacked_with(b"aoti_torch_get_dtypX"), Vec::<PathBuf>::new());
    assert_eq!(copies().len(), 2, "{:?}", copies());
}

/// Unpacked packages (anywhere the loader unpacks) with a file containing `marker`: packages
/// this test marked, so that what other tests' processes unpack meanwhile is not counted.
fn unpacked_with(marker: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in aoti::unpacked_dirs() {
        let mut stack = vec![d.clone()];
        while let Some(p) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&p) else { continue };
            for e in rd.filter_map(|e| e.ok()) {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read(&path).is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker)) {
                    found.push(d.clone());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// This process's private package copies.
fn copies() -> Vec<String> {
    let prefix = format!("dlserve-{}-", std::process::id());
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_static_batch_package_is_served_unbatched() {
    // Declared through the metadata as a batch of exactly 1.
    let (_tmp, dir) = repo(&["digits-cnn"], true);
    patch_metadata(&dir.join("digits-cnn/1/model.pt2"), |m| {
        m.insert("dlserve.batch_max".into(), json!("1"));
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let s = start_in(dir, None, &[]).await;
        assert_eq!(s.get("/health/ready").await.status(), 200);
        let models: serde_json::Value = s.get("/models").await.json().await.unwrap();
        let v = &models["models"][0]["versions"][0];
        assert_eq!(v["batched"], false, "{v}");
        assert_eq!(v["max_batch_size"], 1);
        let (png, _) = digit_pngs().remove(0);
        let r = s.post_png("/classify", png).await;
        assert_eq!(r.status(), 200);
    });
}

#[test]
fn load_and_unload_do_not_grow_memory_or_leave_files() {
    // A copy marked with this process's id, to find what its loaders unpack.
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("TMPDIR", tmp.path());
    let pkg = tmp.path().join("model.pt2");
    std::fs::copy(shipped_models().join("digits-cnn/1/model.pt2"), &pkg).unwrap();
    let marker = format!("test-{:08}", std::process::id());
    patch_metadata(&pkg, |m| {
        m.insert("dlserve.source".into(), json!(marker));
    });
    let item = vec![ItemTensor::f32(vec![1, 28, 28], vec![0.5; 784])];
    let cycle = || {
        let e = aoti::Aoti::open(&pkg, tch::Device::Cpu, &ReplicaPrep::default(), &item).unwrap();
        let mut r = e.replica().unwrap();
        r.enter_thread(Some(1));
        let batch: Vec<&[ItemTensor]> = (0..8).map(|_| item.as_slice()).collect();
        let out = r.forward(&batch).unwrap();
        assert_eq!(out.len(), 8);
        assert_eq!(unpacked_with(marker.as_bytes()).len(), 1, "a live replica's unpacked package is found");
        drop(r);
        e.release_memory();
    };
    for _ in 0..5 {
        cycle();
    }
    let rss0 = rss_bytes();
    for _ in 0..40 {
        cycle();
    }
    let grown = rss_bytes() as f64 - rss0 as f64;
    assert!(grown < 24e6, "RSS grew {:.1} MB over 40 load/unload cycles", grown / 1e6);
    assert_eq!(unpacked_with(marker.as_bytes()), Vec::<PathBuf>::new(), "every unpacked package was removed");
    assert_eq!(copies(), Vec::<String>::new(), "every package copy was removed");
}

#[test]
fn the_intra_op_setting_reaches_the_package_kernels() {
    let pkg = shipped_models().join("digits-cnn/1/model.pt2");
    let item = vec![ItemTensor::f32(vec![1, 28, 28], vec![0.5; 784])];
    let e = aoti::Aoti::open(&pkg, tch::Device::Cpu, &ReplicaPrep::default(), &item).unwrap();
    let mut r = e.replica().unwrap();
    // The kernels are OpenMP loops without a fixed count (cpp.dynamic_threads), so they use the
    // OpenMP runtime's count for this thread, which is what the replica sets. There must be one
    // OpenMP runtime in the process: the package's library resolves to libtorch's.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let gomp: std::collections::BTreeSet<&str> =
        maps.lines().filter(|l| l.contains("libgomp")).filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(gomp.len(), 1, "one OpenMP runtime: {gomp:?}");
    // SAFETY: looks up a function of the loaded OpenMP runtime by name.
    let omp_max: extern "C" fn() -> i32 = unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"omp_get_max_threads".as_ptr());
        assert!(!f.is_null());
        std::mem::transmute(f)
    };
    for n in [1usize, 2, 3] {
        assert_eq!(r.enter_thread(Some(n)), n);
        assert_eq!(omp_max(), n as i32);
        let batch: Vec<&[ItemTensor]> = (0..4).map(|_| item.as_slice()).collect();
        assert_eq!(r.forward(&batch).unwrap().len(), 4);
    }
    // The generated kernels do not fix a thread count.
    let bytes = std::fs::read(&pkg).unwrap();
    for m in zip_members(&bytes).unwrap().iter().filter(|m| m.name.ends_with(".cpp")) {
        let src = String::from_utf8_lossy(&bytes[m.data.clone()]);
        assert!(!src.contains("num_threads("), "{} fixes its thread count", m.name);
    }
}

#[test]
fn a_forward_with_items_of_another_shape_is_refused_not_run() {
    let pkg = shipped_models().join("digits-cnn/1/model.pt2");
    let item = vec![ItemTensor::f32(vec![1, 28, 28], vec![0.5; 784])];
    let e = aoti::Aoti::open(&pkg, tch::Device::Cpu, &ReplicaPrep::default(), &item).unwrap();
    let mut r = e.replica().unwrap();
    let other = vec![ItemTensor::f32(vec![1, 28, 27], vec![0.5; 28 * 27])];
    let err = r.forward(&[other.as_slice()]).unwrap_err();
    assert!(err.to_string().contains("exported for items of shape [B, 1, 28, 28]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pt2_model_reloads_under_load_without_failing_a_request() {
    // New version directories holding only a model.pt2 are picked up by a reload, served, and the
    // old versions' loaders (and their unpacked files) go away.
    let (tmp, dir) = repo(&["cancer-ae"], true);
    let s = std::sync::Arc::new(start_in(dir, Some(tmp), &["--admin-token", "t0ken"]).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (s, stop) = (s.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = s.post_json("/anomaly", json!({"rows": [vec![1.0; 30]]})).await;
                if r.status() == 200 {
                    ok += 1;
                    seen.insert(r.headers()["x-model-version"].to_str().unwrap().to_string());
                } else {
                    failed += 1;
                }
            }
            (ok, failed, seen)
        }));
    }
    for v in 2..=3 {
        copy_dir(&s.dir.join("cancer-ae/1"), &s.dir.join(format!("cancer-ae/{v}")));
        let r = s.client.post(s.url("/models/cancer-ae/reload")).bearer_auth("t0ken").send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
    for h in load {
        let (o, f, s2) = h.await.unwrap();
        ok += o;
        failed += f;
        seen.extend(s2);
    }
    assert_eq!(failed, 0, "no request fails during swaps ({ok} succeeded)");
    assert!(seen.contains("3"), "the newest version served: {seen:?}");
    let v = s.registry.resolve("cancer-ae", None).unwrap();
    assert_eq!((v.version, v.engine), (3, "aoti"));
}
