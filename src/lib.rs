//! dlserve: an HTTP model server for TorchScript models.
//!
//! `main` parses [`config::Args`], builds the [`registry::Registry`], and calls [`serve`]. Tests
//! build the same [`app`] and talk to it over real HTTP.

// ApiError is large (message, field, model) but only built on the error path; boxing it would
// complicate every `?` for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod batching;
pub mod config;
pub mod kinds;
pub mod metrics;
pub mod registry;
pub mod telemetry;

use api::{App, AppState, Limits};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use registry::config::Kind;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Builds the shared state from parsed arguments and a registry.
pub fn state_from_args(
    args: &config::Args,
    registry: Arc<registry::Registry>,
    metrics: metrics::Metrics,
) -> Result<AppState, String> {
    let default_models: HashMap<Kind, String> = args.default_models()?.into_iter().collect();
    Ok(AppState(Arc::new(App {
        registry,
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
    })))
}

/// The whole HTTP application: routes, OpenAPI document and middleware.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = api::router().split_for_parts();
    let openapi = Arc::new(openapi);
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), api::middleware::record));
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
    let body_limit = state.limits.body_limit;
    router
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), api::middleware::MakeId))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(api::middleware::make_span)
                        .on_response(api::middleware::on_response),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(axum::middleware::from_fn(api::middleware::error_shape))
                .layer(CatchPanicLayer::custom(api::middleware::panic_response))
                .layer(axum::middleware::from_fn_with_state(state.clone(), api::middleware::guard))
                .option_layer(cors)
                .layer(compression())
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
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

/// Allocations below this size come from glibc's arenas, not from a fresh `mmap` each.
pub const MALLOC_MMAP_THRESHOLD: usize = 32 << 20;
/// An arena returns memory to the OS only when more than this is free at its top.
pub const MALLOC_TRIM_THRESHOLD: usize = 64 << 20;

/// Keeps glibc from handing a forward's tensor memory back to the OS after every batch.
///
/// libtorch allocates CPU tensors with `posix_memalign`. With glibc's defaults, an arena whose
/// top holds more than twice the largest recently freed block is trimmed, so each forward's
/// activations (3 MB per layer for the CNN at batch 32) were faulted in and zeroed again on
/// every batch: `inprocess` ran the CNN at batch 32 at half the rate of batch 8, and at 1.5-2x
/// that rate with these settings (BENCHMARKS.md, "The allocator and channels-last"). The price
/// is RSS: each arena keeps up to [`MALLOC_TRIM_THRESHOLD`] of freed memory for reuse.
/// Unloading a version still trims explicitly. Does nothing when any of glibc's
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_` variables is set (the
/// operator's choice wins), or off glibc. Call it first thing in `main`, before any thread
/// starts. Returns whether it changed the settings.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let operator_set = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if operator_set {
            return false;
        }
        // SAFETY: mallopt only changes the allocator's tuning parameters; no allocation is touched.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD as i32) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD as i32) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
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
