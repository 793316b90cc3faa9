//! An S3 client for one object at a time: path-style `PUT`/`GET /bucket/key` over HTTP/1.1,
//! signed with AWS Signature Version 4 (`x-amz-content-sha256` carries the payload's hash).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{Conn, http};
use crate::functions::hex;
use crate::protocol::ServiceBinding;

type HmacSha256 = Hmac<Sha256>;

/// What a request is signed for.
pub struct Signer<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
}

impl Signer<'_> {
    /// The `Authorization` header for a request whose (lower-case name, value) headers are
    /// all signed.
    pub fn authorization(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        payload_hash: &str,
    ) -> String {
        let mut sorted: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        sorted.sort();
        let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical =
            format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}");
        let date = &self.amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.amz_date,
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region, self.service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
            self.access_key,
            hex(&hmac(&key, to_sign.as_bytes()))
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// URI-encodes a key for the path (RFC 3986 unreserved kept, `/` kept).
pub fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (proleptic Gregorian, UTC).
pub fn amz_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Sends one signed request for `key` in the binding's bucket.
pub fn object(
    conn: Conn,
    b: &ServiceBinding,
    method: &str,
    key: &str,
    body: &[u8],
) -> Result<http::Response, String> {
    let bucket = b.target.as_deref().ok_or("no bucket configured")?;
    let access_key = b.user.as_deref().ok_or("no access key configured")?;
    let secret_key = b.password.as_deref().ok_or("no secret key configured")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signer = Signer {
        access_key,
        secret_key,
        region: b.region.as_deref().unwrap_or("us-east-1"),
        service: "s3",
        amz_date: amz_date(now),
    };
    let path = format!("/{}/{}", encode_path(bucket), encode_path(key));
    let payload_hash = hex(&Sha256::digest(body));
    let mut headers = vec![
        ("host".to_string(), b.address.clone()),
        ("x-amz-content-sha256".to_string(), payload_hash.clone()),
        ("x-amz-date".to_string(), signer.amz_date.clone()),
    ];
    let auth = signer.authorization(method, &path, "", &headers, &payload_hash);
    headers.remove(0);
    headers.push(("Authorization".to_string(), auth));
    http::request(conn, method, &b.address, &path, &headers, body)
}

/// The S3 error code of an XML error body, for messages.
pub fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or_else(|| "no error code".to_string(), |(code, _)| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_matches_aws_get_vanilla() {
        // The AWS SigV4 test suite's `get-vanilla` case.
        let s = Signer {
            access_key: "AKIDEXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
            amz_date: "20150830T123600Z".into(),
        };
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty = hex(&Sha256::digest(b""));
        assert_eq!(
            s.authorization("GET", "/", "", &headers, &empty),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn dates_and_paths() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(encode_path("a b/c+d"), "a%20b/c%2Bd");
    }
}
