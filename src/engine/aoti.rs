//! `torch.export` + AOTInductor packages (`model.pt2`) through libtorch's package loader.
//!
//! The loader itself is C++ (`AOTIModelPackageLoader`); `aoti_shim.cpp` gives it a C interface
//! whose errors are values, and this file wraps that in the [`Engine`] and [`Replica`] traits.
//!
//! A package's kernels are compiled code specialised at export time: a wrong input shape, dtype or
//! stride is not caught at run time (AOTInductor's own input checks are off unless an environment
//! variable is set, and in torch 2.11 they report a wrong batch range for some models), and a
//! kernel built for instructions the host lacks kills the process. So everything is checked before
//! the package's library is loaded: its device, its CPU instruction set, and the inputs its wrapper
//! was generated for (read from the wrapper's source inside the package) against the kind's items.
//! Batches are always sent contiguous, as they were exported.

use super::{
    release_memory, split_outputs, stack_inputs, BatchLimit, Engine, InferError, PerItem, Replica, ReplicaPrep,
};
use crate::manifest::MemoryFormat;
use crate::tensor::{Elem, ItemTensor};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tch::{Device, Tensor};

mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn dls_aoti_free_string(s: *mut c_char);
        pub fn dls_aoti_metadata(path: *const c_char, model: *const c_char, err: *mut *mut c_char) -> *mut c_char;
        pub fn dls_aoti_load(
            path: *const c_char,
            model: *const c_char,
            device_index: c_int,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn dls_aoti_drop(loader: *mut c_void);
        pub fn dls_aoti_run(
            loader: *mut c_void,
            inputs: *const *mut torch_sys::C_tensor,
            n_inputs: c_int,
            outputs: *mut *mut *mut torch_sys::C_tensor,
            n_outputs: *mut c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn dls_aoti_free_outputs(outputs: *mut *mut torch_sys::C_tensor);
    }
}

/// Takes a message the shim allocated (or none).
fn take_message(p: *mut c_char) -> String {
    if p.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns NUL-terminated strings from malloc; freed once, here.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { ffi::dls_aoti_free_string(p) };
    s
}

fn c_path(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| "the path holds a NUL byte".to_string())
}

/// The metadata AOTInductor stored for `model` in the package (`AOTI_DEVICE_KEY`, `AOTI_CPU_ISA`,
/// and whatever the exporter added under `aot_inductor.metadata`), read without loading it.
pub fn metadata(path: &Path, model: &str) -> Result<HashMap<String, String>, String> {
    let (p, m) = (c_path(path)?, CString::new(model).map_err(|_| "bad model name".to_string())?);
    let _turn = PACKAGE_IO.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::ptr::null_mut();
    // SAFETY: both strings outlive the call; the result and the error are taken once.
    let out = unsafe { ffi::dls_aoti_metadata(p.as_ptr(), m.as_ptr(), &mut err) };
    if out.is_null() {
        return Err(super::summarize(&take_message(err)));
    }
    Ok(take_message(out)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// libtorch's package loader is not safe to call from several threads at once: with models
/// loading in parallel, reading the metadata of two copies of one package at the same moment
/// returned the other copy's metadata about one start in twenty, and sometimes crashed the process
/// (tests/aoti.rs, `bad_packages_are_refused_with_a_reason_and_the_others_serve`). Every call into
/// it (metadata and loads) takes this turn.
static PACKAGE_IO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One loaded model of a package: its runner, constants and unpacked files, freed on drop.
pub struct Loader {
    ptr: *mut c_void,
}

// SAFETY: a loader is used by one thread at a time (each replica is owned by one worker); libtorch
// ties nothing in it to the thread that created it.
unsafe impl Send for Loader {}

impl Loader {
    /// Unpacks and loads `model` of the package at `path` (`device_index` -1: the CPU, or the
    /// current CUDA device, as the package was compiled for).
    ///
    /// The loader unpacks the package into a new `/tmp/XXXXXX` directory and removes it when
    /// dropped, but a load that fails (a library that will not open) leaves it behind. So loads
    /// take turns, and after a failed one its directory is removed: the one the error names, else
    /// a directory that appeared meanwhile holding this very library (`library`: its name in the
    /// package and its bytes), never another process's.
    pub fn load(path: &Path, model: &str, device_index: i32, library: Option<(&str, &[u8])>) -> Result<Loader, String> {
        let (p, m) = (c_path(path)?, CString::new(model).map_err(|_| "bad model name".to_string())?);
        let _turn = PACKAGE_IO.lock().unwrap_or_else(|e| e.into_inner());
        // Not a listing of the unpack roots before the load: with thousands of entries in /tmp
        // that made every load slow (2.5 s -> 4.3 s to start 100 models). A failed load looks only
        // at directories made since it began.
        let began = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        let mut err = std::ptr::null_mut();
        // SAFETY: both strings outlive the call; the error is taken once.
        let ptr = unsafe { ffi::dls_aoti_load(p.as_ptr(), m.as_ptr(), device_index as c_int, &mut err) };
        if ptr.is_null() {
            let message = take_message(err);
            let named = named_unpack_dir(&message);
            let ours = |d: &PathBuf| {
                named.as_ref() == Some(d)
                    || library.is_some_and(|(name, bytes)| {
                        std::fs::read_dir(d).is_ok_and(|mut archives| {
                            archives.any(|a| {
                                a.is_ok_and(|a| {
                                    let lib = a.path().join("data/aotinductor").join(model).join(name);
                                    std::fs::metadata(&lib).is_ok_and(|md| md.len() == bytes.len() as u64)
                                        && std::fs::read(&lib).is_ok_and(|b| b == bytes)
                                })
                            })
                        })
                    })
            };
            let new_since = |d: &PathBuf| std::fs::metadata(d).and_then(|m| m.modified()).is_ok_and(|t| t >= began);
            for d in unpacked_dirs().iter().filter(|d| new_since(d) && ours(d)) {
                let _ = std::fs::remove_dir_all(d);
            }
            return Err(super::summarize(&message));
        }
        Ok(Loader { ptr })
    }

    /// Runs the flattened inputs; the outputs come back flattened too.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let ptrs: Vec<*mut torch_sys::C_tensor> = inputs.iter().map(|t| t.as_ptr() as *mut _).collect();
        let (mut out, mut n, mut err) = (std::ptr::null_mut(), 0 as c_int, std::ptr::null_mut());
        // SAFETY: the input pointers are live tch tensors (the shim copies the handles, never frees
        // them); on success the shim hands over `n` owned tensors in an array it allocated.
        let rc = unsafe { ffi::dls_aoti_run(self.ptr, ptrs.as_ptr(), ptrs.len() as c_int, &mut out, &mut n, &mut err) };
        if rc != 0 {
            return Err(take_message(err));
        }
        let tensors = (0..n as usize)
            // SAFETY: each element is a tensor allocated with `new`, owned from here on by tch.
            .map(|i| unsafe { Tensor::from_ptr(*out.add(i)) })
            .collect();
        unsafe { ffi::dls_aoti_free_outputs(out) };
        Ok(tensors)
    }
}

/// The `/tmp/XXXXXX` directory a loader error names (`Error in dlopen: /tmp/Ab12Cd/...`).
fn named_unpack_dir(message: &str) -> Option<PathBuf> {
    let at = message.find("/tmp/")?;
    let name: String = message[at + 5..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (name.len() == 6).then(|| PathBuf::from("/tmp").join(name))
}

/// Where the loader unpacks packages: libtorch 2.11 makes `/tmp/XXXXXX` whatever `TMPDIR` says
/// (observed: with `TMPDIR` set elsewhere the directories still appear in /tmp). Both are looked at.
pub fn unpack_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/tmp")];
    let tmp = std::env::temp_dir();
    if !roots.contains(&tmp) {
        roots.push(tmp);
    }
    roots
}

/// Directories that hold an unpacked package (`<root>/<dir>/<archive>/data/aotinductor`).
pub fn unpacked_dirs() -> std::collections::HashSet<PathBuf> {
    let mut out = std::collections::HashSet::new();
    for root in unpack_roots() {
        let Ok(rd) = std::fs::read_dir(root) else { continue };
        out.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|d| {
            d.is_dir()
                && std::fs::read_dir(d)
                    .map(|mut inner| inner.any(|a| a.is_ok_and(|a| a.path().join("data/aotinductor").is_dir())))
                    .unwrap_or(false)
        }));
    }
    out
}

impl Drop for Loader {
    fn drop(&mut self) {
        // The loader removes its unpacked directory here: in turn with the other package calls.
        let _turn = PACKAGE_IO.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the pointer came from dls_aoti_load and is dropped once.
        unsafe { ffi::dls_aoti_drop(self.ptr) }
    }
}

/// The batch sizes a package accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRange {
    /// Between these two, inclusive: declared by the exporter (`dlserve.batch_min` and
    /// `dlserve.batch_max` in the metadata, which `training/export_pt2.py` writes from the
    /// exported program's range constraints), or a static batch dimension (both equal).
    Known(usize, usize),
    /// Dynamic, range not declared: found by the warm-up forwards.
    Unknown,
}

/// What the wrapper of one model in a package was generated for, per input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InputSpec {
    /// `aoti_torch_dtype_*` name (`float32`, `int64`).
    pub dtype: Option<String>,
    /// Static sizes by dimension; dynamic dimensions are absent.
    pub fixed: Vec<(usize, i64)>,
    /// Bounds of dynamic dimensions past the batch, `(dimension, lowest, highest)` inclusive
    /// (a recurrent model's time axis, say). A lowest bound of 2 is read as 1: torch.export
    /// specialises sizes 0 and 1, so a dimension declared from 1 is checked from 2.
    pub ranges: Vec<(usize, i64, i64)>,
    /// Highest dimension index the checks mention, plus one.
    pub rank_at_least: usize,
}

/// Reads the input checks AOTInductor generates into each model's wrapper source
/// (`check_input_<i>`): dtype, static sizes. These are what its kernels were specialised for.
pub fn input_specs(wrapper_cpp: &str) -> Vec<InputSpec> {
    let mut specs: Vec<InputSpec> = Vec::new();
    let mut current: Option<usize> = None;
    for line in wrapper_cpp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("AOTI_NOINLINE static void check_input_") {
            let i: usize = rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
            if specs.len() <= i {
                specs.resize(i + 1, InputSpec::default());
            }
            current = Some(i);
            continue;
        }
        let Some(i) = current else { continue };
        if line.starts_with("AOTI_NOINLINE") || line.starts_with("static ") {
            current = None;
            continue;
        }
        let spec = &mut specs[i];
        if let Some((_, d)) = line.split_once("_expected_dtype = aoti_torch_dtype_") {
            spec.dtype = Some(d.trim_end_matches("();").to_string());
        } else if let Some(cond) = line.strip_prefix("if (").and_then(|l| l.strip_suffix(") {")) {
            // `if (28 != arg_size[2])`, `if (arg_size[0] < 2)`, `if (arg_size[0] > 15)`
            let dim_of = |s: &str| -> Option<usize> { s.split_once("_size[")?.1.strip_suffix(']')?.parse().ok() };
            if let Some((a, b)) = cond.split_once(" != ") {
                if let (Ok(v), Some(d)) = (a.parse::<i64>(), dim_of(b)) {
                    spec.fixed.push((d, v));
                    spec.rank_at_least = spec.rank_at_least.max(d + 1);
                }
            } else if let Some((a, b, low)) = cond
                .split_once(" < ")
                .map(|(a, b)| (a, b, true))
                .or_else(|| cond.split_once(" > ").map(|(a, b)| (a, b, false)))
            {
                if let (Some(d), Ok(v)) = (dim_of(a), b.parse::<i64>()) {
                    spec.rank_at_least = spec.rank_at_least.max(d + 1);
                    if d > 0 {
                        let i = match spec.ranges.iter().position(|r| r.0 == d) {
                            Some(i) => i,
                            None => {
                                spec.ranges.push((d, 1, i64::MAX));
                                spec.ranges.len() - 1
                            }
                        };
                        if low {
                            spec.ranges[i].1 = if v == 2 { 1 } else { v };
                        } else {
                            spec.ranges[i].2 = v;
                        }
                    }
                }
            }
        }
    }
    specs
}

/// One stored member of a ZIP archive.
#[derive(Debug, Clone)]
pub struct ZipMember {
    /// Its path in the archive.
    pub name: String,
    /// Where its bytes are.
    pub data: std::ops::Range<usize>,
    /// Offsets of its local and central-directory headers (whose CRC fields are at +14 and +16).
    pub headers: (usize, usize),
}

/// The stored (uncompressed) members of a ZIP archive, as PyTorch writes its packages.
/// Compressed or ZIP64 members are not listed.
pub fn zip_members(bytes: &[u8]) -> Result<Vec<ZipMember>, String> {
    let bad = || "not a ZIP archive (no end-of-central-directory record): truncated or not a .pt2 package".to_string();
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let search_from = bytes.len().saturating_sub(22 + 65535);
    let eocd = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&o| bytes[o..o + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(bad)?;
    let entries = u16_at(eocd + 10).ok_or_else(bad)?;
    let mut at = u32_at(eocd + 16).ok_or_else(bad)?;
    let mut out = Vec::with_capacity(entries);
    for _ in 0..entries {
        let corrupt = || format!("corrupt ZIP central directory at byte {at}");
        if u32_at(at) != Some(0x0201_4b50) {
            return Err(corrupt());
        }
        let (method, size) = (u16_at(at + 10).ok_or_else(corrupt)?, u32_at(at + 20).ok_or_else(corrupt)?);
        let (name_len, extra_len, comment_len) = (
            u16_at(at + 28).ok_or_else(corrupt)?,
            u16_at(at + 30).ok_or_else(corrupt)?,
            u16_at(at + 32).ok_or_else(corrupt)?,
        );
        let local = u32_at(at + 42).ok_or_else(corrupt)?;
        let name = bytes.get(at + 46..at + 46 + name_len).ok_or_else(corrupt)?;
        let name = String::from_utf8_lossy(name).into_owned();
        if method == 0 && size != 0xffff_ffff {
            let (lname, lextra) = (u16_at(local + 26).ok_or_else(corrupt)?, u16_at(local + 28).ok_or_else(corrupt)?);
            let start = local + 30 + lname + lextra;
            if start + size > bytes.len() {
                return Err(format!("ZIP member {name} runs past the end of the file: truncated"));
            }
            out.push(ZipMember { name, data: start..start + size, headers: (local, at) });
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// CPU features of this host as the kernel lists them (`/proc/cpuinfo` flags).
fn host_cpu_flags() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The `/proc/cpuinfo` flags a package's declared instruction set needs: AOTInductor's
/// `AOTI_CPU_ISA` (the vector ISA its kernels use) and, from `training/export_pt2.py`,
/// `dlserve.isa` (the `-march` the kernels were compiled with). `Err` names a declaration this
/// server cannot check.
pub fn required_cpu_flags(meta: &HashMap<String, String>) -> Result<Vec<&'static str>, String> {
    let mut need = Vec::new();
    for token in meta.get("AOTI_CPU_ISA").map(String::as_str).unwrap_or("").split_whitespace() {
        let flags: &[&'static str] = match token {
            "INVALID_VEC_ISA" | "DEFAULT" => &[],
            "AVX2" => &["avx2", "fma"],
            "AVX512" => &["avx512f", "avx512bw", "avx512dq", "avx512vl"],
            "AVX512_VNNI" => &["avx512_vnni"],
            "AVX512_BF16" => &["avx512_bf16"],
            "AVX512_FP16" => &["avx512_fp16"],
            "AMX_TILE" => &["amx_tile"],
            "AMX_BF16" => &["amx_bf16"],
            "AMX_INT8" => &["amx_int8"],
            other => return Err(format!("AOTI_CPU_ISA names {other:?}, which this server cannot check")),
        };
        need.extend_from_slice(flags);
    }
    match meta.get("dlserve.isa").map(String::as_str) {
        None => {}
        Some("x86-64-v3") => need.extend_from_slice(&["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"]),
        Some("x86-64-v2") => need.extend_from_slice(&["sse4_2", "popcnt", "ssse3"]),
        Some(other) => return Err(format!("dlserve.isa names {other:?}, which this server cannot check")),
    }
    Ok(need)
}

/// The package's declared batch range, when the exporter wrote one.
fn declared_batch(meta: &HashMap<String, String>) -> Result<Option<(usize, usize)>, String> {
    match (meta.get("dlserve.batch_min"), meta.get("dlserve.batch_max")) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) if 1 <= a && a <= b => Ok(Some((a, b))),
            _ => {
                Err(format!("metadata dlserve.batch_min {a:?} / dlserve.batch_max {b:?} is not a range of batch sizes"))
            }
        },
        _ => Err("metadata has only one of dlserve.batch_min and dlserve.batch_max".into()),
    }
}

/// A checked package, ready to load replicas of one of its models on one device.
pub struct Aoti {
    /// A private copy of the package: replacement replicas load the bytes that were checked, even
    /// after the file in the model repository is replaced. Removed on drop.
    copy: PathBuf,
    model: String,
    device: Device,
    batch: BatchRange,
    /// What its wrapper was generated for, checked on every batch.
    specs: std::sync::Arc<Vec<InputSpec>>,
    /// The model's library: its file name in the package and its bytes (to recognise what a
    /// failed load unpacked).
    library: Option<(String, Vec<u8>)>,
    /// Device, ISA and batch range, for `/models`.
    summary: String,
}

static COPIES: AtomicU64 = AtomicU64::new(0);

impl Aoti {
    /// Checks the package at `path` for serving `method` (`None`: its model `model`) on `device`
    /// with `item`'s inputs, and keeps a private copy of it. Nothing of it is loaded yet.
    pub fn open(path: &Path, device: Device, prep: &ReplicaPrep, item: &[ItemTensor]) -> Result<Aoti, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read model.pt2: {}", e.kind()))?;
        let members = zip_members(&bytes).map_err(|e| format!("not a loadable .pt2 package: {e}"))?;
        let model = prep.method.clone().unwrap_or_else(|| "model".to_string());
        let wrapper = model_member(&members, &model, ".wrapper.cpp");
        let models: Vec<&str> = {
            let mut m: Vec<&str> = members
                .iter()
                .filter_map(|m| m.name.split_once("/data/aotinductor/").and_then(|(_, r)| r.split('/').next()))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if !models.contains(&model.as_str()) {
            return Err(format!("the package has no model named {model:?} (it has {models:?})"));
        }
        let Some(ZipMember { data: range, .. }) = wrapper else {
            return Err(format!(
                "the package holds no wrapper source for {model:?}, so its input shapes cannot be checked before loading \
                 (export it with the sources kept, as aoti_compile_and_package does by default)"
            ));
        };
        let specs = input_specs(&String::from_utf8_lossy(&bytes[range.clone()]));
        let meta = metadata(path, &model).map_err(|e| format!("not a loadable .pt2 package: {e}"))?;
        // Device first: a CUDA package on a CPU-only server must never be loaded.
        let compiled_for = meta.get("AOTI_DEVICE_KEY").map(String::as_str).unwrap_or("cpu");
        let wanted = if device.is_cuda() { "cuda" } else { "cpu" };
        if compiled_for != wanted {
            let why = if compiled_for == "cuda" && !tch::Cuda::is_available() {
                " (this server has no CUDA device)"
            } else {
                ""
            };
            return Err(format!("the package was compiled for {compiled_for}, this version's device is {wanted}{why}"));
        }
        if !device.is_cuda() {
            let host = host_cpu_flags();
            let missing: Vec<&str> =
                required_cpu_flags(&meta)?.into_iter().filter(|f| !host.iter().any(|h| h == f)).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the package's CPU kernels need instructions this host lacks ({}; package ISA {:?}{})",
                    missing.join(", "),
                    meta.get("AOTI_CPU_ISA").cloned().unwrap_or_default(),
                    meta.get("dlserve.isa").map(|i| format!(", compiled for {i}")).unwrap_or_default()
                ));
            }
            if !meta.contains_key("dlserve.isa") {
                tracing::warn!(
                    package = %path.display(),
                    "the package does not say which -march its kernels were compiled with (AOTInductor uses \
                     -march=native); only its vector ISA was checked against this host"
                );
            }
        }
        check_inputs(&specs, item)?;
        let declared = declared_batch(&meta)?;
        let static_batch = specs.first().and_then(|s| s.fixed.iter().find(|(d, _)| *d == 0)).map(|(_, v)| *v as usize);
        let batch = match (static_batch, declared) {
            (Some(b), _) => BatchRange::Known(b, b),
            (None, Some((a, b))) => BatchRange::Known(a, b),
            (None, None) => BatchRange::Unknown,
        };
        if let BatchRange::Known(a, _) = batch {
            if a > 1 {
                return Err(format!(
                    "the package needs batches of at least {a}; a server must be able to run one item"
                ));
            }
        }
        let copy = std::env::temp_dir().join(format!(
            "dlserve-{}-{}.pt2",
            std::process::id(),
            COPIES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&copy, &bytes).map_err(|e| format!("cannot copy the package to {}: {e}", copy.display()))?;
        let summary = format!(
            "{compiled_for}{}",
            meta.get("AOTI_CPU_ISA").filter(|s| !s.is_empty()).map(|i| format!(", ISA {i}")).unwrap_or_default()
        );
        if prep.setup_method.is_some() {
            tracing::info!(package = %path.display(), "setup_method is a TorchScript method; not called on a .pt2 package");
        }
        let library = model_member(&members, &model, ".wrapper.so")
            .map(|m| (m.name.rsplit('/').next().unwrap_or_default().to_string(), bytes[m.data.clone()].to_vec()));
        Ok(Aoti { copy, model, device, batch, specs: std::sync::Arc::new(specs), library, summary })
    }
}

/// The member of `model`'s directory in the package (`<archive>/data/aotinductor/<model>/`) whose
/// name ends with `suffix`.
fn model_member<'a>(members: &'a [ZipMember], model: &str, suffix: &str) -> Option<&'a ZipMember> {
    members.iter().find(|m| m.name.ends_with(suffix) && m.name.split('/').rev().nth(1) == Some(model))
}

/// The kind's items against what the wrapper was generated for: count, rank, dtypes and every
/// static size past the batch dimension.
fn check_inputs(specs: &[InputSpec], item: &[ItemTensor]) -> Result<(), String> {
    if specs.len() != item.len() {
        return Err(format!("the package takes {} inputs, the model's kind sends {}", specs.len(), item.len()));
    }
    for (i, (spec, it)) in specs.iter().zip(item).enumerate() {
        let rank = it.shape.len() + 1;
        if spec.rank_at_least > rank {
            return Err(format!(
                "input {i}: the package expects at least {} dimensions, the kind sends {rank} ({:?} plus the batch)",
                spec.rank_at_least, it.shape
            ));
        }
        let dtype = match it.data.elem() {
            Elem::F32 => "float32",
            Elem::I64 => "int64",
        };
        if let Some(d) = &spec.dtype {
            if d != dtype {
                return Err(format!("input {i}: the package expects {d}, the kind sends {dtype}"));
            }
        }
        for &(d, lo, hi) in &spec.ranges {
            if let Some(&n) = it.shape.get(d - 1) {
                if n < lo || n > hi {
                    let top = if hi == i64::MAX { String::new() } else { hi.to_string() };
                    return Err(format!(
                        "input {i}: dimension {d} is {n}, but the package was exported for {lo}..={top} there \
                         (items of shape {:?})",
                        it.shape
                    ));
                }
            }
        }
        for &(d, v) in &spec.fixed {
            if d == 0 {
                continue;
            }
            if it.shape.get(d - 1) != Some(&v) {
                let mut want: Vec<String> = vec!["B".into()];
                want.extend((1..rank).map(|k| {
                    spec.fixed.iter().find(|(dd, _)| *dd == k).map(|(_, v)| v.to_string()).unwrap_or("*".into())
                }));
                return Err(format!(
                    "input {i}: the package was exported for items of shape [{}], these items have {:?}",
                    want.join(", "),
                    it.shape
                ));
            }
        }
    }
    Ok(())
}

impl Drop for Aoti {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.copy);
    }
}

impl Engine for Aoti {
    fn name(&self) -> &'static str {
        "aoti"
    }

    fn file(&self) -> &'static str {
        "model.pt2"
    }

    fn replica(&self) -> Result<Box<dyn Replica>, String> {
        let index = match self.device {
            Device::Cuda(i) => i as i32,
            _ => -1,
        };
        let library = self.library.as_ref().map(|(n, b)| (n.as_str(), b.as_slice()));
        let loader = Loader::load(&self.copy, &self.model, index, library)
            .map_err(|e| format!("not a loadable .pt2 package: {e}"))?;
        Ok(Box::new(AotiReplica { loader, device: self.device, specs: self.specs.clone() }))
    }

    fn release_memory(&self) {
        release_memory();
    }

    fn batch_limit(&self) -> BatchLimit {
        match self.batch {
            BatchRange::Known(_, b) => BatchLimit::UpTo(b),
            BatchRange::Unknown => BatchLimit::Unknown,
        }
    }

    fn detail(&self) -> Option<String> {
        Some(self.summary.clone())
    }
}

/// One loaded package model on its device.
pub struct AotiReplica {
    loader: Loader,
    device: Device,
    specs: std::sync::Arc<Vec<InputSpec>>,
}

impl Replica for AotiReplica {
    fn enter_thread(&mut self, intra_op_threads: Option<usize>) -> usize {
        // Inductor's CPU kernels are OpenMP loops without a fixed thread count (export with
        // `cpp.dynamic_threads`), run on this thread: they follow the same per-thread setting.
        super::torchscript::apply_intra_op_threads(intra_op_threads).max(1) as usize
    }

    fn forward(&mut self, batch: &[&[ItemTensor]]) -> Result<PerItem, InferError> {
        let n = batch.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // The kernels trust their input shapes; an item of another shape (a forecaster's shorter
        // context, say) would be read out of bounds, so it is refused here.
        check_inputs(&self.specs, batch[0]).map_err(InferError::InvalidInput)?;
        tch::no_grad(|| {
            let inputs = stack_inputs(batch, self.device, MemoryFormat::Contiguous)?;
            let outputs = self.loader.run(&inputs).map_err(|e| InferError::Forward(super::summarize(&e)))?;
            split_outputs(outputs, n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_checks_give_dtype_and_static_sizes() {
        let src = "AOTI_NOINLINE static void check_input_0(\n    AtenTensorHandle* input_handles\n) {\n\
            int32_t arg_expected_dtype = aoti_torch_dtype_float32();\n    if (arg_size[0] < 2) {\n\
            if (arg_size[0] > 15) {\n    if (1 != arg_size[1]) {\n    if (28 != arg_size[2]) {\n\
            if (784 != arg_stride[0]) {\n}\nAOTI_NOINLINE static void check_input_1(\n\
            int32_t lab_expected_dtype = aoti_torch_dtype_int64();\n    if (4 != lab_size[0]) {\n}\n\
            static bool _check_aoti_runtime_check_inputs_env() {\n    if (9 != other_size[1]) {\n";
        let s = input_specs(src);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].dtype.as_deref(), Some("float32"));
        assert_eq!(s[0].fixed, vec![(1, 1), (2, 28)], "strides are not sizes");
        assert_eq!(s[0].rank_at_least, 3);
        assert_eq!(s[1].dtype.as_deref(), Some("int64"));
        assert_eq!(s[1].fixed, vec![(0, 4)], "lines after the last check function are not read");
        assert!(s[0].ranges.is_empty(), "the batch dimension's bounds are the metadata's business");
        let item = [ItemTensor::f32(vec![1, 28, 28], vec![0.0; 784]), ItemTensor::i64(vec![], vec![0])];
        assert_eq!(check_inputs(&s, &item), Ok(()));
        let wrong = [ItemTensor::f32(vec![3, 28, 28], vec![0.0; 3 * 784]), ItemTensor::i64(vec![], vec![0])];
        let e = check_inputs(&s, &wrong).unwrap_err();
        assert!(e.contains("[B, 1, 28, *]") && e.contains("[3, 28, 28]"), "{e}");
        let e = check_inputs(&s[..1], &item).unwrap_err();
        assert!(e.contains("takes 1 inputs") && e.contains("sends 2"), "{e}");
    }

    #[test]
    fn dynamic_dimensions_past_the_batch_keep_their_bounds() {
        // A forecaster exported with T in 24..=120 and a context dimension exported from 1.
        let src = "AOTI_NOINLINE static void check_input_0(\n) {\n\
            int32_t a_expected_dtype = aoti_torch_dtype_float32();\n    if (a_size[0] < 2) {\n\
            if (a_size[0] > 1024) {\n    if (a_size[1] < 24) {\n    if (a_size[1] > 120) {\n\
            if (1 != a_size[2]) {\n    if (a_size[3] < 2) {\n}\n";
        let s = input_specs(src);
        assert_eq!(s[0].ranges, vec![(1, 24, 120), (3, 1, i64::MAX)]);
        assert_eq!(s[0].fixed, vec![(2, 1)]);
        let item = |t: i64| [ItemTensor::f32(vec![t, 1, 1], vec![0.0; t as usize])];
        assert_eq!(check_inputs(&s, &item(24)), Ok(()));
        assert_eq!(check_inputs(&s, &item(120)), Ok(()));
        let e = check_inputs(&s, &item(121)).unwrap_err();
        assert!(e.contains("dimension 1 is 121") && e.contains("24..=120"), "{e}");
        assert!(check_inputs(&s, &item(23)).unwrap_err().contains("is 23"));
    }

    #[test]
    fn declared_instruction_sets_map_to_cpu_flags() {
        let meta = |isa: &str, march: Option<&str>| {
            let mut m = HashMap::from([("AOTI_CPU_ISA".to_string(), isa.to_string())]);
            if let Some(a) = march {
                m.insert("dlserve.isa".into(), a.into());
            }
            m
        };
        assert_eq!(required_cpu_flags(&meta("AVX2", None)).unwrap(), vec!["avx2", "fma"]);
        let v = required_cpu_flags(&meta("AVX512 AVX512_VNNI", Some("x86-64-v3"))).unwrap();
        assert!(v.contains(&"avx512_vnni") && v.contains(&"avx512f") && v.contains(&"movbe"));
        assert!(required_cpu_flags(&meta("NEON", None)).unwrap_err().contains("NEON"));
        assert!(required_cpu_flags(&meta("", Some("znver9"))).unwrap_err().contains("znver9"));
    }

    #[test]
    fn a_loader_error_names_its_unpack_directory() {
        let m = "Error in dlopen: /tmp/Lv0pI5/model/data/aotinductor/model/c6f.wrapper.so: undefined symbol: x";
        assert_eq!(named_unpack_dir(m), Some(PathBuf::from("/tmp/Lv0pI5")));
        assert_eq!(named_unpack_dir("no directory here"), None);
        assert_eq!(named_unpack_dir("see /tmp/ab"), None);
    }

    #[test]
    fn a_truncated_archive_is_refused_by_name() {
        assert!(zip_members(b"PK\x03\x04 not much").unwrap_err().contains("truncated"));
        assert!(zip_members(&[]).unwrap_err().contains("truncated"));
    }
}
