//! Defects found by hostile and newcomer testing, each as a test: transparent drawings, model
//! errors that kept their cause, readiness after a failed hot-add, overflowing scores, compressed
//! bodies, request ids, echoed names, byte-order marks, huge image headers, empty model files,
//! escaping symlinks and deleted model directories.
mod common;
use common::*;
use serde_json::json;
use std::io::Write;

const TOKEN: &str = "hostile-admin";

fn auth(s: &Server, path: &str) -> reqwest::RequestBuilder {
    s.client.post(s.url(path)).header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn a_drawing_on_a_transparent_canvas_is_classified_as_on_white() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&shipped_models().join("digits-cnn"), &tmp.path().join("digits-cnn"));
    let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    let mut right = 0;
    for (file, label) in [("004_label2.png", "2"), ("006_label3.png", "3"), ("014_label7.png", "7")] {
        // The digit's strokes in black, everything else transparent: what an HTML canvas exports.
        let digit = image::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/digits").join(file))
            .unwrap()
            .to_luma8();
        let rgba = image::RgbaImage::from_fn(digit.width(), digit.height(), |x, y| {
            image::Rgba([0, 0, 0, digit.get_pixel(x, y).0[0]])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(rgba)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let b: serde_json::Value = s.post_png("/classify", png).await.json().await.unwrap();
        let got = &b["results"][0];
        assert_eq!(got["inverted"], true, "{file}: the background reads as white paper");
        if got["label"] == label {
            right += 1;
        }
    }
    assert_eq!(right, 3, "the three transparent drawings are read as their digits");
}

#[tokio::test]
async fn a_load_error_keeps_the_models_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&shipped_models().join("digits-cgan"), &tmp.path().join("digits-cgan"));
    // The TorchScript file: a package's inputs are checked before it runs (tests/aoti.rs).
    std::fs::remove_file(tmp.path().join("digits-cgan/1/model.pt2")).unwrap();
    edit_config(tmp.path(), "digits-cgan", "latent_dim = 64", "latent_dim = 31");
    let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    let m: serde_json::Value = s.get("/models/digits-cgan").await.json().await.unwrap();
    let e = m["last_error"].as_str().unwrap();
    assert!(e.contains("mat1 and mat2 shapes cannot be multiplied"), "the cause is named: {e}");
    assert!(e.contains("warm-up"), "{e}");
}

#[tokio::test]
async fn a_failed_hot_add_is_reported_without_making_the_server_unready() {
    let s = start(&["tiny-anomaly"], &["--admin-token", TOKEN]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    copy_dir(&fixtures().join("corrupt"), &s.dir.join("late"));
    let r = auth(&s, "/models/late/load").send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(s.get("/health/ready").await.status(), 200, "the models it should serve all serve");
    let m: serde_json::Value = s.get("/models/late").await.json().await.unwrap();
    assert_eq!(m["state"], "failed");
    assert!(m["last_error"].as_str().unwrap().contains("late/1/model.pt"), "{m}");
    assert_eq!(s.post_json("/anomaly", json!({"rows": [[1, 2, 3]]})).await.status(), 200);
    // An empty model file says so.
    copy_dir(&fixtures().join("tiny-anomaly"), &s.dir.join("empty"));
    std::fs::write(s.dir.join("empty/1/model.pt"), b"").unwrap();
    auth(&s, "/models/empty/load").send().await.unwrap();
    let m: serde_json::Value = s.get("/models/empty").await.json().await.unwrap();
    assert!(m["last_error"].as_str().unwrap().contains("the file is empty"), "{m}");
}

#[tokio::test]
async fn a_startup_model_that_fails_still_keeps_readiness_off() {
    let s = start(&["tiny-anomaly", "corrupt"], &[]).await;
    let r = s.get("/health/ready").await;
    assert_eq!(r.status(), 503);
    let b: serde_json::Value = r.json().await.unwrap();
    assert!(b["not_ready"][0].as_str().unwrap().starts_with("corrupt"), "{b}");
}

#[tokio::test]
async fn a_score_beyond_f32_is_a_finite_number() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let r = s.post_json("/anomaly", json!({"rows": [[1e20, 0, 0]]})).await;
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().await.unwrap();
    let score = b["results"][0]["score"].as_f64().expect("a number, not null");
    assert!(score > 1e38 && score.is_finite(), "{score}");
    assert_eq!(b["results"][0]["is_anomaly"], true);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_decompressed_within_the_body_limit() {
    let s = start(&["tiny-anomaly"], &["--body-limit-bytes", "100000"]).await;
    let body = br#"{"rows": [[1, 2, 3]]}"#;
    let post = |bytes: Vec<u8>, enc: &'static str| {
        s.client
            .post(s.url("/anomaly"))
            .header("content-type", "application/json")
            .header("content-encoding", enc)
            .body(bytes)
            .send()
    };
    assert_eq!(post(gzip(body), "gzip").await.unwrap().status(), 200);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body).unwrap();
    assert_eq!(post(z.finish().unwrap(), "deflate").await.unwrap().status(), 200);
    let (st, _, _, _) = error_of(post(body.to_vec(), "br").await.unwrap()).await;
    assert_eq!(st, 415, "an encoding the server does not decode is refused, not read as plain");
    // 10 MB of spaces compress to about 10 KB: the decompressed size is what the limit counts.
    let bomb = gzip(&vec![b' '; 10_000_000]);
    assert!(bomb.len() < 100_000);
    let (st, ty, _, _) = error_of(post(bomb, "gzip").await.unwrap()).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"));
    // V2 over gzip, as tritonclient's request_compression_algorithm sends it.
    let v2 = json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let r = s
        .client
        .post(s.url("/v2/models/tiny-anomaly/infer"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(v2.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn request_ids_names_and_labels_are_kept_in_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-classifier"), &tmp.path().join("tiny-classifier"));
    let labels = tmp.path().join("tiny-classifier/labels.txt");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, format!("\u{feff}{text}")).unwrap();
    let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    let v = s.registry.resolve("tiny-classifier", None).unwrap();
    assert!(!v.labels[0].starts_with('\u{feff}'), "no byte-order mark in the first label: {:?}", v.labels[0]);
    // A client id is echoed when it is short and plain; otherwise a fresh one is made.
    let r = s.client.get(s.url("/health/live")).header("x-request-id", "trace-42.a:b").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.a:b");
    for bad in ["x".repeat(10_000), "forged\tlevel=ERROR msg=fake".to_string()] {
        let r = s.client.get(s.url("/health/live")).header("x-request-id", bad.as_str()).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 16, "replaced by a fresh id: {id}");
    }
    let long = "a".repeat(10_000);
    let (st, _, msg, _) = error_of(s.get(&format!("/models/{long}")).await).await;
    assert!(st == 404 || st == 422, "{st}");
    assert!(msg.len() < 300, "the name is not echoed whole ({} characters)", msg.len());
}

/// One PNG chunk with its length and CRC.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG whose header claims `w` x `h` 8-bit grey pixels, with a token data chunk (valid CRCs).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    out.extend(chunk(b"IHDR", &ihdr));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0u8; 64]).unwrap();
    out.extend(chunk(b"IDAT", &z.finish().unwrap()));
    out.extend(chunk(b"IEND", &[]));
    out
}

#[tokio::test]
async fn huge_image_headers_get_413() {
    let s = start(&["tiny-classifier"], &[]).await;
    for (w, h) in [(i32::MAX as u32, 1), (65_535, 65_535)] {
        let (st, ty, msg, _) = error_of(s.post_png("/classify", png_header(w, h)).await).await;
        assert_eq!((st, ty.as_str()), (413, "payload_too_large"), "{w}x{h}: {msg}");
    }
}

#[tokio::test]
async fn symlinks_out_of_the_repository_and_deleted_directories_are_named() {
    let outside = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-anomaly"), &outside.path().join("m"));
    let s = start(&["tiny-anomaly"], &["--admin-token", TOKEN]).await;
    std::os::unix::fs::symlink(outside.path().join("m"), s.dir.join("escape")).unwrap();
    let (st, _, msg, _) = error_of(auth(&s, "/models/escape/load").send().await.unwrap()).await;
    assert_eq!(st, 422);
    assert!(msg.contains("resolves outside the models directory"), "{msg}");
    // A serving model whose directory is deleted keeps serving, and a reload says why it failed.
    std::fs::remove_dir_all(s.dir.join("tiny-anomaly")).unwrap();
    let (st, _, msg, _) = error_of(auth(&s, "/models/tiny-anomaly/reload").send().await.unwrap()).await;
    assert_eq!(st, 422);
    assert!(msg.contains("directory is gone"), "{msg}");
    assert_eq!(s.post_json("/anomaly", json!({"rows": [[1, 2, 3]]})).await.status(), 200);
}

/// Reads from a raw socket until the server closes it or `limit` passes; returns when it closed.
async fn closed_within(mut sock: tokio::net::TcpStream, limit: std::time::Duration) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_silent_and_idle_connections_are_closed_and_the_connection_cap_holds() {
    use tokio::io::AsyncWriteExt;
    let s = start(
        &["tiny-anomaly"],
        &["--header-read-timeout-secs", "1", "--idle-timeout-secs", "5", "--max-connections", "8"],
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // A client that drips a partial header and then stops.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    // A client that connects and sends nothing.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A kept-alive connection after its response.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // All three by the header-read timeout (1 s), well before the idle timeout (5 s): a silent
    // connection too, although hyper's own timer only starts at a request's first byte.
    let limit = std::time::Duration::from_secs(8);
    let (a, b, c) = tokio::join!(closed_within(slow, limit), closed_within(silent, limit), closed_within(kept, limit));
    for (what, t) in [("partial headers", a), ("silent", b), ("idle keep-alive", c)] {
        let t = t.unwrap_or_else(|| panic!("{what}: the server closed it"));
        assert!(t < std::time::Duration::from_secs(3), "{what}: closed after {t:?}");
    }
    // Eight idle sockets take every slot; a ninth client waits in the backlog instead of failing,
    // and is served once the idle ones are closed.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    let r = s.client.get(s.url("/health/live")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300), "it waited for a slot: {:?}", t0.elapsed());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decoding_is_bounded_by_the_decode_budget() {
    // 64 MiB at 24 bytes per pixel: one 1024x1024 image (24 MiB) fits twice, a 2048x2048 one never.
    let s = start(&["tiny-classifier"], &["--decode-budget-mb", "64", "--decode-wait-ms", "5000"]).await;
    let (st, ty, msg, field) = error_of(s.post_png("/classify", png(2048, 2048, |x, _| (x % 256) as u8)).await).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"), "{msg}");
    assert!(msg.contains("decode budget of 64 MiB") && msg.contains("96 MiB"), "{msg}");
    assert_eq!(field.as_deref(), Some("body"), "the raw request body is the image");
    // Twelve at once: the budget holds two decodes; the rest wait their turn (5 s) and all succeed.
    let big = png(1024, 1024, |x, y| ((x ^ y) % 256) as u8);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (c, url, body) = (s.client.clone(), s.url("/classify"), big.clone());
        tasks.push(tokio::spawn(async move {
            c.post(url).header("content-type", "image/png").body(body).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.state.decode_budget.in_use_bytes(), 0, "every reservation was given back");
}

#[tokio::test]
async fn a_gif_frame_larger_than_its_screen_is_refused_naming_both() {
    // A 28x28 logical screen holding one frame that declares 65535x65535.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[28, 0, 28, 0, 0x00, 0, 0]);
    gif.extend_from_slice(&[0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80]);
    gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    gif.extend_from_slice(&[2, 2, 0x4c, 0x01, 0, 0x3b]);
    let s = start(&["tiny-classifier"], &[]).await;
    let r = s.client.post(s.url("/classify")).header("content-type", "image/gif").body(gif).send().await.unwrap();
    let (st, ty, msg, _) = error_of(r).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"), "{msg}");
    assert!(msg.contains("28x28") && msg.contains("frame or chunk"), "{msg}");
}

#[tokio::test]
async fn requests_the_http_parser_refuses_get_the_json_error_shape_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(&["tiny-classifier"], &[]).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let raw = |req: Vec<u8>| {
        let addr = addr.clone();
        async move {
            let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            sock.write_all(&req).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(10), sock.read_to_end(&mut out))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    let many: String = (0..150).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let cases = [
        (format!("GET /health/live HTTP/1.1\r\nhost: x\r\n{many}\r\n"), "431", "at most 100 header fields"),
        (
            "POST /anomaly HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}".to_string(),
            "400",
            "conflicting Content-Length",
        ),
        ("GET /health/live HTTP/1.1\r\nho st: x\r\n\r\n".to_string(), "400", "malformed"),
    ];
    for (req, status, part) in cases {
        let resp = raw(req.into_bytes()).await;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "bad_request", "{body}");
        assert!(v["error"]["message"].as_str().unwrap().contains(part), "{body}");
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
        assert_eq!(len, body.len(), "the length header matches the body");
    }
    assert_eq!(s.get("/health/live").await.status(), 200, "and the server serves on");
}
