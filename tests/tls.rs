//! Optional TLS (`--tls-cert`, `--tls-key`): HTTP/1.1, HTTP/2 and gRPC over TLS with a
//! certificate chain the test makes, plain or silent clients on the TLS port, reloads on SIGHUP
//! and on a file change, a bad pair at reload (the old one keeps serving) and at start-up (the
//! server does not start).
mod common;
use dlserve::api::grpc::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority of the test's own.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "dlserve test CA");
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// Writes a leaf certificate for localhost and 127.0.0.1 (chain: leaf, CA) and its key into
    /// `cert` and `key`; returns the leaf's SHA-256 fingerprint.
    fn issue(&self, cert: &Path, key: &Path) -> String {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = params.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        // Written whole, then renamed, as a secret volume or cert-manager replaces a file.
        let tmp_cert = cert.with_extension("new");
        std::fs::write(&tmp_cert, format!("{}{}", leaf.pem(), self.cert.pem())).unwrap();
        let tmp_key = key.with_extension("new");
        std::fs::write(&tmp_key, leaf_key.serialize_pem()).unwrap();
        std::fs::rename(tmp_key, key).unwrap();
        std::fs::rename(tmp_cert, cert).unwrap();
        dlserve::tls::fingerprint(leaf.der())
    }

    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.cert.der().to_vec())).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// What one HTTP/1.1 GET over TLS saw: the response text, the served leaf's fingerprint and the
/// protocol ALPN chose.
struct Seen {
    response: String,
    fingerprint: String,
    alpn: Option<Vec<u8>>,
}

async fn tls_get(ca: &Ca, addr: &str, path: &str, alpn: &[&[u8]]) -> std::io::Result<Seen> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = ca.client(alpn).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let (_, conn) = tls.get_ref();
    let fingerprint = dlserve::tls::fingerprint(conn.peer_certificates().unwrap()[0].as_ref());
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    if alpn.as_deref() == Some(b"h2") {
        return Ok(Seen { response: String::new(), fingerprint, alpn });
    }
    tls.write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(Seen { response: String::from_utf8_lossy(&out).into_owned(), fingerprint, alpn })
}

fn pair(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http2_and_grpc_share_the_tls_port_and_plain_or_silent_clients_are_closed() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = pair(certs.path());
    let print = ca.issue(&cert, &key);
    let s = common::start(
        &["tiny-anomaly"],
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--header-read-timeout-secs", "1"],
    )
    .await;
    let addr = s.base.trim_start_matches("https://").to_string();

    // HTTP/1.1, the chain verified against the test's CA.
    let seen = tls_get(&ca, &addr, "/health/live", &[b"http/1.1"]).await.unwrap();
    assert!(seen.response.starts_with("HTTP/1.1 200"), "{}", seen.response);
    assert_eq!(seen.fingerprint, print);
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // A domain request over TLS.
    let body = r#"{"rows": [[1, 2, 3]]}"#;
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = ca.client(&[]).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let req = format!(
        "POST /anomaly HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("\"score\""), "{text}");

    // ALPN offers h2, and gRPC works over TLS on the same port.
    assert_eq!(tls_get(&ca, &addr, "/", &[b"h2", b"http/1.1"]).await.unwrap().alpn.as_deref(), Some(&b"h2"[..]));
    let tls_cfg = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert.pem()))
        .domain_name("localhost");
    let ch = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls_cfg)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let mut grpc = GrpcInferenceServiceClient::new(ch);
    assert!(grpc.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);

    // A client that speaks plain HTTP to the TLS port is closed, not answered in plain text.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain.write_all(b"GET /health/live HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "a plain-text client is closed");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "no plain-text answer on the TLS port");

    // A client that never starts the handshake is closed at the header-read timeout (1 s here).
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0u8; 16])).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed, not left open: {r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(900), "closed at the timeout, not at once: {:?}", t0.elapsed());

    // A client that starts a handshake and stalls is closed at the same timeout.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut [0u8; 16])).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "a stalled handshake is closed: {r:?}");

    // The server still serves after all of that.
    assert!(tls_get(&ca, &addr, "/health/ready", &[]).await.unwrap().response.starts_with("HTTP/1.1 200"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until new connections are served the certificate with `print`, or `limit` passes.
async fn wait_for_cert(ca: &Ca, addr: &str, print: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(seen) = tls_get(ca, addr, "/health/live", &[]).await {
            if seen.fingerprint == print {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_reloaded_on_sighup_and_on_change_and_a_bad_one_keeps_the_old() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let (cert, key) = pair(certs.path());
    let first = ca.issue(&cert, &key);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // The log goes to a file: a pipe nobody reads while the test runs could fill and stall it.
    let log_path = certs.path().join("server.log");
    let spawn = |reload_secs: &str| {
        Command::new(env!("CARGO_BIN_EXE_dlserve"))
            .args(["--models-dir", models.path().to_str().unwrap(), "--addr", &addr])
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .args(["--tls-reload-secs", reload_secs])
            .stdout(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Reloads on SIGHUP only (file polling off).
    let mut child = spawn("0");
    assert!(wait_for_cert(&ca, &addr, &first, Duration::from_secs(30)).await, "the server serves its certificate");
    let hup = |child: &std::process::Child| {
        Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    };
    let second = ca.issue(&cert, &key);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(tls_get(&ca, &addr, "/", &[]).await.unwrap().fingerprint, first, "no reload without a signal");
    hup(&child);
    assert!(wait_for_cert(&ca, &addr, &second, Duration::from_secs(10)).await, "SIGHUP reloads the pair");
    // A broken certificate file: the reload fails and the previous pair keeps serving.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = tls_get(&ca, &addr, "/health/live", &[]).await.unwrap();
    assert!(seen.response.starts_with("HTTP/1.1 200"), "{}", seen.response);
    assert_eq!(seen.fingerprint, second);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // A key that belongs to another certificate: refused the same way.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, other_key) = pair(other.path());
    ca.issue(&other_cert, &other_key);
    ca.issue(&cert, &key);
    std::fs::copy(&other_key, &key).unwrap();
    hup(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tls_get(&ca, &addr, "/", &[]).await.unwrap().fingerprint, second);
    child.kill().unwrap();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("TLS certificate reload failed"), "{log}");
    assert!(log.contains("--tls-cert"), "the error names the file: {log}");

    // With --tls-reload-secs, a replaced pair is picked up without a signal.
    let third = ca.issue(&cert, &key);
    let mut child = spawn("1");
    assert!(wait_for_cert(&ca, &addr, &third, Duration::from_secs(30)).await);
    let fourth = ca.issue(&cert, &key);
    assert!(wait_for_cert(&ca, &addr, &fourth, Duration::from_secs(10)).await, "a changed file is reloaded");
    child.kill().unwrap();
    let _ = child.wait();

    // At start-up a mismatched pair is an error that names the files, and the server exits.
    std::fs::copy(&other_key, &key).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args(["--models-dir", models.path().to_str().unwrap(), "--addr", &addr])
        .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert") && err.contains("--tls-key"), "{err}");
    // And one file without the other is refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args(["--models-dir", models.path().to_str().unwrap(), "--addr", &addr, "--tls-cert", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert needs --tls-key"));
}
