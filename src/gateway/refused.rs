//! Logs every request the gateway refuses (bad credentials, a bad name or body, a body over
//! the size limit), so a probe or an attack shows in the log and not only in the caller's
//! status code. Values are never logged: only method, path and status.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

pub async fn log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let why = match status {
        StatusCode::UNAUTHORIZED => Some("missing or wrong basic auth"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("body over the size limit"),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Some("bad request"),
        _ => None,
    };
    if let Some(why) = why {
        // Debug-formatted: a path with control characters cannot forge log lines.
        tracing::warn!(%method, path = ?path, status = status.as_u16(), "gateway refused a request: {why}");
    }
    res
}
