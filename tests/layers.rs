//! The module tree's import rule: every `crate::` path in `src/` points to a module of a lower
//! layer than the file's own (or to its own module). The layers are listed in src/lib.rs's doc
//! and in ARCHITECTURE.md, "Module tree"; this test is their enforcement.

use std::path::Path;

/// Layer of each top-level module of the library.
const LAYERS: &[(&str, u32)] = &[
    ("tensor", 0),
    ("device", 0),
    ("metrics", 0),
    ("config", 0),
    ("npz", 0),
    ("manifest", 1),
    ("telemetry", 1),
    ("tls", 1),
    ("traces", 1),
    ("engine", 2),
    ("kinds", 2),
    ("batching", 3),
    ("registry", 4),
    ("decoding", 5),
    ("api", 6),
    ("server", 7),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a file names with `crate::<module>` (in `use` lines and in paths alike).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + 7..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if let Some(braced) = after.strip_prefix('{') {
                // `use crate::{a, b}`: every name inside the braces.
                let inner = braced.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let m: String =
                        part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !m.is_empty() {
                        refs.push((n + 1, m));
                    }
                }
            } else if !name.is_empty() {
                refs.push((n + 1, name));
            }
            rest = after;
        }
    }
    refs
}

#[test]
fn every_crate_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let module = first.trim_end_matches(".rs").to_string();
        // The crate root and the binaries sit above every module.
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        let own =
            layer(&module).unwrap_or_else(|| panic!("src/{}: module '{module}' has no layer in LAYERS", rel.display()));
        let text = std::fs::read_to_string(f).unwrap();
        for (line, target) in crate_refs(&text) {
            checked += 1;
            if target == module {
                continue;
            }
            match layer(&target) {
                Some(l) if l < own => {}
                Some(l) => violations.push(format!(
                    "src/{}:{line}: {module} (layer {own}) uses crate::{target} (layer {l})",
                    rel.display()
                )),
                None => {
                    violations.push(format!("src/{}:{line}: crate::{target} is no module in LAYERS", rel.display()))
                }
            }
        }
    }
    assert!(checked > 20, "the scan found the crate's imports ({checked})");
    assert!(violations.is_empty(), "imports that do not point down:\n{}", violations.join("\n"));
}

#[test]
fn the_scan_sees_every_form_of_import() {
    let refs =
        crate_refs("use crate::{api, kinds::Kind};\nlet x = crate::batching::Deadline::after(d); // crate::server\n");
    let names: Vec<&str> = refs.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, vec!["api", "kinds", "batching"]);
}
