//! The bench's HTTP floor (issue 24 point 3; `make bench`, scripts/bench-floor): dlserve's whole
//! request path with no model behind it. It takes the same flags as `dlserve`, builds the same
//! server (models, limits, connection handling, drain) and the same middleware stack (request id,
//! span, compression, the domain router's error, guard and record layers), and adds one route,
//! `POST /floor`, which reads the body through the same limits and answers a fixed small JSON.
//! Its maximum rate is the per-request ceiling of this HTTP stack on a machine: a model endpoint
//! can serve at most that, and the gap between the two is what the model's own work costs.
//!
//! Not in the release router: this is an example binary, built only by the bench.
//!
//! `cargo build --release --example http_floor`, then
//! `target/release/examples/http_floor --addr 127.0.0.1:18490 --models-dir <empty dir>`.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use clap::Parser;
use dlserve::api::error::ErrorFormat;
use dlserve::api::middleware::error_layers;
use dlserve::config::Args;
use dlserve::server::{serve_app, with_layers, ConnLimits, Server};
use std::time::Duration;

/// The answer: fixed, about the size of a small model's (`/anomaly` sends 300-500 bytes).
const ANSWER: &str = r#"{"model":"floor","version":1,"results":[{"score":0.0,"threshold":1.0,"is_anomaly":false}]}"#;

async fn floor(headers: HeaderMap, body: Bytes) -> axum::response::Response {
    // The same refusal a JSON endpoint gives, so the floor does the checks a request must pass.
    if let Err(e) = dlserve::api::require_json(&headers) {
        return e.render(ErrorFormat::Domain);
    }
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], ANSWER).into_response();
    r.headers_mut().insert("x-floor-bytes", body.len().into());
    r
}

fn main() -> anyhow::Result<()> {
    dlserve::tune_allocator();
    let args = Args::parse();
    dlserve::telemetry::init(args.log_format);
    let server = Server::build(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = dlserve::bind(args.addr, args.listen_backlog)?;
        let state = server.state.clone();
        let floor =
            error_layers(axum::Router::new().route("/floor", axum::routing::post(floor)), &state, ErrorFormat::Domain);
        let app = with_layers(dlserve::api::routes(&state).merge(floor), state.clone());
        tracing::info!(addr = %listener.local_addr()?, "HTTP floor listening: POST /floor");
        let limits = ConnLimits::from_args(&args);
        serve_app(
            listener,
            state,
            app,
            limits,
            None,
            dlserve::server::shutdown_signal(),
            Duration::from_secs(args.drain_timeout_secs),
        )
        .await?;
        anyhow::Ok(())
    })
}
