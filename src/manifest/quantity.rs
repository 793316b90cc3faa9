//! Durations (`500ms`, `10s`, `1m30s`) and sizes (`512Mi`, `1G`) as written in manifests.
//!
//! They stay strings in the resource types so a bad value is reported by validation with its
//! position, alongside every other error, instead of aborting the whole document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A duration written like Go/Kubernetes: one or more `<number><unit>` parts, units
/// `ms`, `s`, `m`, `h`; e.g. `500ms`, `10s`, `1m30s`, `1.5s`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
pub struct Duration(pub String);

/// A size: an integer with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`,
/// `G`, `T`) suffix, as in Kubernetes quantities; a bare number is bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
pub struct Size(pub String);

/// Why a duration or size did not parse; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(String);

impl Duration {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn parse(&self) -> Result<std::time::Duration, QuantityError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Size {
    pub fn parse(&self) -> Result<u64, QuantityError> {
        parse_size(&self.0)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, QuantityError> {
    let bad = || {
        QuantityError(format!(
            "invalid duration `{s}`: expected a number with a unit (ms, s, m, h), e.g. `500ms`, `10s`, `1m30s`"
        ))
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

pub fn parse_size(s: &str) -> Result<u64, QuantityError> {
    let bad = || {
        QuantityError(format!(
            "invalid size `{s}`: expected an integer with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T, e.g. `512Mi`"
        ))
    };
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match &s[digits..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(D::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(D::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(D::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(D::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(D::from_secs(7200)));
        for bad in ["", "10", "s", "10x", "-1s", "1..2s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "Mi", "1.5Gi", "12MB", "-1", "99999999999999999999Ti"] {
            assert!(parse_size(bad).is_err(), "{bad} should not parse");
        }
    }
}
