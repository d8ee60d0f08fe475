//! The playground (`/`) and docs (`/docs`) pages as the binary serves them, over real HTTP and
//! without a browser (`make browser-test` drives them in Chromium): every asset they reference is
//! served, relative, with its type and the content security policy that keeps pages on this server;
//! nothing outside `ui/` can be reached.

mod common;

use std::collections::BTreeSet;

/// The relative URLs of `src="..."` and `href="..."` attributes in a page.
fn references(html: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            if let Some(end) = part.find('"') {
                let url = &part[..end];
                if !url.starts_with('#') && !url.is_empty() {
                    out.insert(url.to_string());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_pages_and_everything_they_load_come_from_this_server() {
    let s = common::start(&["tiny-anomaly"], &[]).await;
    for (page, path) in [("/", "index.html"), ("/docs", "docs.html")] {
        let r = s.get(page).await;
        assert_eq!(r.status(), 200, "{page}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
        let html = r.text().await.unwrap();
        assert_eq!(html, std::fs::read_to_string(format!("ui/{path}")).unwrap(), "the built-in copy is ui/{path}");
        let refs = references(&html);
        assert!(!refs.is_empty(), "{page} loads assets");
        for url in refs {
            assert!(
                !url.starts_with('/') && !url.contains("://"),
                "{page}: '{url}' must be relative to work behind a prefix"
            );
            // From `/` and `/docs` alike, a relative URL resolves against the root.
            let r = s.get(&format!("/{url}")).await;
            assert_eq!(r.status(), 200, "{page} references {url}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            let want = match url.rsplit('.').next().unwrap() {
                "js" => "text/javascript",
                "css" => "text/css",
                "svg" => "image/svg+xml",
                "png" => "image/png",
                _ => "",
            };
            assert!(ct.starts_with(want), "{url}: {ct}");
        }
    }
    // Our own scripts and pages name no other host (the vendored Swagger UI is checked in the
    // browser test, which fails on any request to another host).
    for f in ["ui/index.html", "ui/docs.html", "ui/playground.js", "ui/docs.js"] {
        let text = std::fs::read_to_string(f).unwrap();
        for scheme in ["http://", "https://", "//cdn", "//fonts."] {
            for (i, _) in text.match_indices(scheme) {
                let around = &text[i.saturating_sub(40)..(i + 60).min(text.len())];
                assert!(
                    around.contains("www.w3.org/2000/svg")
                        || around.contains("http://host/")
                        || around.contains("127.0.0.1")
                        || around.contains("localhost"),
                    "{f}: '{around}' names another host"
                );
            }
        }
    }
    for bad in ["/ui/../Cargo.toml", "/ui/..%2FCargo.toml", "/ui/.hidden", "/ui/vendor.sh", "/ui/nothing.js", "/ui/"] {
        let r = s.get(bad).await;
        assert_eq!(r.status(), 404, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "not_found", "{bad}");
    }
}

#[tokio::test]
async fn ui_dir_serves_the_pages_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>edited</p>").unwrap();
    let s = common::start(&["tiny-anomaly"], &["--ui-dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(s.get("/").await.text().await.unwrap(), "<p>edited</p>");
    std::fs::write(dir.path().join("index.html"), "<p>again</p>").unwrap();
    assert_eq!(s.get("/").await.text().await.unwrap(), "<p>again</p>", "read on every request");
    assert_eq!(s.get("/docs").await.status(), 404);
}
