//! TLS to etcd: the files a store names (a CA, optionally a client certificate and its key)
//! read into a rustls client configuration (ring provider), and rustls' failures told as what
//! the user can fix. Read by the store when it connects and by manifest validation, so a bad
//! file is reported the same way in both places.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What TLS to etcd uses: the CA that signed the members' certificates, and a client
/// certificate when the members require one (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client: Option<ClientCert>,
}

/// Which of the files a [`TlsFileError`] is about (the manifest's key names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ca,
    Cert,
    Key,
}

impl Role {
    pub fn key(self) -> &'static str {
        match self {
            Role::Ca => "ca",
            Role::Cert => "cert",
            Role::Key => "key",
        }
    }
}

/// A TLS file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd TLS {} file `{}`: {reason}", role.key(), path.display())]
pub struct TlsFileError {
    pub role: Role,
    pub path: PathBuf,
    pub reason: String,
}

fn fail(role: Role, path: &Path, reason: impl Into<String>) -> TlsFileError {
    TlsFileError {
        role,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(role: Role, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(role, path, "does not exist"),
        _ => fail(role, path, format!("cannot be read: {e}")),
    })
}

fn pem_reason(e: &pem::Error) -> String {
    format!("is not valid PEM: {e}")
}

/// Every certificate in a PEM file; at least one.
fn certificates(role: Role, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let text = read(role, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(role, path, pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(fail(
            role,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let text = read(Role::Key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => fail(
            Role::Key,
            path,
            "holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
        ),
        e => fail(Role::Key, path, pem_reason(&e)),
    })
}

/// A client configuration trusting `roots`, on the ring provider.
fn builder(
    roots: RootCertStore,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, rustls::Error> {
    // Deprecated for lacking post-quantum key exchange, which only the aws-lc provider has;
    // that one is a cmake C build far heavier than ring's, and etcd 3.4's Go TLS offers no
    // post-quantum group either.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots))
}

/// A configuration that trusts nothing: a handshake with it fails at the server's
/// certificate, which shows that the server speaks TLS (see `transport::speaks_tls`).
pub fn trusting_nothing() -> Result<Arc<ClientConfig>, rustls::Error> {
    Ok(Arc::new(
        builder(RootCertStore::empty())?.with_no_client_auth(),
    ))
}

/// A loaded TLS setup: the rustls configuration every connection to the store shares, and
/// what it was made of, for the error messages.
pub struct Tls {
    pub config: Arc<ClientConfig>,
    files: TlsFiles,
}

impl TlsFiles {
    /// Reads and checks every file: certificates that parse, a key that fits its certificate.
    pub fn load(&self) -> Result<Tls, TlsFileError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(Role::Ca, &self.ca)? {
            roots.add(cert).map_err(|e| {
                fail(
                    Role::Ca,
                    &self.ca,
                    format!("holds a certificate that cannot be a CA: {e}"),
                )
            })?;
        }
        let builder = builder(roots).map_err(|e| fail(Role::Ca, &self.ca, e.to_string()))?;
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain = certificates(Role::Cert, &c.cert)?;
                let key = private_key(&c.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => fail(
                            Role::Key,
                            &c.key,
                            format!(
                                "is not the private key of the certificate in `{}`",
                                c.cert.display()
                            ),
                        ),
                        rustls::Error::InvalidCertificate(e) => fail(
                            Role::Cert,
                            &c.cert,
                            format!("holds a certificate that does not parse: {e:?}"),
                        ),
                        e => fail(Role::Key, &c.key, format!("cannot be used: {e}")),
                    })?
            }
        };
        Ok(Tls {
            config: Arc::new(config),
            files: self.clone(),
        })
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// What a handshake or record failure with `host` means, in terms of the files.
    pub fn explain(&self, host: &str, e: &rustls::Error) -> String {
        let ca = self.files.ca.display();
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the server's certificate is not signed by the CA in `{ca}` (unknown CA)"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not valid for `{host}` (no matching DNS or IP \
                     subject alternative name)"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet (check the clocks)".to_string()
                }
                other => format!("the server's certificate was refused: {other:?}"),
            },
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired | AlertDescription::BadCertificate,
            ) if self.files.client.is_none() => "the server requires a client certificate: \
                 give one (tls.cert and tls.key, or --etcd-cert and --etcd-key)"
                .to_string(),
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown,
            ) => match &self.files.client {
                Some(c) => format!(
                    "the server refused the client certificate `{}` (is it signed by a CA \
                     the server trusts, its --trusted-ca-file?)",
                    c.cert.display()
                ),
                None => format!("the server refused the handshake ({e})"),
            },
            other => format!("TLS failed: {other}"),
        }
    }
}
