//! parse config → init telemetry → load registry → serve → drain.

use clap::Parser;
use dlserve::config::Args;
use dlserve::registry::device::DeviceSpec;
use dlserve::registry::{Registry, RegistryOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let allocator_tuned = dlserve::tune_allocator();
    let args = Args::parse();
    dlserve::telemetry::init(args.log_format);
    let started = Instant::now();
    let device = DeviceSpec::parse(&args.device).map_err(|m| anyhow::anyhow!("--device: {m}"))?;
    // An explicit CUDA device that is not there is a start-up error, not a per-model failure.
    let resolved = device.resolve().map_err(|m| anyhow::anyhow!("--device {}: {m}", args.device))?;
    if !args.models_dir.is_dir() {
        anyhow::bail!("--models-dir {}: not a directory", args.models_dir.display());
    }
    let intra = args.intra_op_threads_for(total_instances(&args));
    dlserve::batching::set_default_intra_op_threads(intra);
    tch::set_num_interop_threads(args.inter_op_threads.max(1) as i32);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        cuda_available = tch::Cuda::is_available(),
        cuda_devices = tch::Cuda::device_count(),
        default_device = %dlserve::registry::device::device_name(resolved),
        intra_op_threads = intra,
        inter_op_threads = args.inter_op_threads.max(1),
        allocator_tuned,
        "starting dlserve"
    );
    let metrics = dlserve::metrics::Metrics::new();
    let registry = Arc::new(Registry::new(
        RegistryOptions { root: args.models_dir.clone(), default_device: device },
        metrics.clone(),
    ));
    for (name, result) in registry.load_all() {
        if let Err(e) = result {
            tracing::error!(model = %name, error = %e, "model not served");
        }
    }
    let state = dlserve::state_from_args(&args, registry.clone(), metrics).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = dlserve::bind(args.addr, args.listen_backlog)?;
        tracing::info!(addr = %listener.local_addr()?, startup_ms = started.elapsed().as_millis() as u64, "listening");
        if args.poll_models_secs > 0 {
            let reg = registry.clone();
            let every = Duration::from_secs(args.poll_models_secs);
            std::thread::Builder::new().name("dlserve-poll".into()).spawn(move || loop {
                std::thread::sleep(every);
                for (name, r) in reg.poll_once() {
                    match r {
                        Ok(()) => tracing::info!(model = %name, "picked up a change on disk"),
                        Err(e) => tracing::error!(model = %name, error = %e, "change on disk failed to load; previous version keeps serving"),
                    }
                }
            })?;
        }
        let drained = dlserve::serve(listener, state, shutdown_signal(), Duration::from_secs(args.drain_timeout_secs)).await?;
        tracing::info!(drained, "stopped");
        anyhow::Ok(())
    })?;
    Ok(())
}

/// The worker threads of every model config on disk (the sum of their `instances`), for the
/// thread rule.
fn total_instances(args: &Args) -> usize {
    let Ok(rd) = std::fs::read_dir(&args.models_dir) else { return 1 };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("config.toml")).ok())
        .filter_map(|t| dlserve::registry::config::ModelConfig::parse(&t, "-").ok())
        .map(|c| c.batching.instances)
        .sum::<usize>()
        .max(1)
}

async fn shutdown_signal() {
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
