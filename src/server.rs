//! Start-up wiring, written once: `main` and the tests both build the server here. Parsed
//! arguments become a checked device, a loaded registry with the thread rule applied before any
//! worker starts, the HTTP state, the optional poller, and the router with its layers.

use crate::api::{self, App, AppState, Limits};
use crate::config::Args;
use crate::device::{device_name, DeviceSpec};
use crate::registry::{Registry, RegistryOptions};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// A built server: its registry loaded and its HTTP state ready to serve.
pub struct Server {
    /// The shared HTTP state.
    pub state: AppState,
    /// The loaded models.
    pub registry: Arc<Registry>,
    /// The intra-op threads chosen for models whose config sets none.
    pub intra_op_threads: usize,
}

impl Server {
    /// Checks the arguments, applies the thread settings, and loads every model. Blocking (model
    /// loads run libtorch): call it before the runtime serves, or from `spawn_blocking`. A model
    /// that fails to load is logged and reported by `/models`; the others serve.
    pub fn build(args: &Args) -> anyhow::Result<Server> {
        let device = DeviceSpec::parse(&args.device).map_err(|m| anyhow::anyhow!("--device: {m}"))?;
        // An explicit CUDA device that is not there is a start-up error, not a per-model failure.
        let resolved = device.resolve().map_err(|m| anyhow::anyhow!("--device {}: {m}", args.device))?;
        if !args.models_dir.is_dir() {
            anyhow::bail!("--models-dir {}: not a directory", args.models_dir.display());
        }
        let default_models = default_models(args)?;
        crate::engine::set_inter_op_threads(args.inter_op_threads);
        let metrics = crate::metrics::Metrics::new();
        let registry = Arc::new(Registry::new(
            RegistryOptions { root: args.models_dir.clone(), default_device: device },
            metrics.clone(),
        ));
        let mut intra = 0;
        let results = registry.load_all_with(|instances| {
            intra = args.intra_op_threads_for(instances);
            crate::engine::set_default_intra_op_threads(intra);
        });
        for (name, result) in results {
            if let Err(e) = result {
                tracing::error!(model = %name, error = %e, "model not served");
            }
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            cuda_available = tch::Cuda::is_available(),
            cuda_devices = tch::Cuda::device_count(),
            default_device = %device_name(resolved),
            intra_op_threads = intra,
            inter_op_threads = args.inter_op_threads.max(1),
            "models loaded"
        );
        let state = AppState(Arc::new(App {
            registry: registry.clone(),
            metrics,
            limits: Limits {
                max_image_pixels: args.max_image_pixels,
                max_items: args.max_items_per_request.max(1),
                default_deadline: Duration::from_millis(args.default_deadline_ms.max(1)),
                max_deadline: Duration::from_millis(args.max_deadline_ms.max(args.default_deadline_ms).max(1)),
                body_limit: args.body_limit_bytes,
                request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            },
            admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
            default_models,
            cors_origins: args.cors_origins.iter().filter(|o| !o.is_empty()).cloned().collect(),
            draining: Default::default(),
        }));
        Ok(Server { state, registry, intra_op_threads: intra })
    }

    /// Starts the thread that picks up new or changed model directories every `every`.
    pub fn start_poller(&self, every: Duration) -> std::io::Result<()> {
        let reg = self.registry.clone();
        std::thread::Builder::new().name("dlserve-poll".into()).spawn(move || loop {
            std::thread::sleep(every);
            for (name, r) in reg.poll_once() {
                match r {
                    Ok(()) => tracing::info!(model = %name, "picked up a change on disk"),
                    Err(e) => tracing::error!(model = %name, error = %e, "change on disk failed to load; previous version keeps serving"),
                }
            }
        })?;
        Ok(())
    }
}

/// `--default-model kind=name` pairs, each kind checked against the registered kinds.
fn default_models(args: &Args) -> anyhow::Result<HashMap<&'static str, String>> {
    let mut out = HashMap::new();
    for (kind, name) in args.default_models().map_err(anyhow::Error::msg)? {
        let Some(def) = crate::kinds::KINDS.iter().find(|k| k.name == kind) else {
            anyhow::bail!(
                "--default-model {kind}={name}: unknown kind '{kind}'; use one of {}",
                crate::kinds::names().join(", ")
            );
        };
        out.insert(def.name, name);
    }
    Ok(out)
}

/// The whole HTTP application: routes, OpenAPI document and middleware.
pub fn app(state: AppState) -> Router {
    let router = api::routes(&state);
    let x_request_id = HeaderName::from_static("x-request-id");
    let cors = if state.cors_origins.is_empty() {
        None
    } else {
        let origins = if state.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(state.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers(tower_http::cors::Any)
                .expose_headers(tower_http::cors::Any),
        )
    };
    // Outer to inner: request id, span, id on the response, CORS, compression; then each
    // router's own error layers (api::middleware::error_layers).
    router
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(api::middleware::sanitize_request_id))
                .layer(SetRequestIdLayer::new(x_request_id.clone(), api::middleware::MakeId))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(api::middleware::make_span)
                        .on_response(api::middleware::on_response),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .option_layer(cors)
                .layer(compression()),
        )
        .with_state(state)
}

/// Responses smaller than this are sent uncompressed: for a few hundred bytes of JSON, gzip
/// saves little on the wire and was about 15% of the server's CPU at 5k req/s on `/anomaly`
/// (profile in BENCHMARKS.md).
pub const COMPRESS_MIN_BYTES: u16 = 1024;

/// gzip for responses of at least [`COMPRESS_MIN_BYTES`] when the client accepts it, at the
/// fastest level (the server is usually CPU-bound, the network rarely), never for images.
fn compression() -> CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    use tower_http::CompressionLevel;
    let when = SizeAbove::new(COMPRESS_MIN_BYTES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    CompressionLayer::new().quality(CompressionLevel::Fastest).compress_when(when)
}

/// Binds a listening socket on `addr` with room for `backlog` connections not yet accepted.
///
/// `TcpListener::bind` queues only 128. When hundreds of clients connect at once and the
/// runtime is busy, the rest overflow the queue, and some are reset after SYN cookies fail
/// (seen as client "connection error"s in STRESS.md). The kernel caps `backlog` at
/// net.core.somaxconn.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: readiness turns 503, new
/// requests are refused, and in-flight ones finish, bounded by `drain_timeout`. Returns whether
/// the drain finished in time.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<bool> {
    let app = app(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        st.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutdown requested: draining in-flight requests");
        let _ = tx.send(());
    };
    let server = axum::serve(listener, app.into_make_service()).with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    // Start the drain clock only once shutdown has begun.
    let _ = rx.await;
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(Ok(r)) => r.map(|_| true),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => {
            tracing::warn!(
                drain_timeout_secs = drain_timeout.as_secs(),
                "drain timeout reached; exiting with requests still in flight"
            );
            Ok(false)
        }
    }
}
