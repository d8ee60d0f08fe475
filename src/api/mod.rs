//! The HTTP API: one module per resource, each handler beside its request and response types.
//! Routes are registered with utoipa-axum's `routes!`, so a route cannot exist without its
//! OpenAPI entry. The domain endpoints share one pipeline ([`pipeline`]); each handler only parses,
//! calls it, and responds. Two routers, each with its own error shape: the domain one and `/v2`.

pub mod anomaly;
pub mod classify;
pub mod complete;
pub mod denoise;
pub mod detect;
pub mod embed;
pub mod error;
pub mod forecast;
pub mod generate;
pub mod grpc;
pub mod health;
pub mod images;
pub mod middleware;
pub mod models;
pub mod pipeline;
pub mod triton;
pub mod ui;
pub mod v2;

use crate::batching::{Deadline, Timing};
use crate::kinds::Kind;
use crate::metrics::Metrics;
use crate::registry::{LoadedVersion, Registry};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use error::{ApiError, ErrorType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request limits, all documented in `--help` and the OpenAPI descriptions.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest image in pixels.
    pub max_image_pixels: u64,
    /// Most items per request.
    pub max_items: usize,
    /// Deadline when the request sets none.
    pub default_deadline: Duration,
    /// Largest deadline a request may set.
    pub max_deadline: Duration,
    /// Largest body in bytes.
    pub body_limit: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_pixels: 4096 * 4096,
            max_items: 256,
            default_deadline: Duration::from_secs(10),
            max_deadline: Duration::from_secs(60),
            body_limit: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything the handlers share.
pub struct App {
    /// Loaded models.
    pub registry: Arc<Registry>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Request limits.
    pub limits: Limits,
    /// Admin bearer token; admin routes are off when `None`.
    pub admin_token: Option<String>,
    /// Configured default model per kind name.
    pub default_models: HashMap<&'static str, String>,
    /// CORS origins; empty = off.
    pub cors_origins: Vec<String>,
    /// Set once shutdown begins: readiness fails and new requests are refused.
    pub draining: AtomicBool,
    /// Memory that image decoding may hold at once, across requests.
    pub decode_budget: images::DecodeBudget,
    /// Where the pages are read from instead of the built-in copies (`--ui-dir`).
    pub ui_dir: Option<std::path::PathBuf>,
    /// OpenTelemetry traces, when `--otlp-endpoint` is set.
    pub tracer: Option<Arc<crate::traces::Tracer>>,
}

/// The axum state: a cheap clone of the shared app.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// When the request reached the server (set by the middleware); deadlines count from here.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);

/// Extractor for the request's inference deadline (see [`App::deadline`]).
pub struct RequestDeadline(pub Deadline);

impl axum::extract::FromRequestParts<AppState> for RequestDeadline {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        state.deadline(&parts.headers, &parts.extensions).map(RequestDeadline)
    }
}

/// Header naming the model that served a response.
pub static MODEL_HEADER: HeaderName = HeaderName::from_static("x-model-name");
/// Header naming the version that served a response.
pub static VERSION_HEADER: HeaderName = HeaderName::from_static("x-model-version");
/// Request header that sets the inference deadline in milliseconds.
pub static DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-deadline-ms");

impl App {
    /// Resolves the model for an endpoint of kind `K`: the named one (checked to be of that
    /// kind), the configured default, or the only one of that kind; with its section, typed.
    pub fn pick<K: Kind>(
        &self,
        model: Option<&str>,
        version: Option<u64>,
    ) -> Result<(Arc<LoadedVersion>, Arc<K::Config>), ApiError> {
        let v = self.pick_model(K::NAME, model, version)?;
        // The kind's name matched; its section is of its type.
        match v.config.section::<K>() {
            Some(cfg) => Ok((v, cfg)),
            None => Err(ApiError::internal(format!("model '{}' has no {} section", v.name, K::NAME))),
        }
    }

    fn pick_model(
        &self,
        kind: &str,
        model: Option<&str>,
        version: Option<u64>,
    ) -> Result<Arc<LoadedVersion>, ApiError> {
        let name = match model.filter(|m| !m.is_empty()) {
            Some(m) => m.to_string(),
            None => match self.default_models.get(kind) {
                Some(d) => d.clone(),
                None => {
                    let mut candidates = self.registry.serving_of_kind(kind);
                    let marked =
                        self.registry.serving_where(|v| v.kind() == kind && v.config.manifest.default_for_kind);
                    match candidates.len() {
                        1 => candidates.remove(0),
                        _ if marked.len() == 1 => marked[0].clone(),
                        0 => return Err(ApiError::new(ErrorType::NotFound, format!("no {kind} model is loaded"))),
                        _ => {
                            return Err(ApiError {
                                field: Some("model".into()),
                                ..ApiError::new(
                                    ErrorType::ModelRequired,
                                    format!(
                                        "model: several {kind} models are loaded ({}); name one (or mark one default_for_kind = true)",
                                        candidates.join(", ")
                                    ),
                                )
                            })
                        }
                    }
                }
            },
        };
        let v = self.registry.resolve(&name, version)?;
        if v.kind() != kind {
            return Err(ApiError {
                field: Some("model".into()),
                ..ApiError::new(
                    ErrorType::WrongKind,
                    format!("model: '{name}' is a {} model; this endpoint serves {kind} models", v.kind()),
                )
            });
        }
        Ok(v)
    }

    /// The inference deadline: the `x-deadline-ms` header (or the default), counted from the
    /// request's arrival as recorded by the middleware.
    pub fn deadline(&self, headers: &HeaderMap, extensions: &axum::http::Extensions) -> Result<Deadline, ApiError> {
        let start = extensions.get::<Arrival>().map_or_else(std::time::Instant::now, |a| a.0);
        self.deadline_from(headers, start)
    }

    /// The inference deadline of `x-deadline-ms` in `headers` (or the default), counted from `start`.
    pub fn deadline_from(&self, headers: &HeaderMap, start: std::time::Instant) -> Result<Deadline, ApiError> {
        let Some(v) = headers.get(&DEADLINE_HEADER) else {
            return Ok(Deadline::from(start, self.limits.default_deadline));
        };
        let max = self.limits.max_deadline.as_millis() as u64;
        let ms = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).filter(|ms| (1..=max).contains(ms));
        ms.map(|ms| Deadline::from(start, Duration::from_millis(ms))).ok_or_else(|| {
            ApiError::invalid("x-deadline-ms", format!("must be an integer number of milliseconds from 1 to {max}"))
        })
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether the server is ready: not draining, and every configured model ready.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.registry.not_ready().is_empty()
    }

    /// Refuses a request at once, before its body is parsed, when the queue it must go to is
    /// already full: under overload a request bound for 429 should not first pay for parsing a
    /// large JSON body. Applies when one model of `kind` with one version is serving (any other
    /// layout is checked after parsing, when the target is known); while that queue is full, a
    /// request with a bad body gets the 429 too.
    pub fn refuse_early_if_full(&self, kind: &str) -> Result<(), ApiError> {
        match self.registry.sole_version_of_kind(kind) {
            Some(v) => v.batcher.has_room(1).map_err(|e| ApiError::from(e).for_model(&v)),
            None => Ok(()),
        }
    }

    /// Checks an item count against the per-request limit.
    pub fn check_items(&self, field: &str, n: usize) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::invalid(field, "is empty; send at least one item"));
        }
        if n > self.limits.max_items {
            return Err(ApiError::invalid(
                field,
                format!("has {n} items; at most {} per request", self.limits.max_items),
            ));
        }
        Ok(())
    }
}

/// Headers every inference response carries: who served it and where the time went.
pub fn served_headers(v: &LoadedVersion, timings: &[Timing]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MODEL_HEADER.clone(), HeaderValue::from_str(&v.name).unwrap_or(HeaderValue::from_static("invalid")));
    h.insert(VERSION_HEADER.clone(), HeaderValue::from(v.version));
    let queue = timings.iter().map(|t| t.queue).max().unwrap_or_default();
    let compute = timings.iter().map(|t| t.compute).max().unwrap_or_default();
    let batch = timings.iter().map(|t| t.batch_size).max().unwrap_or_default();
    let st = format!(
        "queue;dur={:.3}, compute;dur={:.3}, batch;desc=\"{}\"",
        queue.as_secs_f64() * 1e3,
        compute.as_secs_f64() * 1e3,
        batch
    );
    if let Ok(v) = HeaderValue::from_str(&st) {
        h.insert(HeaderName::from_static("server-timing"), v);
    }
    h
}

/// The `model` and `version` a request names.
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelSelector {
    /// Model name; when omitted, the kind's default model (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dlserve",
        description = "HTTP model server for PyTorch models (TorchScript and torch.export packages): CNN classifiers (`POST /classify`), LSTM forecasters (`POST /forecast`), autoencoder anomaly scorers (`POST /anomaly`), GAN generators (`GET /generate`), detectors (`POST /detect`), denoisers (`POST /denoise`), encoders (`POST /embed`) and recurrent language models (`POST /complete`, streamed as Server-Sent Events), with dynamic batching and continuous batching of decoding steps, and the Open Inference Protocol (KServe V2) under `/v2`.\n\nEvery non-2xx response outside `/v2` has the body `{\"error\": {\"type\", \"message\", \"field\"}}`; under `/v2` it is `{\"error\": \"...\"}` as the protocol prescribes. Inference responses carry `x-model-name`, `x-model-version` and `Server-Timing` (queue and compute milliseconds). The `x-deadline-ms` request header sets the inference deadline.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "inference", description = "The domain endpoints, one per kind of model"),
        (name = "models", description = "Model registry and admin"),
        (name = "operations", description = "Health, metrics and API description"),
        (name = "v2", description = "Open Inference Protocol (KServe V2) REST API")
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The domain, registry and operations routes with their OpenAPI entries (errors in the domain shape).
pub fn domain_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(classify::classify))
        .routes(routes!(forecast::forecast))
        .routes(routes!(anomaly::anomaly))
        .routes(routes!(generate::generate))
        .routes(routes!(detect::detect))
        .routes(routes!(denoise::denoise))
        .routes(routes!(embed::embed))
        .routes(routes!(complete::complete))
        .routes(routes!(models::list_models))
        .routes(routes!(models::get_model))
        .routes(routes!(models::load_model))
        .routes(routes!(models::unload_model))
        .routes(routes!(models::reload_model))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document the code generates (what `/openapi.json` serves and `openapi/` holds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routers().2
}

/// Both routers, unwrapped, and the OpenAPI document of all their routes.
fn routers() -> (axum::Router<AppState>, axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (domain, mut doc) = domain_router().split_for_parts();
    let (v2, v2_doc) = v2::router().split_for_parts();
    doc.merge(v2_doc);
    (domain, v2, doc)
}

/// Every route, each router wrapped in the layers of its own error shape, plus `/openapi.json`
/// and the 404 for unknown paths (in the shape of the router owning the prefix).
pub fn routes(state: &AppState) -> axum::Router<AppState> {
    let (domain, v2, doc) = routers();
    let doc = Arc::new(doc);
    let domain = domain
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(ui::router());
    middleware::error_layers(domain, state, error::ErrorFormat::Domain)
        .merge(middleware::error_layers(v2, state, error::ErrorFormat::V2))
        .fallback(middleware::not_found)
}

/// Refuses a body that is not declared as JSON (415).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if essence.is_empty() {
        Err(ApiError::new(ErrorType::UnsupportedMediaType, "missing Content-Type; expected application/json"))
    } else {
        Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            format!("Content-Type {essence} is not accepted; expected application/json"),
        ))
    }
}
