//! Per-object exponential backoff with jitter, capped, reset by a success.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

pub struct Backoff<K> {
    base: Duration,
    cap: Duration,
    failures: HashMap<K, u32>,
    seed: u64,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: HashMap::new(),
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Delay before the next attempt after one more failure: base·2^(n-1), ±20 % jitter so many
    /// objects failing together do not retry in lockstep, never above the cap.
    pub fn fail(&mut self, key: &K) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = self.base.saturating_mul(1u32 << (*n - 1).min(20));
        let capped = exp.min(self.cap);
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = 0.8 + 0.4 * ((self.seed >> 11) as f64 / (1u64 << 53) as f64);
        capped.mul_f64(jitter).min(self.cap)
    }

    pub fn reset(&mut self, key: &K) {
        self.failures.remove(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d1 = b.fail(&"x");
        let d2 = b.fail(&"x");
        let d3 = b.fail(&"x");
        assert!(
            d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120),
            "{d1:?}"
        );
        assert!(
            d2 >= Duration::from_millis(160) && d2 <= Duration::from_millis(240),
            "{d2:?}"
        );
        assert!(
            d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480),
            "{d3:?}"
        );
        for _ in 0..20 {
            assert!(b.fail(&"x") <= Duration::from_secs(2));
        }
        b.reset(&"x");
        assert_eq!(b.failures(&"x"), 0);
        let again = b.fail(&"x");
        assert!(again <= Duration::from_millis(120), "{again:?}");
    }
}
