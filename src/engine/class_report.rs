//! A finished method's test predictions by class: per-class accuracy, how often the
//! TDMR target agrees with its teacher, and the confusions it makes most. This is the
//! teacher-against-target view of what distillation carried over.

use serde::{Deserialize, Serialize};

/// Images of class `truth` predicted as `predicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub truth: usize,
    pub predicted: usize,
    pub count: usize,
}

/// How many of the most frequent confusions a report keeps.
pub const CONFUSIONS: usize = 3;

/// Accuracy of each of `classes` classes (0 where a class has no test image).
pub fn per_class(truth: &[u32], predicted: &[u32], classes: usize) -> Vec<f64> {
    let (mut right, mut seen) = (vec![0usize; classes], vec![0usize; classes]);
    for (&t, &p) in truth.iter().zip(predicted) {
        let t = t as usize;
        if t < classes {
            seen[t] += 1;
            right[t] += usize::from(t == p as usize);
        }
    }
    right
        .iter()
        .zip(&seen)
        .map(|(&r, &n)| if n == 0 { 0.0 } else { r as f64 / n as f64 })
        .collect()
}

/// The share of images on which two models predict the same class.
pub fn agreement(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().min(b.len()).max(1) as f64
}

/// The `CONFUSIONS` most frequent wrong (truth, predicted) pairs, most frequent first
/// (ties by class order, so a report is the same on every run).
pub fn most_confused(truth: &[u32], predicted: &[u32]) -> Vec<Confusion> {
    let mut counts = std::collections::BTreeMap::<(usize, usize), usize>::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        if t != p {
            *counts.entry((t as usize, p as usize)).or_default() += 1;
        }
    }
    let mut pairs: Vec<Confusion> = counts
        .into_iter()
        .map(|((truth, predicted), count)| Confusion { truth, predicted, count })
        .collect();
    pairs.sort_by(|a, b| b.count.cmp(&a.count).then((a.truth, a.predicted).cmp(&(b.truth, b.predicted))));
    pairs.truncate(CONFUSIONS);
    pairs
}

/// Where a method stood when a report was taken before it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct During {
    pub stage: String,
    pub epoch: usize,
}

/// The `class-report` event for `method`'s `predicted` classes; with the `teacher`'s
/// predictions, how often they agree.
pub fn report(
    method: &str,
    truth: &[u32],
    predicted: &[u32],
    classes: usize,
    teacher: Option<&[u32]>,
    during: Option<During>,
) -> super::Event {
    super::Event::ClassReport {
        method: method.into(),
        per_class: per_class(truth, predicted, classes),
        agreement: teacher.map(|t| agreement(predicted, t)),
        confused: most_confused(truth, predicted),
        during,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_by_class() {
        let truth = [0, 0, 0, 1, 1, 2, 2, 2];
        let pred = [0, 1, 1, 1, 0, 2, 1, 2];
        let acc = per_class(&truth, &pred, 4);
        assert_eq!(acc, vec![1.0 / 3.0, 0.5, 2.0 / 3.0, 0.0]);
        let c = most_confused(&truth, &pred);
        assert_eq!(
            c[0],
            Confusion {
                truth: 0,
                predicted: 1,
                count: 2
            }
        );
        assert_eq!(
            c[1..],
            [
                Confusion {
                    truth: 1,
                    predicted: 0,
                    count: 1
                },
                Confusion {
                    truth: 2,
                    predicted: 1,
                    count: 1
                }
            ]
        );
        assert_eq!(agreement(&pred, &[0, 1, 0, 1, 0, 0, 0, 0]), 0.5);
    }
}
