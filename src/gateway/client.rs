//! A small HTTP/1.1 client over hyper's connection API, for async-call callbacks (and tests
//! and benches of the gateway): plain `http://host:port/path` URLs, one request per connection
//! unless a [`Conn`] is kept.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http:// URL with a host")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `http://host:port/path?query` split into the address to dial and the request target.
pub fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(ClientError::Url(url.to_string()));
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, path.to_string()))
}

/// A response: status, headers (lower-case names) and body; the same type the agent's
/// object-store client returns.
pub use crate::functions::clients::http::Response;

/// One kept-alive connection to a host.
pub struct Conn {
    host: String,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: &str, timeout: Duration) -> Result<Conn, ClientError> {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| ClientError::Connect(addr.to_string(), e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            host: addr.to_string(),
            sender,
        })
    }

    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }
}

/// One request on a connection of its own.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let (addr, target) = split_url(url)?;
    let mut c = Conn::open(&addr, timeout).await?;
    c.send(method, &target, headers, body, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_target() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/cb?x=1").expect("ok"),
            ("127.0.0.1:8080".to_string(), "/cb?x=1".to_string())
        );
        assert_eq!(
            split_url("http://example.test").expect("ok"),
            ("example.test:80".to_string(), "/".to_string())
        );
        assert!(split_url("https://127.0.0.1/").is_err());
        assert!(split_url("http:///x").is_err());
        assert!(split_url("http://u:p@h/").is_err());
    }
}
