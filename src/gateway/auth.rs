//! HTTP basic auth for every route but `/healthz` and `/metrics`: the expected
//! `Authorization` value is computed once and compared in constant time.

use super::{Gateway, GatewayError};
use crate::engine::vm::VmDriver;
use crate::manifest::types::BasicAuth;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The gateway's user and password.
#[derive(Clone)]
pub struct Credentials {
    /// `Basic base64(user:password)`.
    expected: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Self {
        Credentials {
            expected: format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
        }
    }

    /// Reads the password from `passwordFile` (trailing newline dropped) or `passwordEnv`.
    pub fn from_spec(b: &BasicAuth) -> Result<Self, GatewayError> {
        let password = match (&b.password_file, &b.password_env) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| GatewayError::Password(format!("cannot read {f}: {e}")))?,
            (None, Some(v)) => std::env::var(v)
                .map_err(|_| GatewayError::Password(format!("variable {v} is not set")))?,
            (None, None) => {
                return Err(GatewayError::Password(
                    "basicAuth names neither passwordFile nor passwordEnv".into(),
                ));
            }
        };
        if password.is_empty() {
            return Err(GatewayError::Password("the password is empty".into()));
        }
        Ok(Credentials::new(&b.user, &password))
    }

    fn accepts(&self, given: &[u8]) -> bool {
        let want = self.expected.as_bytes();
        // Constant time over the expected length: no early exit on the first differing byte.
        let mut diff = u8::from(given.len() != want.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// Middleware: 401 with a `WWW-Authenticate` challenge unless the request carries the
/// credentials (or the gateway has none).
pub async fn require<D: VmDriver>(
    State(gw): State<Arc<Gateway<D>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(creds) = &gw.credentials else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if creds.accepts(given) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"microfaas\"")],
            "authentication required\n",
        )
            .into_response()
    }
}

/// Standard base64 with padding (shared with the agent's SCRAM client).
pub use crate::functions::clients::base64::encode as base64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_credentials_pass() {
        let c = Credentials::new("admin", "s3cret");
        assert!(c.accepts(b"Basic YWRtaW46czNjcmV0"));
        assert!(!c.accepts(b"Basic YWRtaW46czNjcmV1"));
        assert!(!c.accepts(b"Basic YWRtaW46czNjcmV0AA"));
        assert!(!c.accepts(b""));
    }
}
