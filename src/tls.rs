//! Optional TLS on the listening port (rustls, ring provider): a PEM certificate chain and a PEM
//! private key, given with `--tls-cert` and `--tls-key`.
//!
//! The pair is read again, without a restart and without dropping a connection, on SIGHUP and
//! when either file changes on disk (checked every `--tls-reload-secs`; a Kubernetes Secret
//! volume or cert-manager replaces the files in place). New connections get the new pair; open
//! ones keep the one they shook hands with. A pair that fails to load (unreadable, no
//! certificate, a key that does not match the certificate) is logged and the previous pair keeps
//! serving. At start-up a bad pair is an error: the server does not start.
//!
//! ALPN offers `h2` and `http/1.1`, so gRPC clients (which require `h2`) and HTTP/1.1 clients
//! share the port as they do without TLS.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The TLS settings of a listener: the files, and the configuration last loaded from them.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<rustls::ServerConfig>,
    /// What the files looked like when they were last read (successfully or not), so a change is
    /// acted on once.
    seen: Mutex<[Option<Stamp>; 2]>,
    /// SHA-256 of the leaf certificate now served, as lowercase hex.
    fingerprint: Mutex<String>,
}

/// A file's modification time and length: enough to notice a replaced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp(m.modified().ok()?, m.len()))
}

/// SHA-256 of a DER certificate, as lowercase hex (what `openssl x509 -fingerprint -sha256`
/// prints, without the colons).
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and checks a certificate chain and key into a server configuration; returns it with
/// the leaf certificate's fingerprint.
fn read_pair(cert: &Path, key: &Path) -> Result<(rustls::ServerConfig, String), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("--tls-cert {}: no PEM certificate in the file", cert.display()));
    };
    let print = fingerprint(leaf.as_ref());
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, print))
}

impl Tls {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let seen = [stamp(cert), stamp(key)];
        let (config, print) = read_pair(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
            fingerprint: Mutex::new(print),
        }))
    }

    /// The TLS settings from the arguments: none without `--tls-cert`; both files or neither.
    pub fn from_args(args: &crate::config::Args) -> Result<Option<Arc<Tls>>, String> {
        match (&args.tls_cert, &args.tls_key) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Tls::load(c, k).map(Some),
            (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
        }
    }

    /// An acceptor for one new connection, with the pair loaded last.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// SHA-256 of the leaf certificate served to new connections.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again. On success new connections get the new pair and its fingerprint is
    /// returned; on failure the previous pair keeps serving.
    pub fn reload(&self) -> Result<String, String> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = [stamp(&self.cert), stamp(&self.key)];
        let (config, print) = read_pair(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = print.clone();
        Ok(print)
    }

    /// Whether either file differs from when it was last read.
    pub fn changed_on_disk(&self) -> bool {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != [stamp(&self.cert), stamp(&self.key)]
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(print) => tracing::info!(reason = why, sha256 = %print, "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                reason = why,
                error = %e,
                sha256 = %self.fingerprint(),
                "TLS certificate reload failed; the previous certificate keeps serving"
            ),
        }
    }

    /// Reloads on SIGHUP, and when a file changes (looked at every `every`; never when zero).
    /// Call from within the runtime; the task runs until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let tick = async {
                    if every.is_zero() {
                        std::future::pending::<()>().await
                    }
                    tokio::time::sleep(every).await
                };
                tokio::select! {
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        tls.reload_and_log("SIGHUP");
                    }
                    _ = tick => {
                        if tls.changed_on_disk() {
                            tls.reload_and_log("file changed");
                        }
                    }
                }
            }
        });
        Ok(())
    }
}
