//! Wall-clock timestamps as RFC 3339 UTC strings (what the store records and `get` prints).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, e.g. `2026-11-29T16:39:27.123Z`.
pub fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_unix_millis(d.as_millis() as i64)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn format_unix_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        // date -u -d @1795970367 → Sun Nov 29 16:39:27 UTC 2026
        assert_eq!(
            format_unix_millis(1_795_970_367_123),
            "2026-11-29T16:39:27.123Z"
        );
        assert_eq!(
            format_unix_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn rfc3339_as_clients_send_it() {
        let t = 1_795_970_367_000;
        for (s, want) in [
            ("2026-11-29T16:39:27Z", Some(t)),
            ("2026-11-29T16:39:27.123Z", Some(t + 123)),
            ("2026-11-29T16:39:27.1Z", Some(t + 100)),
            ("2026-11-29T16:39:27.123456789Z", Some(t + 123)),
            ("2026-11-29T17:39:27+01:00", Some(t)),
            ("2026-11-29T11:09:27.5-05:30", Some(t + 500)),
            ("2026-11-29 16:39:27z", Some(t)),
            ("2026-11-29T16:39:27", None),
            ("2026-11-29T16:39:27+0100", None),
            ("2026-13-29T16:39:27Z", None),
            ("2026-11-29T16:39:27.Z", None),
            ("yesterday", None),
            ("2026-11-29T16:39:2xZ", None),
        ] {
            assert_eq!(parse_rfc3339_millis(s), want, "{s}");
        }
        assert_eq!(
            parse_rfc3339_millis("2026-11-29T16:39:27.123Z"),
            Some(t + 123)
        );
        assert_eq!(
            parse_rfc3339_millis(&format_unix_millis(t + 7)),
            Some(t + 7)
        );
    }
}

/// Milliseconds since the Unix epoch of any RFC 3339 timestamp, the ones `format_unix_millis`
/// writes and the ones clients send (`2026-11-29T17:39:27+01:00`, `...27.123456789Z`): a
/// fraction of any length (cut to milliseconds), `Z` or a `±HH:MM` offset. `None` otherwise.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let base = civil_millis(s)?;
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        millis = first3.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let n = |a: &u8, b: &u8| i64::from((a - b'0') * 10 + (b - b'0'));
            let m = n(h1, h2) * 60 + n(m1, m2);
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    Some(base + millis - offset_min * 60_000)
}

/// The whole seconds of `YYYY-MM-DDTHH:MM:SS...` (first 19 bytes) as unix milliseconds, with
/// each field in its range.
fn civil_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse::<i64>().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // days-from-civil, the inverse of civil_from_days
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// kubectl-style age: `5s`, `3m`, `2h`, `4d`.
pub fn age(since: &str) -> String {
    let Some(t) = parse_rfc3339_millis(since) else {
        return "<unknown>".to_string();
    };
    let s = (now_millis() - t).max(0) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn round_trip() {
        for ms in [0, 1_795_970_367_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_millis(&format_unix_millis(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_millis("yesterday"), None);
    }
}
