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
        let tracer = tracer(args)?;
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
            decode_budget: crate::api::images::DecodeBudget::new(
                if args.decode_budget_mb > 0 {
                    args.decode_budget_mb << 20
                } else {
                    crate::api::images::DecodeBudget::default_bytes()
                },
                Duration::from_millis(args.decode_wait_ms),
            ),
            ui_dir: args.ui_dir.clone(),
            tracer,
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
/// The OpenTelemetry exporter, when an endpoint is configured (its errors name the flag or variable).
fn tracer(args: &Args) -> anyhow::Result<Option<Arc<crate::traces::Tracer>>> {
    let (endpoint, exact) = match (&args.otlp_traces_endpoint, &args.otlp_endpoint) {
        (Some(e), _) if !e.trim().is_empty() => (e.clone(), true),
        (_, Some(e)) if !e.trim().is_empty() => (e.clone(), false),
        _ => return Ok(None),
    };
    let var = |k: &str| std::env::var(k).ok();
    let sampler = crate::traces::Sampler::from_env(
        var("OTEL_TRACES_SAMPLER").as_deref(),
        var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )
    .map_err(|m| anyhow::anyhow!(m))?;
    let t = crate::traces::Tracer::start(&endpoint, exact, &args.otel_service_name, sampler)
        .map_err(|m| anyhow::anyhow!(m))?;
    tracing::info!(endpoint = %endpoint, ?sampler, service = %args.otel_service_name, "exporting OpenTelemetry traces");
    Ok(Some(t))
}

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
    with_layers(api::routes(&state), state)
}

/// `router` wrapped in the middleware every request passes through before its router's own
/// error layers. The bench's HTTP floor (examples/http_floor.rs) wraps its fixed answer in it.
pub fn with_layers(router: Router<AppState>, state: AppState) -> Router {
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
/// (profile in BENCHMARKS.md). At 1 KiB the forecaster's 1,031-byte answer was still gzipped,
/// and deflate with its zeroed tables (memset, malloc) was about 15 % of the server's CPU on
/// `/forecast` (issue 24's profile) to save 560 bytes; under 4 KiB the saving is a packet or two.
pub const COMPRESS_MIN_BYTES: u16 = 4096;

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

/// Connection limits of [`serve`]: see `--header-read-timeout-secs`, `--idle-timeout-secs` and
/// `--max-connections`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to send a request's headers once the connection is ready for one.
    pub header_read_timeout: Duration,
    /// Silence allowed on a connection with no request in flight.
    pub idle_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

impl ConnLimits {
    /// The limits the arguments ask for.
    pub fn from_args(args: &Args) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            max_connections: args.max_connections(),
        }
    }
}

/// HTTP/2 streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Serves `app` on `listener` until `shutdown` resolves, then drains: readiness turns 503, new
/// requests are refused, and in-flight ones finish, bounded by `drain_timeout`. Returns whether
/// the drain finished in time.
///
/// Each connection is served by hyper with a timer, so slow or silent clients are closed: headers
/// must arrive within `header_read_timeout`, and a connection with no request in flight is
/// closed after `idle_timeout` of silence. At most `max_connections` are open; the accept loop
/// waits for a free slot (new connections queue in the kernel's backlog) and backs off on accept
/// errors such as EMFILE instead of spinning. With `tls`, each connection first completes a TLS
/// handshake within `header_read_timeout` (on its own task, holding its slot), or is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<bool> {
    let app = app(state.clone());
    serve_app(listener, state, app, limits, tls, shutdown, drain_timeout).await
}

/// [`serve`] with an application of the caller's (the bench's HTTP floor); the same connection
/// handling, limits and drain.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    state: AppState,
    app: Router,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<bool> {
    let conns = Conns { app, grpc: api::grpc::routes(&state), limits, builder: Arc::new(http_builder(&limits)) };
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait for descriptors to free up rather than spin.
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (conns, watcher) = (conns.clone(), graceful.watcher());
        match &tls {
            None => {
                tokio::spawn(async move {
                    conns.serve(stream, watcher).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    match tokio::time::timeout(conns.limits.header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => conns.serve(stream, watcher).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake not done within the header-read timeout"),
                    }
                    drop(permit);
                });
            }
        }
    }
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!("shutdown requested: draining in-flight requests");
    drop(listener);
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => Ok(true),
        Err(_) => {
            tracing::warn!(
                drain_timeout_secs = drain_timeout.as_secs(),
                "drain timeout reached; exiting with requests still in flight"
            );
            Ok(false)
        }
    }
}

/// hyper's HTTP/1.1 and HTTP/2 settings for every connection.
fn http_builder(limits: &ConnLimits) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// What serving one connection needs, shared by every connection.
#[derive(Clone)]
struct Conns {
    app: Router,
    grpc: tonic::service::Routes,
    limits: ConnLimits,
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
}

impl Conns {
    /// Serves one connection (plain TCP, or TLS after its handshake) until it ends, goes idle or
    /// stays silent, watched by the graceful drain.
    async fn serve<S>(self, stream: S, watcher: hyper_util::server::graceful::Watcher)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let io = hyper_util::rt::TokioIo::new(Tracked { inner: stream, activity: activity.clone(), replacing: None });
        let svc = {
            let (app, grpc) = (self.app, self.grpc);
            let activity = activity.clone();
            // One port for both protocols: gRPC (HTTP/2, `application/grpc`) goes to tonic, the
            // rest to the axum app.
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let guard = activity.begin();
                let (app, grpc) = (app.clone(), grpc.clone());
                async move {
                    let res = if api::grpc::is_grpc(&req) {
                        tower::ServiceExt::oneshot(grpc, req).await.map(|r| r.map(axum::body::Body::new))
                    } else {
                        tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await
                    };
                    drop(guard);
                    res
                }
            })
        };
        let conn = watcher.watch(self.builder.serve_connection_with_upgrades(io, svc).into_owned());
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = activity.idle_for(self.limits.idle_timeout) => {
                // Silent with nothing in flight: close it (a graceful close on HTTP/2).
                tracing::debug!("closing an idle connection");
            }
            _ = activity.silent_for(self.limits.header_read_timeout) => {
                tracing::debug!("closing a connection that sent nothing within the header-read timeout");
            }
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are in flight.
#[derive(Default)]
struct Activity {
    last_ms: std::sync::atomic::AtomicU64,
    /// Whether the client has sent any byte yet.
    spoke: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
    /// Resolves when the client has sent nothing at all within `limit` of the accept. hyper's
    /// header-read timer starts with the first byte of a request, so without this a connection
    /// that never speaks would hold its slot until the idle timeout.
    async fn silent_for(&self, limit: Duration) {
        tokio::time::sleep(limit).await;
        if self.spoke.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
    /// Resolves once the connection has had nothing in flight and no traffic for `idle`.
    async fn idle_for(&self, idle: Duration) {
        self.touch();
        loop {
            let quiet = Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)));
            if self.in_flight.load(Ordering::SeqCst) == 0 && quiet >= idle {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(quiet).max(Duration::from_millis(50))).await;
        }
    }
}

/// A request in flight on its connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that records when it last moved bytes, and gives hyper's own parse-error responses
/// the JSON error body every other non-2xx response has.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A replacement response being written: its bytes, how many are written, and the length of
    /// the buffer it stands for (reported to hyper once all of it is written).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

/// hyper answers a request it cannot parse itself, before any service sees it, with an empty
/// 400 (malformed request line or headers, conflicting `Content-Length`s) or 431 (more than 100
/// header fields, or headers beyond its read buffer), always closing the connection. Such a
/// response written in one piece is recognised here (a handler's 400 always has a JSON body, so
/// never `content-length: 0`) and replaced with the same status and headers plus a JSON body.
pub fn parser_error_replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let (status, ty, message) = if buf.starts_with(b"HTTP/1.1 400 Bad Request\r\n") {
        (
            "400 Bad Request",
            "bad_request",
            "the request could not be parsed as HTTP/1.1: a malformed request line or header, or conflicting \
             Content-Length headers",
        )
    } else if buf.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") {
        (
            "431 Request Header Fields Too Large",
            "bad_request",
            "the request's headers are too large: at most 100 header fields, and about 400 KB of headers",
        )
    } else {
        return None;
    };
    let text = std::str::from_utf8(buf).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    lines.next();
    let headers: Vec<&str> = lines.collect();
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let body = serde_json::json!({"error": {"type": ty, "message": message}}).to_string();
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for h in headers.iter().filter(|h| !h.to_ascii_lowercase().starts_with("content-length:")) {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    Some(out.into_bytes())
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            self.activity.spoke.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(bytes) = parser_error_replacement(buf) {
                self.replacing = Some((bytes, 0, buf.len()));
            }
        }
        if let Some((bytes, mut done, stands_for)) = self.replacing.take() {
            while done < bytes.len() {
                match std::pin::Pin::new(&mut self.inner).poll_write(cx, &bytes[done..]) {
                    std::task::Poll::Ready(Ok(0)) => return std::task::Poll::Ready(Ok(0)),
                    std::task::Poll::Ready(Ok(n)) => {
                        done += n;
                        self.activity.touch();
                    }
                    std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                    std::task::Poll::Pending => {
                        // hyper polls again with the same buffer; carry on from here then.
                        self.replacing = Some((bytes, done, stands_for));
                        return std::task::Poll::Pending;
                    }
                }
            }
            return std::task::Poll::Ready(Ok(stands_for));
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the start of a graceful stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
