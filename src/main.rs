//! parse config → init telemetry → build the server (device, threads, models) → serve → drain.

use clap::Parser;
use dlserve::config::Args;
use dlserve::server::Server;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let allocator_tuned = dlserve::tune_allocator();
    let args = Args::parse();
    dlserve::telemetry::init(args.log_format);
    let started = Instant::now();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), allocator_tuned, "starting dlserve");
    let tls = dlserve::tls::Tls::from_args(&args).map_err(anyhow::Error::msg)?;
    let server = Server::build(&args)?;
    let registry = server.registry.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = dlserve::bind(args.addr, args.listen_backlog)?;
        tracing::info!(addr = %listener.local_addr()?, startup_ms = started.elapsed().as_millis() as u64, "listening");
        if args.poll_models_secs > 0 {
            server.start_poller(Duration::from_secs(args.poll_models_secs))?;
        }
        let limits = dlserve::server::ConnLimits::from_args(&args);
        tracing::info!(
            max_connections = limits.max_connections,
            header_read_timeout_secs = limits.header_read_timeout.as_secs(),
            idle_timeout_secs = limits.idle_timeout.as_secs(),
            "connection limits"
        );
        if let Some(tls) = &tls {
            tls.spawn_reloader(Duration::from_secs(args.tls_reload_secs))?;
            tracing::info!(
                cert = ?args.tls_cert,
                sha256 = %tls.fingerprint(),
                reload_secs = args.tls_reload_secs,
                "TLS on: HTTPS, HTTP/2 and gRPC over TLS only; SIGHUP reloads the certificate"
            );
        }
        let drain = Duration::from_secs(args.drain_timeout_secs);
        let drained =
            dlserve::serve(listener, server.state, limits, tls, dlserve::server::shutdown_signal(), drain).await?;
        tracing::info!(drained, "stopped");
        anyhow::Ok(())
    })?;
    // Close every queue and let the workers end: their engines remove what they unpacked into the
    // temporary directory (.pt2 packages) when dropped, which an exit before them would leave behind.
    registry.close();
    rt.shutdown_timeout(Duration::from_secs(2));
    let left = dlserve::batching::wait_for_worker_threads(Duration::from_secs(10));
    if left > 0 {
        tracing::warn!(worker_threads = left, "exiting with worker threads still running after 10 s");
    }
    Ok(())
}
