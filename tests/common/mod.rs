//! Test harness: starts the real server on an ephemeral port over a temporary copy of the
//! fixture models (or the shipped ones) and gives a reqwest client for it.
#![allow(dead_code)]

use clap::Parser;
use dlserve::config::Args;
use dlserve::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub registry: Arc<Registry>,
    pub state: dlserve::api::AppState,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

pub fn shipped_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Replaces the first `from` in `<root>/<model>/config.toml` with `to`: a config variant for one
/// test, on a copy of the fixture.
pub fn edit_config(root: &Path, model: &str, from: &str, to: &str) {
    let cfg = root.join(model).join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(from), "{}: no {from:?}", cfg.display());
    std::fs::write(&cfg, text.replacen(from, to, 1)).unwrap();
}

/// Starts a server over copies of the named fixture models, with extra CLI flags.
pub async fn start(models: &[&str], flags: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(&fixtures().join(m), &tmp.path().join(m));
    }
    let dir = tmp.path().to_path_buf();
    start_in(dir, Some(tmp), flags).await
}

/// Starts a server over an existing models directory (not copied), built exactly as `main`
/// builds it (`Server::build`), with one intra-op thread unless the flags say otherwise.
pub async fn start_in(dir: PathBuf, tmp: Option<tempfile::TempDir>, flags: &[&str]) -> Server {
    let mut argv = vec!["dlserve", "--models-dir", dir.to_str().unwrap()];
    if !flags.contains(&"--intra-op-threads") {
        argv.extend_from_slice(&["--intra-op-threads", "1"]);
    }
    argv.extend_from_slice(flags);
    let args = Args::parse_from(argv);
    let built = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || dlserve::server::Server::build(&args)).await.unwrap().unwrap()
    };
    let (registry, state) = (built.registry.clone(), built.state.clone());
    let tls = dlserve::tls::Tls::from_args(&args).unwrap();
    let listener = dlserve::bind("127.0.0.1:0".parse().unwrap(), args.listen_backlog).unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    tokio::spawn(async move {
        let _ = dlserve::serve(
            listener,
            st,
            dlserve::server::ConnLimits::from_args(&args),
            tls,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        )
        .await;
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    Server { base, client, dir, registry, state, _tmp: tmp, stop: Some(stop) }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(&body).send().await.unwrap()
    }

    /// Posts a body as is with `content-type: application/json` (for malformed or non-standard JSON).
    pub async fn post_raw_json(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.client.post(self.url(path)).header("content-type", "application/json").body(body).send().await.unwrap()
    }

    /// Posts a PNG file as a raw image body (how `/classify` is called in most tests).
    pub async fn post_png(&self, path: &str, png: Vec<u8>) -> reqwest::Response {
        self.client.post(self.url(path)).header("content-type", "image/png").body(png).send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// The value of one Prometheus series (0 when absent).
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Asserts the error shape and returns (status, type, message, field).
pub async fn error_of(resp: reqwest::Response) -> (u16, String, String, Option<String>) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    let e = &body["error"];
    assert!(e.is_object(), "error shape: {body}");
    (
        status,
        e["type"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
        e["field"].as_str().map(String::from),
    )
}

/// An 8-bit grayscale PNG.
pub fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::ImageBuffer::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
