//! Links libtorch_cuda into the binary even though no symbol of it is referenced directly.
//!
//! The linker drops shared libraries whose symbols are unused (`--as-needed`), and libtorch's
//! CUDA backend registers itself only from static initialisers in libtorch_cuda.so. Without
//! `--no-as-needed` the binary ends up linked to libtorch_cpu alone and `Cuda::is_available()`
//! is false even on a GPU machine. The rpath lets the binary find libtorch without
//! `LD_LIBRARY_PATH`.
//!
//! It also compiles `src/engine/aoti_shim.cpp`, the C interface of the AOTInductor (`.pt2`)
//! engine, against the headers of the same libtorch, with torch-sys's language standard and ABI,
//! and generates the gRPC service from `proto/inference.proto`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    compile_grpc();
    embed_ui();
    println!("cargo:rerun-if-changed=src/engine/aoti_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // DLSERVE_NO_CUDA=1 builds a CPU-only binary that does not need libtorch_cuda at run time
    // (the slim container variant).
    println!("cargo:rerun-if-env-changed=DLSERVE_NO_CUDA");
    let no_cuda = std::env::var("DLSERVE_NO_CUDA").is_ok_and(|v| v == "1");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    // torch-sys publishes the directory of the libtorch it linked (`links = "tch"`).
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set; binary will need LD_LIBRARY_PATH");
        return;
    };
    let lib = lib.to_string_lossy().to_string();
    compile_aoti_shim(std::path::Path::new(&lib));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if !no_cuda && std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

/// Lists every file under `ui/` (the playground, the API docs page and their vendored assets) for
/// `include_bytes!` in `src/api/ui.rs`, so the binary serves them with nothing read from disk or any
/// other host. Scripts (`*.sh`) and dot-files are left out.
fn embed_ui() {
    println!("cargo:rerun-if-changed=ui");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files = Vec::new();
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, std::path::PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.ends_with(".sh") {
                continue;
            }
            if p.is_dir() {
                walk(&p, root, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push((rel.to_string_lossy().replace('\\', "/"), p.clone()));
            }
        }
    }
    walk(&root, &root, &mut files);
    files.sort();
    let mut code = String::from(
        "/// Every file under `ui/`, by its path relative to `ui/`.\npub static UI_ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (rel, path) in files {
        code.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui_assets.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

/// Builds the AOTInductor shim as a static library. The headers sit beside the library directory
/// (`<torch>/lib` and `<torch>/include`, in the wheel and in a libtorch download alike).
fn compile_aoti_shim(lib: &std::path::Path) {
    let root = lib.parent().unwrap_or(lib);
    let include = root.join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .file("src/engine/aoti_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("dlserve_aoti");
}

/// Generates the Open Inference Protocol's gRPC messages and server trait, and writes the encoded
/// descriptor set that server reflection serves. protox parses the file, so no protoc is needed.
fn compile_grpc() {
    use prost::Message;
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let fds = protox::compile(["inference.proto"], ["proto"]).expect("proto/inference.proto compiles");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("inference_descriptor.bin"), fds.encode_to_vec()).expect("write the descriptor set");
    tonic_prost_build::configure()
        // The client is for the tests (tests/grpc.rs), which bring tonic's transport.
        .build_client(true)
        .build_transport(false)
        // Raw tensor contents become `bytes::Bytes`, sliced from the request without a copy.
        .bytes(".")
        .compile_fds(fds)
        .expect("generate the gRPC service");
}
