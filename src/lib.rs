//! dlserve: an HTTP model server for PyTorch models.
//!
//! Modules are layered; every `use crate::...` points down this list (tests/layers.rs checks it):
//!
//! | layer | modules |
//! |---|---|
//! | 0 (leaves) | [`tensor`], [`device`], [`metrics`], [`config`], [`npz`] |
//! | 1 | [`manifest`], [`telemetry`], [`tls`], [`traces`] |
//! | 2 | [`engine`], [`kinds`] |
//! | 3 | [`batching`] |
//! | 4 | [`registry`] |
//! | 5 | [`decoding`] |
//! | 6 | [`api`] |
//! | 7 | [`server`] |
//!
//! `main` parses [`config::Args`] and runs [`server::Server::build`]; the tests start the very
//! same builder and talk to it over real HTTP.

// ApiError is large (message, field, model) but only built on the error path; boxing it would
// complicate every `?` for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod batching;
pub mod config;
pub mod decoding;
pub mod device;
pub mod engine;
pub mod kinds;
pub mod manifest;
pub mod metrics;
pub mod npz;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod tensor;
pub mod tls;
pub mod traces;

pub use server::{app, bind, serve};

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
