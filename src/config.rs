//! Server configuration: every setting is a CLI flag and a `DLSERVE_*` environment variable.
//! The doc comments below are the `--help` text.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// dlserve: serve TorchScript CNN classifiers, LSTM forecasters, autoencoder anomaly scorers and
/// GAN generators over HTTP, with dynamic batching on the GPU or CPU.
#[derive(Debug, Clone, Parser)]
#[command(name = "dlserve", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "DLSERVE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Connections the kernel may queue before the server accepts them (the kernel caps it at
    /// net.core.somaxconn). Too small a queue resets connections when many open at once.
    #[arg(long, env = "DLSERVE_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Seconds a connection may take to send a request's headers, counted from when it is ready
    /// for one (a new connection, or a kept-alive one after its response); then it is closed.
    #[arg(long, env = "DLSERVE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Seconds a connection with no request in flight may stay silent before the server closes
    /// it (HTTP/1.1 keep-alive and HTTP/2 alike).
    #[arg(long, env = "DLSERVE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Most open connections; past it, new ones wait in the listen backlog until one closes
    /// (the accept loop never spins on "too many open files"). 0 = the open-files limit minus 256.
    #[arg(long, env = "DLSERVE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// TLS certificate chain (PEM, leaf first) for the listening port; with `--tls-key`, the
    /// port speaks only TLS (HTTPS, HTTP/2 and gRPC through ALPN). Off when unset.
    #[arg(long, env = "DLSERVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) matching `--tls-cert`.
    #[arg(long, env = "DLSERVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// With TLS, look for a changed certificate or key file every N seconds and load it for new
    /// connections (SIGHUP always reloads); 0 = only on SIGHUP.
    #[arg(long, env = "DLSERVE_TLS_RELOAD_SECS", default_value_t = 10)]
    pub tls_reload_secs: u64,

    /// Model repository: one directory per model with config.toml and <version>/model.pt.
    #[arg(long, env = "DLSERVE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// Default device for models whose config names none: auto, cpu, cuda or cuda:N.
    /// `auto` picks cuda:0 when libtorch sees a GPU. An explicit cuda without a GPU fails start-up.
    #[arg(long, env = "DLSERVE_DEVICE", default_value = "auto")]
    pub device: String,

    /// libtorch intra-op threads per forward, for models whose config sets none; 0 = cores / the
    /// sum of `instances` over all model configs (at least 1).
    #[arg(long, env = "DLSERVE_INTRA_OP_THREADS", default_value_t = 0)]
    pub intra_op_threads: usize,

    /// libtorch inter-op threads (used by TorchScript fork/wait only).
    #[arg(long, env = "DLSERVE_INTER_OP_THREADS", default_value_t = 1)]
    pub inter_op_threads: usize,

    /// Largest request body, in bytes.
    #[arg(long, env = "DLSERVE_BODY_LIMIT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Largest image, in pixels (width x height), checked from the header before decoding.
    #[arg(long, env = "DLSERVE_MAX_IMAGE_PIXELS", default_value_t = 4096 * 4096)]
    pub max_image_pixels: u64,

    /// Memory image decoding may hold at once across all requests, in MiB (24 bytes per decoded
    /// pixel, reserved from the image headers before decoding). 0: an eighth of physical memory,
    /// between 256 MiB and 4 GiB.
    #[arg(long, env = "DLSERVE_DECODE_BUDGET_MB", default_value_t = 0)]
    pub decode_budget_mb: u64,

    /// How long a request waits for room in the decode budget before a 429, in milliseconds.
    #[arg(long, env = "DLSERVE_DECODE_WAIT_MS", default_value_t = 1000)]
    pub decode_wait_ms: u64,

    /// Most items (images, rows, series) one request may carry.
    #[arg(long, env = "DLSERVE_MAX_ITEMS_PER_REQUEST", default_value_t = 256)]
    pub max_items_per_request: usize,

    /// Whole-request timeout, in milliseconds (HTTP layer, every route).
    #[arg(long, env = "DLSERVE_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,

    /// Inference deadline when a request sets none, in milliseconds.
    #[arg(long, env = "DLSERVE_DEFAULT_DEADLINE_MS", default_value_t = 10_000)]
    pub default_deadline_ms: u64,

    /// Largest deadline a request may ask for with the `x-deadline-ms` header, in milliseconds.
    #[arg(long, env = "DLSERVE_MAX_DEADLINE_MS", default_value_t = 60_000)]
    pub max_deadline_ms: u64,

    /// Bearer token for the admin routes (load, unload, reload). Admin routes are off without it.
    #[arg(long, env = "DLSERVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Look for new or changed model versions every N seconds; 0 turns polling off.
    #[arg(long, env = "DLSERVE_POLL_MODELS_SECS", default_value_t = 0)]
    pub poll_models_secs: u64,

    /// Default model per kind when a request names none, as kind=name (repeatable or comma-separated).
    /// Not needed when only one model of a kind is loaded.
    #[arg(long, env = "DLSERVE_DEFAULT_MODELS", value_delimiter = ',')]
    pub default_model: Vec<String>,

    /// Allowed CORS origins (comma-separated, or * for any). CORS is off when empty.
    #[arg(long, env = "DLSERVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Longest time to finish in-flight requests after SIGTERM/SIGINT, in seconds.
    #[arg(long, env = "DLSERVE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Serve the playground and docs pages (`/`, `/docs`, `/ui/...`) from this directory, read on every
    /// request, instead of the copies built into the binary (for working on the pages).
    #[arg(long, env = "DLSERVE_UI_DIR")]
    pub ui_dir: Option<std::path::PathBuf>,

    /// Export OpenTelemetry traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is added). Off when unset. Sampling follows
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default: parentbased_always_on).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The full OTLP/HTTP URL for traces, used as is (overrides `--otlp-endpoint`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,

    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "dlserve")]
    pub otel_service_name: String,

    /// Log format; the level filter comes from RUST_LOG (default info).
    #[arg(long, env = "DLSERVE_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

impl Args {
    /// Splits the `kind=name` pairs of `--default-model` (the kinds are checked by the server).
    pub fn default_models(&self) -> Result<Vec<(String, String)>, String> {
        self.default_model
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let (k, n) = s.split_once('=').ok_or_else(|| format!("--default-model '{s}': expected kind=name"))?;
                Ok((k.trim().to_string(), n.trim().to_string()))
            })
            .collect()
    }

    /// The connection limit: explicit, or the process's open-files limit less 256 descriptors for
    /// model files, logs and the listener (at least 16).
    pub fn max_connections(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
        (soft.min(1 << 20) as usize).saturating_sub(256).max(16)
    }

    /// The intra-op thread rule: explicit value, or cores / the worker threads of all models (at
    /// least 1), so that the workers together never run more compute threads than there are
    /// cores. Oversubscribing was measured to be costly even when only one model is busy, once
    /// the others have run (BENCHMARKS.md, "Threads per model").
    pub fn intra_op_threads_for(&self, total_instances: usize) -> usize {
        if self.intra_op_threads > 0 {
            return self.intra_op_threads;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / total_instances.max(1)).max(1)
    }
}
