//! The command's store choice: `--store` / `MICROFAAS_STORE` (SQLite, `etcd://` plain HTTP or
//! `etcds://` TLS) and, for TLS, the files `--etcd-ca`, `--etcd-cert`, `--etcd-key` (or
//! `MICROFAAS_ETCD_CA`, `..._CERT`, `..._KEY`), like etcdctl's `--cacert/--cert/--key`.

use crate::store::{ClientCert, EtcdLocation, TlsFiles};
use std::path::{Path, PathBuf};

/// `--store`: the state dir's own SQLite file or an etcd cluster; empty is as if unset (the
/// manifests' `Cluster.spec.store`, else SQLite).
#[derive(Debug, Clone)]
pub enum StoreArg {
    Unset,
    Sqlite,
    Etcd(crate::store::etcd::ParsedUrl),
}

pub fn parse_store(s: &str) -> Result<StoreArg, String> {
    match s.trim() {
        "" => Ok(StoreArg::Unset),
        "sqlite" => Ok(StoreArg::Sqlite),
        url => EtcdLocation::parse(url).map(StoreArg::Etcd),
    }
}

/// TLS to an `etcds://` store.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdTlsArgs {
    /// With --store etcds://...: the CA (PEM) that signed the etcd members' certificates;
    /// each member's certificate must name the HOST it is reached as (DNS or IP SAN).
    #[arg(long, global = true, env = "MICROFAAS_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// With --store etcds://...: a client certificate (PEM), for members started with
    /// --client-cert-auth; needs --etcd-key.
    #[arg(long, global = true, env = "MICROFAAS_ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long, global = true, env = "MICROFAAS_ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,
}

/// A file named on the command line, made absolute so a `serve` that changes directory
/// still finds it.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl EtcdTlsArgs {
    fn any(&self) -> bool {
        self.etcd_ca.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some()
    }

    fn files(&self) -> Result<TlsFiles, String> {
        let ca = self.etcd_ca.as_deref().ok_or(
            "an etcds:// store needs --etcd-ca FILE (or MICROFAAS_ETCD_CA): the CA that signed \
             the members' certificates",
        )?;
        let client = match (&self.etcd_cert, &self.etcd_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: absolute(cert),
                key: absolute(key),
            }),
            (Some(_), None) => return Err("--etcd-cert needs --etcd-key".to_string()),
            (None, Some(_)) => return Err("--etcd-key needs --etcd-cert".to_string()),
        };
        Ok(TlsFiles {
            ca: absolute(ca),
            client,
        })
    }
}

/// What the command chose: `Ok(None)` leaves the choice to the manifests; `Some(None)` is
/// SQLite. TLS flags go with an `etcds://` URL only: with `etcd://` they are an error (the
/// user meant TLS), without `--store` they are left unused.
pub fn resolve(
    store: Option<StoreArg>,
    tls: &EtcdTlsArgs,
) -> Result<Option<Option<EtcdLocation>>, String> {
    Ok(match store {
        Some(StoreArg::Etcd(p)) if p.tls => Some(Some(EtcdLocation {
            tls: Some(tls.files()?),
            ..p.location
        })),
        Some(StoreArg::Etcd(_)) if tls.any() => {
            return Err(
                "--etcd-ca/--etcd-cert/--etcd-key are for TLS: the store URL says etcd:// \
                 (plain HTTP); write etcds://"
                    .to_string(),
            );
        }
        Some(StoreArg::Etcd(p)) => Some(Some(p.location)),
        Some(StoreArg::Sqlite) => Some(None),
        Some(StoreArg::Unset) | None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> EtcdTlsArgs {
        EtcdTlsArgs {
            etcd_ca: ca.map(PathBuf::from),
            etcd_cert: cert.map(PathBuf::from),
            etcd_key: key.map(PathBuf::from),
        }
    }

    #[test]
    fn etcds_takes_the_tls_files_and_etcd_refuses_them() {
        let url = || parse_store("etcds://127.0.0.1:2379/p").ok();
        let loc = resolve(url(), &tls(Some("/ca.pem"), Some("/c.pem"), Some("/k.pem")))
            .expect("resolves")
            .flatten()
            .expect("etcd");
        assert_eq!(loc.url(), "etcds://127.0.0.1:2379/p");
        let files = loc.tls.expect("tls");
        assert_eq!(files.ca, PathBuf::from("/ca.pem"));
        assert_eq!(
            files.client.map(|c| (c.cert, c.key)),
            Some(("/c.pem".into(), "/k.pem".into()))
        );
        let e = resolve(url(), &tls(None, None, None)).expect_err("no CA");
        assert!(e.contains("needs --etcd-ca"), "{e}");
        let e = resolve(url(), &tls(Some("/ca"), Some("/c"), None)).expect_err("no key");
        assert!(e.contains("--etcd-cert needs --etcd-key"), "{e}");
        let plain = parse_store("etcd://127.0.0.1:2379/p").ok();
        let e = resolve(plain.clone(), &tls(Some("/ca"), None, None)).expect_err("plain");
        assert!(e.contains("write etcds://"), "{e}");
        let loc = resolve(plain, &tls(None, None, None))
            .expect("plain")
            .flatten()
            .expect("etcd");
        assert_eq!(
            (loc.url().as_str(), loc.tls),
            ("etcd://127.0.0.1:2379/p", None)
        );
        // no --store: the flags wait for a manifest's store, unused
        assert!(matches!(
            resolve(None, &tls(Some("/ca"), None, None)),
            Ok(None)
        ));
    }
}
