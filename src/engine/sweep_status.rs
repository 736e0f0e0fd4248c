//! A sweep directory as it stands right now, for `tdmr attach SWEEP_DIR`: every
//! point's sub-runs, how far each has got, and the ranking by validation so far. The
//! sub-runs' `metrics.jsonl` files are followed incrementally, so a refresh reads only
//! what was appended since the last one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::line_follower::LineFollower;
use super::report::mean_std;
use super::run_dir::{seed_dir, seed_of};
use super::sweep::{rank, PointResult};
use super::Event;
use crate::{Error, Result};

/// The file `tdmr sweep` writes before its first point runs: what the sweep will run.
pub const MANIFEST: &str = "sweep.json";
/// The folder of the best point's run on the test split.
pub const BEST_ON_TEST: &str = "best-on-test";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub rank_by: String,
    pub seeds: Vec<u64>,
    pub points: Vec<ManifestPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPoint {
    pub name: String,
    pub overrides: Vec<String>,
}

/// Which split a sub-run reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Validation,
    Test,
}

/// How far a sub-run has got, from its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// No run directory (or no `metrics.jsonl`) yet.
    Pending,
    /// Started and not finished: training now, or stopped and waiting to be resumed.
    Started {
        method: String,
        stage: String,
        epoch: usize,
        epochs: usize,
    },
    Done,
    Failed(String),
}

/// One seed of one point (or of the best point's test run).
pub struct SubRun {
    pub point: String,
    pub overrides: Vec<String>,
    pub seed: u64,
    pub dir: PathBuf,
    pub split: Split,
    pub progress: Progress,
    /// Accuracy of every method finished so far, on this sub-run's split.
    pub results: BTreeMap<String, f64>,
    lines: Option<LineFollower>,
}

impl SubRun {
    fn new(point: &str, overrides: &[String], seed: u64, dir: PathBuf, split: Split) -> SubRun {
        SubRun {
            point: point.into(),
            overrides: overrides.to_vec(),
            seed,
            dir,
            split,
            progress: Progress::Pending,
            results: BTreeMap::new(),
            lines: None,
        }
    }

    /// Take in whatever the run appended since the last call; whether there was any.
    fn refresh(&mut self) -> bool {
        if self.lines.is_none() {
            self.lines = LineFollower::open(&self.dir.join("metrics.jsonl")).ok();
        }
        let Some(mut lines) = self.lines.take() else { return false };
        let mut grew = false;
        while let Ok(Some(line)) = lines.next_line() {
            grew = true;
            // A line from another tdmr version may not parse: it says nothing we need.
            let Ok(event) = serde_json::from_str::<Event>(&line) else {
                continue;
            };
            self.take(event);
        }
        self.lines = Some(lines);
        grew
    }

    fn take(&mut self, event: Event) {
        match event {
            // Started, or resumed after a failure: running again, position not yet known.
            Event::RunStarted { .. } if self.progress == Progress::Pending => self.progress = starting(String::new(), String::new(), 0, 0),
            Event::RunResumed { .. } if matches!(self.progress, Progress::Pending | Progress::Failed(_)) => {
                self.progress = starting(String::new(), String::new(), 0, 0)
            }
            Event::StageStarted { method, stage, epochs, .. } => self.progress = starting(method, stage, 0, epochs),
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                ..
            } => self.progress = starting(method, stage, epoch, epochs),
            Event::MethodDone { method, test_acc, .. } => {
                self.results.insert(method, test_acc);
            }
            Event::Done { summary, .. } => {
                self.results = summary.into_iter().map(|(m, r)| (m, r.test_acc)).collect();
                self.progress = Progress::Done;
            }
            Event::Failed { message, .. } => self.progress = Progress::Failed(message),
            _ => {}
        }
    }
}

fn starting(method: String, stage: String, epoch: usize, epochs: usize) -> Progress {
    Progress::Started {
        method,
        stage,
        epoch,
        epochs,
    }
}

/// A sweep directory, followed.
pub struct SweepStatus {
    pub root: PathBuf,
    pub rank_by: String,
    pub runs: Vec<SubRun>,
}

/// Whether `dir` holds a sweep: its manifest, or (a sweep from before manifests) point
/// folders with seed sub-runs.
pub fn is_sweep(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file() || !scan(dir).is_empty()
}

/// `pN-…/seed-S` folders, in point order then seed order.
fn scan(dir: &Path) -> Vec<(String, u64)> {
    let mut found: Vec<(usize, String, u64)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    for point in entries.flatten() {
        let name = point.file_name().to_string_lossy().to_string();
        let Some(index) = name
            .strip_prefix('p')
            .and_then(|r| r.split('-').next())
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        for seed in seeds_in(&point.path()) {
            found.push((index, name.clone(), seed));
        }
    }
    found.sort();
    found.into_iter().map(|(_, n, s)| (n, s)).collect()
}

fn seeds_in(dir: &Path) -> Vec<u64> {
    let mut seeds: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| seed_of(&e.file_name().to_string_lossy()))
        .collect();
    seeds.sort();
    seeds
}

impl SweepStatus {
    pub fn open(root: &Path) -> Result<SweepStatus> {
        let manifest_path = root.join(MANIFEST);
        let manifest = if manifest_path.is_file() {
            let text = std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
            serde_json::from_str::<Manifest>(&text).map_err(|e| Error::File {
                path: manifest_path.clone(),
                msg: format!("not a sweep manifest: {e}"),
            })?
        } else {
            let found = scan(root);
            if found.is_empty() {
                return Err(Error::File {
                    path: root.into(),
                    msg: format!("not a sweep directory: no {MANIFEST} and no pN-…/seed-S/ sub-runs"),
                });
            }
            let mut points: Vec<ManifestPoint> = Vec::new();
            for (name, _) in &found {
                if points.last().is_none_or(|p| &p.name != name) {
                    points.push(ManifestPoint {
                        name: name.clone(),
                        overrides: Vec::new(),
                    });
                }
            }
            let mut seeds: Vec<u64> = found.iter().map(|(_, s)| *s).collect();
            seeds.sort();
            seeds.dedup();
            Manifest {
                rank_by: "tdmr".into(),
                seeds,
                points,
            }
        };
        let mut runs = Vec::new();
        for p in &manifest.points {
            for &seed in &manifest.seeds {
                let dir = seed_dir(&root.join(&p.name), seed);
                runs.push(SubRun::new(&p.name, &p.overrides, seed, dir, Split::Validation));
            }
        }
        // The best point is known only once every point is ranked; until then its
        // test sub-runs are whatever `best-on-test/` holds.
        let best = root.join(BEST_ON_TEST);
        let test_seeds = if best.is_dir() { seeds_in(&best) } else { manifest.seeds.clone() };
        for seed in test_seeds {
            runs.push(SubRun::new(BEST_ON_TEST, &[], seed, seed_dir(&best, seed), Split::Test));
        }
        let mut status = SweepStatus {
            root: root.into(),
            rank_by: manifest.rank_by,
            runs,
        };
        status.refresh();
        Ok(status)
    }

    /// Read what every sub-run appended; whether anything was.
    pub fn refresh(&mut self) -> bool {
        self.runs.iter_mut().fold(false, |grew, r| r.refresh() | grew)
    }

    /// Points with at least one finished validation seed, best first by the mean of
    /// those seeds' `rank_by` accuracy: (point, mean, seeds counted). Test figures are
    /// never read here.
    pub fn ranking(&self) -> Vec<(String, f64, usize)> {
        let mut points: Vec<PointResult> = Vec::new();
        for r in self
            .runs
            .iter()
            .filter(|r| r.split == Split::Validation && r.progress == Progress::Done)
        {
            let Some(&acc) = r.results.get(&self.rank_by) else {
                continue;
            };
            match points.iter_mut().find(|p| p.name == r.point) {
                Some(p) => p.validation.entry(self.rank_by.clone()).or_default().push(acc),
                None => points.push(PointResult {
                    name: r.point.clone(),
                    overrides: r.overrides.clone(),
                    validation: [(self.rank_by.clone(), vec![acc])].into_iter().collect(),
                }),
            }
        }
        let order = rank(&points, &self.rank_by).unwrap_or_default();
        order
            .into_iter()
            .map(|i| {
                let v = &points[i].validation[&self.rank_by];
                (points[i].name.clone(), mean_std(v).0, v.len())
            })
            .collect()
    }

    /// Sub-runs finished, of all the sweep will run.
    pub fn done(&self) -> (usize, usize) {
        (self.runs.iter().filter(|r| r.progress == Progress::Done).count(), self.runs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(event: &Event) -> String {
        serde_json::to_string(event).unwrap() + "\n"
    }

    #[test]
    fn follows_sub_runs_as_they_grow_and_ranks_finished_points_by_validation() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let manifest = Manifest {
            rank_by: "tdmr".into(),
            seeds: vec![0],
            points: ["p0-a=1", "p1-a=2"]
                .iter()
                .map(|n| ManifestPoint {
                    name: n.to_string(),
                    overrides: vec![format!("a={}", &n[5..])],
                })
                .collect(),
        };
        std::fs::write(root.join(MANIFEST), serde_json::to_string(&manifest).unwrap()).unwrap();
        assert!(is_sweep(root));
        let mut s = SweepStatus::open(root).unwrap();
        assert_eq!(s.runs.len(), 3, "two points and the test run of the best");
        assert!(s.runs.iter().all(|r| r.progress == Progress::Pending));
        assert!(s.ranking().is_empty());

        let sub = |p: &str| root.join(p).join("seed-0");
        for p in ["p0-a=1", "p1-a=2"] {
            std::fs::create_dir_all(sub(p)).unwrap();
        }
        let done = |acc: f64| Event::MethodDone {
            method: "tdmr".into(),
            test_acc: acc,
            trainable_params: 1,
            wall_s: 1.0,
            foundation_forwards: 0,
        };
        let summary = |acc: f64| Event::Done {
            summary: [(
                "tdmr".to_string(),
                crate::engine::MethodResult {
                    test_acc: acc,
                    trainable_params: 1,
                    wall_s: 1.0,
                },
            )]
            .into_iter()
            .collect(),
            wall_s: 2.0,
        };
        let epoch = Event::StageStarted {
            method: "tdmr".into(),
            stage: "align".into(),
            epochs: 4,
            steps_per_epoch: 2,
            trainable_params: 1,
        };
        // p1 finishes with the higher figure; p0 is half written, its last line torn.
        std::fs::write(sub("p1-a=2").join("metrics.jsonl"), line(&done(0.7)) + &line(&summary(0.7))).unwrap();
        let torn = line(&summary(0.5));
        std::fs::write(sub("p0-a=1").join("metrics.jsonl"), line(&epoch) + &torn[..10]).unwrap();
        assert!(s.refresh(), "new lines are news");
        assert!(!s.refresh(), "a torn line alone is not");
        assert_eq!(s.runs[1].progress, Progress::Done);
        assert!(matches!(&s.runs[0].progress, Progress::Started { stage, epochs: 4, .. } if stage == "align"));
        assert_eq!(s.ranking(), [("p1-a=2".to_string(), 0.7, 1)]);

        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(sub("p0-a=1").join("metrics.jsonl"))
            .unwrap();
        f.write_all(&torn.as_bytes()[10..]).unwrap();
        // The best-on-test run would put p0 first; the ranking must not see it.
        std::fs::create_dir_all(root.join(BEST_ON_TEST).join("seed-0")).unwrap();
        std::fs::write(root.join(BEST_ON_TEST).join("seed-0/metrics.jsonl"), line(&summary(0.99))).unwrap();
        s.refresh();
        assert_eq!(s.runs[0].progress, Progress::Done);
        assert_eq!(s.runs[2].results["tdmr"], 0.99);
        let ranked: Vec<String> = s.ranking().into_iter().map(|r| r.0).collect();
        assert_eq!(ranked, ["p1-a=2", "p0-a=1"]);
        assert_eq!(s.done(), (3, 3));
    }

    #[test]
    fn an_old_sweep_without_a_manifest_is_found_by_its_folders() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["p1-x=2/seed-4", "p0-x=1/seed-4", "p0-x=1/seed-3", "notes"] {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        let s = SweepStatus::open(dir.path()).unwrap();
        let names: Vec<(String, u64)> = s.runs.iter().map(|r| (r.point.clone(), r.seed)).collect();
        assert_eq!(
            names,
            [
                ("p0-x=1".to_string(), 3),
                ("p0-x=1".to_string(), 4),
                ("p1-x=2".to_string(), 3),
                ("p1-x=2".to_string(), 4),
                (BEST_ON_TEST.to_string(), 3),
                (BEST_ON_TEST.to_string(), 4)
            ]
        );
        let e = SweepStatus::open(&dir.path().join("notes")).err().unwrap().to_string();
        assert!(e.contains("not a sweep directory") && e.contains("notes"), "{e}");
    }
}
