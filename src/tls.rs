//! gRPC server TLS with rustls (ring): certificate, key and optional client CA
//! from PEM files, reloadable without a restart. Handshakes run in
//! `listener`, one task per connection under its timeout.
//!
//! With a client CA, client certificates are verified but optional at the TLS
//! layer: health probes and grpcurl connect without one, and the state API
//! then asks for credentials per request (see `tenancy`). A new certificate
//! applies to new connections; established connections keep theirs.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::reload::{Reload, Reloadable};

/// Installs ring as rustls' process-wide crypto provider. redis-rs builds its
/// client configs from the process default; installing it explicitly keeps
/// that deterministic if another crate ever enables a second provider.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's TLS configuration and the files it comes from.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<ServerConfig>>,
    /// Digest of the file contents last tried (good or bad).
    seen: Mutex<[u8; 32]>,
}

// Hand-written: only the paths, never anything derived from the key.
impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; any problem at startup is an error.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, String> {
        let files = read_files(cert, key, client_ca)?;
        let config = build(&files)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(files.digest()),
        })
    }

    /// Whether client certificates are verified (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// An acceptor with the current configuration (new connections get a
    /// reloaded certificate).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl Reloadable for ServerTls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn reload(&self, force: bool) -> Reload {
        let files = match read_files(&self.cert, &self.key, self.client_ca.as_deref()) {
            Ok(f) => f,
            Err(e) => return Reload::Failed(e),
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let digest = files.digest();
            if *seen == digest && !force {
                return Reload::Unchanged;
            }
            *seen = digest;
        }
        match build(&files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                Reload::Applied(format!(
                    "TLS certificate {}{}",
                    self.cert.display(),
                    if self.client_ca.is_some() {
                        " and client CA"
                    } else {
                        ""
                    }
                ))
            }
            Err(e) => Reload::Failed(format!("{e}; keeping the previous TLS configuration")),
        }
    }
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map_or(&[][..], |p| p.as_slice());
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

fn read_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Files, String> {
    let read = |flag: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {flag} {}: {e}", p.display()))
    };
    Ok(Files {
        cert: read("--tls-cert", cert)?,
        key: read("--tls-key", key)?,
        client_ca: client_ca.map(|p| read("--tls-client-ca", p)).transpose()?,
    })
}

/// Parses PEM certificates; an empty result is an error.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not valid PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

fn build(files: &Files) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = parse_certs(&files.cert, "--tls-cert")?;
    // The key error never includes key material: pki-types reports only the
    // kind of PEM problem.
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|e| format!("--tls-key: no usable PEM private key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(ca, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca: unusable CA certificate: {e}"))?;
            }
            // Optional at the TLS layer: probes and reflection connect
            // without a certificate; the state API demands credentials itself.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("--tls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key do not form a usable pair: {e}"))?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
