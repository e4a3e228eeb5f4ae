//! TLS for the center's service: the service's own certificate, made by `center init` and
//! kept in the center's data directory, and the pin by which devices recognise it.
//!
//! The certificate is self-signed and is the only root a device trusts for its center:
//! a device installed by the center receives the certificate (never the key) and its client
//! accepts a server only if it proves possession of that certificate's key, for one of the
//! names the certificate lists (by default `localhost`, `127.0.0.1` and `::1`). No public
//! certificate authority is involved, so none can vouch for a man in the middle.
//!
//! The private key is written readable by its owner only and never leaves the data
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The service certificate's file in the center's directory (public: devices get a copy).
pub const CERTIFICATE_FILE: &str = "service-certificate.pem";
/// The service key's file in the center's directory (owner-only).
pub const KEY_FILE: &str = "service-key.pem";

/// The names a certificate lists when none are given.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why the service's TLS identity or a device's pin could not be made, stored or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot make the service certificate: {0}")]
    Generate(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0} already exists: the service certificate is never overwritten")]
    Exists(PathBuf),
    #[error("{path}: not a PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the TLS configuration is refused: {0}")]
    Config(String),
}

fn file_error(path: &Path, error: impl core::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// The process-wide choice of cryptography for TLS, on both ends: ring.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The service's certificate and private key.
pub struct ServiceIdentity {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl core::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("certificate_bytes", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

impl ServiceIdentity {
    /// A new key pair (ECDSA P-256) and a self-signed certificate for `names` (host names
    /// or IP addresses; [`DEFAULT_NAMES`] when empty).
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let names: Vec<String> = if names.is_empty() {
            DEFAULT_NAMES
                .iter()
                .map(|name| (*name).to_owned())
                .collect()
        } else {
            names.to_vec()
        };
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|error| TlsError::Generate(error.to_string()))?;
        Ok(ServiceIdentity {
            certificate: made.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into()),
        })
    }

    /// The certificate, PEM-encoded: what devices pin.
    pub fn certificate_pem(&self) -> String {
        pem("CERTIFICATE", &self.certificate)
    }

    /// The pin a device keeps for this service.
    pub fn pin(&self) -> CenterPin {
        CenterPin {
            certificate: self.certificate.clone(),
        }
    }

    /// Writes the certificate and the key (owner-only) into `dir`; refuses to overwrite.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let certificate = dir.join(CERTIFICATE_FILE);
        let key = dir.join(KEY_FILE);
        for path in [&certificate, &key] {
            if path.exists() {
                return Err(TlsError::Exists(path.clone()));
            }
        }
        let key_pem = pem("PRIVATE KEY", self.key.secret_der());
        write_new(&key, key_pem.as_bytes(), true)?;
        write_new(&certificate, self.certificate_pem().as_bytes(), false)
    }

    /// Reads the certificate and key that [`ServiceIdentity::save`] wrote.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let certificate = load_certificate(&dir.join(CERTIFICATE_FILE))?;
        let key_path = dir.join(KEY_FILE);
        let bytes = std::fs::read(&key_path).map_err(|error| file_error(&key_path, error))?;
        let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
            path: key_path.clone(),
            what: "private key",
        })?;
        Ok(ServiceIdentity { certificate, key })
    }

    /// The server side of TLS: TLS 1.2 and 1.3 with rustls' safe defaults, HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())
            .map_err(|error| TlsError::Config(error.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The one certificate a device accepts from its center.
#[derive(Clone, PartialEq, Eq)]
pub struct CenterPin {
    certificate: CertificateDer<'static>,
}

impl core::fmt::Debug for CenterPin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CenterPin(sha256:{})", self.fingerprint())
    }
}

impl CenterPin {
    /// From a PEM certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let certificate = CertificateDer::from_pem_slice(pem).map_err(|_| TlsError::Pem {
            path: PathBuf::from("(certificate)"),
            what: "certificate",
        })?;
        Ok(CenterPin { certificate })
    }

    /// From a PEM certificate file.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        Ok(CenterPin {
            certificate: load_certificate(path)?,
        })
    }

    /// Writes the pinned certificate (public) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        write_new(
            path,
            pem("CERTIFICATE", &self.certificate).as_bytes(),
            false,
        )
    }

    /// The pinned certificate (public) as PEM.
    pub fn to_pem(&self) -> String {
        pem("CERTIFICATE", &self.certificate)
    }

    /// SHA-256 of the certificate, hex: what an operator compares by eye.
    pub fn fingerprint(&self) -> String {
        hex::encode(valuecard_core::crypto::sha256(&self.certificate))
    }

    /// The certificate, DER-encoded.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    pub(crate) fn ureq_certificate(&self) -> ureq::tls::Certificate<'static> {
        ureq::tls::Certificate::from_der(&self.certificate).to_owned()
    }
}

fn load_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| file_error(path, error))?;
    CertificateDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "certificate",
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// Creates `path` (never replacing a file), owner-only when `private`, and syncs it.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|error| file_error(path, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| file_error(path, error))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn an_identity_survives_its_files_and_the_key_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ServiceIdentity::generate(&[]).unwrap();
        identity.save(dir.path()).unwrap();
        let loaded = ServiceIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.pin(), identity.pin());
        assert_eq!(
            CenterPin::from_pem(identity.certificate_pem().as_bytes()).unwrap(),
            identity.pin()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(matches!(
            ServiceIdentity::generate(&[]).unwrap().save(dir.path()),
            Err(TlsError::Exists(_))
        ));
        assert!(loaded.server_config().is_ok());
    }
}
