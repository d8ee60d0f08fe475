//! The in-process limit: raw forward throughput of one model at batch sizes 1, 2, 4, … up to its
//! `max_batch_size`, with the same thread settings, stacking and splitting as the workers — no
//! HTTP, no queue. Served throughput is compared against this in BENCHMARKS.md.
//!
//! Usage: inprocess --models-dir models --model digits-cnn [--seconds 2] [--device cpu]
//!        [--intra-op-threads N] [--max-batch N] [--format auto|torchscript|pt2]
//! Prints one JSON object per batch size.

use dlserve::device::DeviceSpec;
use dlserve::engine::ReplicaPrep;
use dlserve::kinds::ModelConfig;
use dlserve::manifest::ModelFormat;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> anyhow::Result<()> {
    dlserve::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(arg(&args, "--models-dir").unwrap_or_else(|| "models".into()));
    let model = arg(&args, "--model").ok_or_else(|| anyhow::anyhow!("--model NAME is required"))?;
    let seconds: f64 = arg(&args, "--seconds").map(|s| s.parse()).transpose()?.unwrap_or(2.0);
    let device =
        DeviceSpec::parse(&arg(&args, "--device").unwrap_or_else(|| "auto".into())).map_err(anyhow::Error::msg)?;
    let device = device.resolve().map_err(anyhow::Error::msg)?;
    let cfg = ModelConfig::load(&dir.join(&model).join("config.toml"), &format!("{model}/config.toml"))?;
    let batching = cfg.manifest.batching.for_device(device);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let intra: usize = arg(&args, "--intra-op-threads")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(batching.intra_op_threads.unwrap_or((cores / batching.instances).max(1)));
    dlserve::engine::set_default_intra_op_threads(intra);
    dlserve::engine::set_inter_op_threads(1);
    let max_batch: usize = arg(&args, "--max-batch").map(|s| s.parse()).transpose()?.unwrap_or(batching.max_batch_size);
    let mut versions: Vec<u64> =
        std::fs::read_dir(dir.join(&model))?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    versions.sort_unstable();
    let v = versions.last().ok_or_else(|| anyhow::anyhow!("no version directory"))?;
    let prep = ReplicaPrep {
        memory_format: cfg.manifest.memory_format,
        setup_method: cfg.manifest.setup_method.clone(),
        method: None,
    };
    let format = match arg(&args, "--format").as_deref() {
        None => cfg.manifest.format,
        Some("auto") => ModelFormat::Auto,
        Some("torchscript") => ModelFormat::Torchscript,
        Some("pt2") => ModelFormat::Pt2,
        Some(other) => anyhow::bail!("--format {other}: expected auto, torchscript or pt2"),
    };
    // The first warm-up item: a forecaster's shortest context.
    let item = cfg.kind.warmup_items().swap_remove(0);
    let engine = dlserve::engine::open(&dir.join(&model).join(v.to_string()), device, format, prep, &item)
        .map_err(anyhow::Error::msg)?;
    let mut replica = engine.replica().map_err(anyhow::Error::msg)?;
    replica.enter_thread(Some(intra));
    let mut b = 1;
    while b <= max_batch {
        let batch: Vec<&[dlserve::tensor::ItemTensor]> = (0..b).map(|_| item.as_slice()).collect();
        for _ in 0..3 {
            replica.forward(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let t0 = Instant::now();
        let mut n = 0usize;
        while t0.elapsed() < Duration::from_secs_f64(seconds) {
            replica.forward(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
            n += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"model": model, "engine": engine.name(), "device": dlserve::device::device_name(device), "intra_op_threads": intra,
                "batch_size": b, "forwards": n, "items_per_s": (n * b) as f64 / secs, "ms_per_batch": secs * 1e3 / n as f64})
        );
        if b == max_batch {
            break;
        }
        b = (b * 2).min(max_batch);
    }
    Ok(())
}
