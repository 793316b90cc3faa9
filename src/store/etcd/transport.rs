//! Connections to etcd members: plain TCP, or TLS (rustls) when the store names TLS files.
//! The handshake happens at connect, under the same timeouts as a request, so a TLS problem
//! (unknown CA, a name the certificate does not cover, a plain-HTTP member) is an error naming
//! the endpoint rather than a hang; [`Connector::tls_reason`] tells such failures apart from
//! a member that is simply down.

use super::tls::{Tls, TlsFileError, TlsFiles};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for an endpoint to accept a connection, and for an answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint as `host:port` (an `http://` or `https://` in front is accepted and dropped).
pub fn host_port(endpoint: &str) -> &str {
    let e = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    e.trim_end_matches('/')
}

/// The host part of an endpoint, without the port or an IPv6 literal's brackets.
fn host(endpoint: &str) -> &str {
    let hp = host_port(endpoint);
    let h = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    h.trim_start_matches('[').trim_end_matches(']')
}

/// A TLS failure found by this module (the handshake's own errors are rustls errors).
#[derive(Debug)]
struct TlsFailure(String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

fn tls_failure(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(reason))
}

/// One connection to a member.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The socket during a handshake, keeping the first bytes the member sent: a member that
/// answers a ClientHello with `HTTP/` speaks plain HTTP.
struct Sniff<'a> {
    tcp: &'a mut TcpStream,
    first: Vec<u8>,
}

impl Read for Sniff<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        let want = 5usize.saturating_sub(self.first.len()).min(n);
        self.first.extend_from_slice(&buf[..want]);
        Ok(n)
    }
}

impl Write for Sniff<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// How connections to one store's members are made: plain, or TLS with one loaded setup.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Result<Arc<Tls>, TlsFileError>>,
}

impl Connector {
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// Loads the TLS files now, failing on one that cannot be used.
    pub fn load(files: Option<&TlsFiles>) -> Result<Connector, TlsFileError> {
        Ok(Connector {
            tls: files.map(|f| f.load().map(Arc::new)).transpose()?.map(Ok),
        })
    }

    /// As [`Connector::load`], but a file that cannot be used fails every connection instead
    /// (for connections made after the store has opened, which already checked the files).
    pub fn lazy(files: Option<&TlsFiles>) -> Connector {
        Connector {
            tls: files.map(|f| f.load().map(Arc::new)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A connection to `endpoint`, with the TLS handshake done; reads and writes time out
    /// after [`IO_TIMEOUT`].
    pub fn connect(&self, endpoint: &str) -> io::Result<Stream> {
        let mut tcp = tcp_connect(endpoint)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let tls = match &self.tls {
            None => return Ok(Stream::Plain(tcp)),
            Some(Err(e)) => return Err(tls_failure(e.to_string())),
            Some(Ok(tls)) => tls,
        };
        let name = ServerName::try_from(host(endpoint).to_string()).map_err(|_| {
            tls_failure(format!(
                "`{}` is neither a DNS name nor an IP address a certificate can name",
                host(endpoint)
            ))
        })?;
        let mut conn = ClientConnection::new(tls.config.clone(), name)
            .map_err(|e| tls_failure(e.to_string()))?;
        let mut sniff = Sniff {
            tcp: &mut tcp,
            first: Vec::new(),
        };
        while conn.is_handshaking() {
            match conn.complete_io(&mut sniff) {
                Ok(_) => {}
                Err(_) if sniff.first.starts_with(b"HTTP/") => {
                    return Err(tls_failure(PLAIN_MEMBER.to_string()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(tls_failure(format!(
                        "no TLS handshake within {IO_TIMEOUT:?} (is this a TLS endpoint?)"
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(tls_failure(if speaks_http(endpoint) {
                        PLAIN_MEMBER.to_string()
                    } else {
                        "the member closed the connection during the TLS handshake".to_string()
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TLS reason of a failed connect or exchange with `endpoint`, `None` when the
    /// failure is not about TLS (refused, reset, timed out on a working connection).
    pub fn tls_reason(&self, endpoint: &str, e: &io::Error) -> Option<String> {
        let inner = e.get_ref()?;
        if let Some(f) = inner.downcast_ref::<TlsFailure>() {
            return Some(f.0.clone());
        }
        let r = inner.downcast_ref::<rustls::Error>()?;
        Some(match &self.tls {
            Some(Ok(tls)) => tls.explain(host(endpoint), r),
            _ => format!("TLS failed: {r}"),
        })
    }
}

const PLAIN_MEMBER: &str = "the member speaks plain HTTP, not TLS (drop `tls` / use \
     etcd://, or serve TLS on it: --cert-file, --key-file, https:// client URLs)";

/// Whether `endpoint` answers a plain HTTP request with HTTP. etcd drops a TLS handshake on a
/// plain client port without a word; this tells that from a member going away.
fn speaks_http(endpoint: &str) -> bool {
    let Ok(mut tcp) = tcp_connect(endpoint) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
    let req = format!(
        "GET /version HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host_port(endpoint)
    );
    let mut first = [0u8; 5];
    tcp.write_all(req.as_bytes()).is_ok()
        && tcp.read_exact(&mut first).is_ok()
        && &first == b"HTTP/"
}

/// Whether `endpoint` answers a TLS ClientHello with a certificate. etcd drops a plain
/// request on a TLS client port without a word; this tells that from a member going away.
/// The handshake trusts nothing and is never completed: nothing is sent but the hello.
pub fn speaks_tls(endpoint: &str) -> bool {
    let (Ok(mut tcp), Ok(config), Ok(name)) = (
        tcp_connect(endpoint),
        super::tls::trusting_nothing(),
        ServerName::try_from(host(endpoint).to_string()),
    ) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
    let Ok(mut conn) = ClientConnection::new(config, name) else {
        return false;
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
        }
    }
    false
}

fn tcp_connect(endpoint: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in host_port(endpoint).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Why a plain-HTTP exchange on a fresh connection to `endpoint` found it closed, if the
/// reason is that the member serves TLS.
pub fn plain_to_tls(endpoint: &str, e: &io::Error) -> Option<String> {
    (e.kind() == io::ErrorKind::UnexpectedEof && speaks_tls(endpoint)).then(|| {
        "the member serves TLS but the store speaks plain HTTP (use etcds:// with --etcd-ca, \
         or `tls` in Cluster.spec.store.etcd)"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_cut_from_endpoints() {
        assert_eq!(host("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host("https://etcd-1.lab:2379/"), "etcd-1.lab");
        assert_eq!(host("[::1]:2379"), "::1");
        assert_eq!(host_port("http://h:1"), "h:1");
    }
}
