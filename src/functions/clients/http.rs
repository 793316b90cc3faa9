//! A minimal HTTP/1.1 client for the object store: one request per connection
//! (`Connection: close`), the response body by `Content-Length`, chunks, or end of stream.

use super::Conn;

/// Largest response body accepted.
pub const MAX_BODY: usize = 64 << 20;

/// A response: status, headers and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `headers` (Host and Content-Length are added) and `body`.
pub fn request(
    mut conn: Conn,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;

    let status_line = text(conn.read_line(8192)?);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = text(conn.read_line(8192)?);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if headers.len() > 200 {
            return Err("too many response headers".into());
        }
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(r);
    }
    if r.header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = text(conn.read_line(1024)?);
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            if r.body.len() + size > MAX_BODY {
                return Err(format!("response body larger than {MAX_BODY} bytes"));
            }
            r.body.extend(conn.read_vec(size)?);
            conn.read_line(8)?;
        }
    } else if let Some(len) = r.header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if len > MAX_BODY {
            return Err(format!("response body larger than {MAX_BODY} bytes"));
        }
        r.body = conn.read_vec(len)?;
    } else {
        r.body = conn.read_to_end(MAX_BODY)?;
    }
    Ok(r)
}

fn text(line: Vec<u8>) -> String {
    String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}
