//! A metric's history, kept twice: a recent window at full resolution, and the whole
//! run decimated to a bounded number of points (pairs merged by their mean), so a
//! chart of an hours-long run costs the same as one of a minute.

use std::collections::VecDeque;

/// Points kept in the recent window.
pub const RECENT: usize = 300;
/// The whole-run history is halved when it reaches this many points.
pub const FULL_MAX: usize = 1200;

#[derive(Debug, Clone, Default)]
pub struct Series {
    recent: VecDeque<(f64, f64)>,
    full: Vec<(f64, f64)>,
    /// How many raw points each `full` point stands for (a power of two).
    stride: usize,
    pending: Vec<(f64, f64)>,
    pub last: Option<(f64, f64)>,
}

impl Series {
    pub fn push(&mut self, x: f64, y: f64) {
        if !y.is_finite() {
            return;
        }
        self.last = Some((x, y));
        self.recent.push_back((x, y));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        self.stride = self.stride.max(1);
        self.pending.push((x, y));
        if self.pending.len() >= self.stride {
            self.full.push(mean(&self.pending));
            self.pending.clear();
        }
        if self.full.len() >= FULL_MAX {
            self.full = self.full.chunks(2).map(mean).collect();
            self.stride *= 2;
        }
    }

    pub fn recent(&self) -> Vec<(f64, f64)> {
        self.recent.iter().copied().collect()
    }

    /// The whole run, decimated, plus the points not yet merged.
    pub fn full(&self) -> Vec<(f64, f64)> {
        let mut v = self.full.clone();
        if !self.pending.is_empty() {
            v.push(mean(&self.pending));
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }
}

fn mean(pts: &[(f64, f64)]) -> (f64, f64) {
    let n = pts.len().max(1) as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    (sx / n, sy / n)
}

/// Exponential moving average with TensorBoard's debiasing, so early values are not
/// dragged towards zero.
#[derive(Debug, Clone, Copy)]
pub struct Ema {
    pub alpha: f64,
    value: f64,
    weight: f64,
}

impl Ema {
    pub fn new(alpha: f64) -> Self {
        Ema {
            alpha,
            value: 0.0,
            weight: 0.0,
        }
    }
    pub fn push(&mut self, x: f64) -> f64 {
        self.value = self.alpha * self.value + (1.0 - self.alpha) * x;
        self.weight = self.alpha * self.weight + (1.0 - self.alpha);
        self.get().unwrap_or(x)
    }
    pub fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.value / self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_history_stays_bounded_and_keeps_the_mean() {
        let mut s = Series::default();
        let n = 10_000;
        for i in 0..n {
            s.push(i as f64, (i % 2) as f64);
        }
        let full = s.full();
        assert!(full.len() <= FULL_MAX && full.len() >= FULL_MAX / 4, "{}", full.len());
        let m = full.iter().map(|p| p.1).sum::<f64>() / full.len() as f64;
        assert!((m - 0.5).abs() < 1e-9, "{m}");
        assert_eq!(full.first().unwrap().0, (s.stride as f64 - 1.0) / 2.0);
        assert_eq!(s.recent().len(), RECENT);
        assert_eq!(s.recent().last().unwrap().0, (n - 1) as f64);
    }

    #[test]
    fn ema_is_debiased() {
        let mut e = Ema::new(0.9);
        assert_eq!(e.push(2.0), 2.0);
        for _ in 0..100 {
            e.push(4.0);
        }
        assert!((e.get().unwrap() - 4.0).abs() < 1e-3);
    }
}
