//! Energy from power samples: the trapezoidal rule, i.e. the exact integral of the straight
//! lines between consecutive samples. Two samples further apart than the curve's `max_gap`
//! (a meter that was unplugged or not running) are not joined: nothing is invented for the gap,
//! and the time it covers is reported as unmeasured.

/// A meter's power over time: `(unix ms, watts)` points, sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pts: Vec<(i64, f64)>,
    max_gap_ms: i64,
}

/// Energy over an interval and how much of the interval the samples covered.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Integral {
    pub joules: f64,
    pub covered_ms: i64,
}

impl Curve {
    /// A curve through `points` (any order; of two at the same instant the later one counts).
    pub fn new(mut points: Vec<(i64, f64)>, max_gap_ms: i64) -> Curve {
        points.sort_by_key(|p| p.0);
        let mut pts: Vec<(i64, f64)> = Vec::with_capacity(points.len());
        for p in points {
            match pts.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => pts.push(p),
            }
        }
        Curve { pts, max_gap_ms }
    }

    pub fn points(&self) -> &[(i64, f64)] {
        &self.pts
    }

    /// Sample times strictly inside `(a, b)`.
    pub fn times_within(&self, a: i64, b: i64) -> impl Iterator<Item = i64> + '_ {
        let from = self.pts.partition_point(|p| p.0 <= a);
        self.pts[from..]
            .iter()
            .take_while(move |p| p.0 < b)
            .map(|p| p.0)
    }

    /// Energy in joules over `[a, b]` (unix ms).
    pub fn integrate(&self, a: i64, b: i64) -> Integral {
        let mut out = Integral::default();
        if b <= a || self.pts.len() < 2 {
            return out;
        }
        // The first segment that can overlap [a, b] ends after a.
        let first = self.pts.partition_point(|p| p.0 <= a).saturating_sub(1);
        for w in self.pts[first..].windows(2) {
            let ((t0, w0), (t1, w1)) = (w[0], w[1]);
            if t0 >= b {
                break;
            }
            if t1 - t0 > self.max_gap_ms {
                continue;
            }
            let (s, e) = (a.max(t0), b.min(t1));
            if e <= s {
                continue;
            }
            let at = |t: i64| w0 + (w1 - w0) * (t - t0) as f64 / (t1 - t0) as f64;
            out.joules += (at(s) + at(e)) / 2.0 * (e - s) as f64 / 1000.0;
            out.covered_ms += e - s;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn constant_power() {
        // 10 W for 60 s = 600 J, however the window cuts the samples.
        let c = Curve::new((0..=60).map(|s| (s * 1000, 10.0)).collect(), 5000);
        assert!(close(c.integrate(0, 60_000).joules, 600.0));
        assert!(close(c.integrate(500, 1500).joules, 10.0));
        assert_eq!(c.integrate(0, 60_000).covered_ms, 60_000);
    }

    #[test]
    fn ramp() {
        // 0 W at 0 s rising to 100 W at 10 s: the triangle, 500 J; its first half 125 J.
        let c = Curve::new(vec![(0, 0.0), (10_000, 100.0)], 20_000);
        assert!(close(c.integrate(0, 10_000).joules, 500.0));
        assert!(close(c.integrate(0, 5_000).joules, 125.0));
        assert!(close(c.integrate(5_000, 10_000).joules, 375.0));
        // Outside the samples nothing is known.
        assert!(close(c.integrate(-5_000, 15_000).joules, 500.0));
        assert_eq!(c.integrate(-5_000, 15_000).covered_ms, 10_000);
    }

    #[test]
    fn gaps_are_not_bridged() {
        // 2 W over [0, 2] s, a 10 s hole, then 4 W over [12, 14] s: 4 J + 8 J, 4 s covered.
        let c = Curve::new(
            vec![
                (0, 2.0),
                (1000, 2.0),
                (2000, 2.0),
                (12_000, 4.0),
                (13_000, 4.0),
                (14_000, 4.0),
            ],
            3000,
        );
        let i = c.integrate(0, 14_000);
        assert!(close(i.joules, 12.0), "{i:?}");
        assert_eq!(i.covered_ms, 4000);
        // With a tolerance wider than the hole the trapezoid spans it: +30 J.
        let wide = Curve::new(c.points().to_vec(), 60_000);
        assert!(close(wide.integrate(0, 14_000).joules, 42.0));
    }

    #[test]
    fn unsorted_and_duplicate_samples() {
        let c = Curve::new(vec![(2000, 5.0), (0, 5.0), (1000, 1.0), (1000, 5.0)], 5000);
        assert!(close(c.integrate(0, 2000).joules, 10.0));
        assert_eq!(c.times_within(0, 2000).collect::<Vec<_>>(), vec![1000]);
    }
}
