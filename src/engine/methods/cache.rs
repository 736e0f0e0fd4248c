//! The frozen teacher's outputs computed once per view and kept (in memory, or
//! memory-mapped in the run directory), and found again in a sibling run when the
//! foundation, reprogrammer and views are the same.

use super::*;

impl Lab<'_> {
    /// The content hash the teacher cache is keyed by: the foundation file, the
    /// reprogrammer's weights, every input view exactly as the foundation sees it, and
    /// the settings and device that shape the forward pass.
    pub(super) fn teacher_cache_key(&self, teacher: &Reprogrammed, set: &ViewSet) -> Result<String> {
        let mut h = Fnv1a::default();
        let mut buf = vec![0u8; 1 << 20];
        for fpath in crate::models::weights::files_of(&self.exp.foundation_path())? {
            let mut file = std::fs::File::open(&fpath).map_err(|e| crate::Error::io(&fpath, e))?;
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| crate::Error::io(&fpath, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        for (name, t) in teacher.params.tensors() {
            h.field(name.as_bytes());
            let v: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
            v.iter().for_each(|x| h.update(&x.to_le_bytes()));
        }
        let settings = format!(
            "{}|{:?}|{:?}|{:?}|{:?}",
            self.foundation.family(),
            self.exp.foundation.inner_size,
            self.exp.reprogram,
            self.exp.precision,
            self.device.location()
        );
        h.field(settings.as_bytes());
        let inner = self.exp.foundation.inner_size;
        let all: Vec<usize> = (0..set.len()).collect();
        for chunk in all.chunks(CACHE_BATCH) {
            let v: Vec<f32> = set.batch(chunk, inner)?.flatten_all()?.to_vec1()?;
            v.iter().for_each(|x| h.update(&x.to_le_bytes()));
        }
        Ok(format!("{:016x}", h.0))
    }

    /// A finished cache under `key` in another run directory next to this one.
    pub(super) fn find_cache_elsewhere(&self, folder: &str, key: &str) -> Option<PathBuf> {
        let parent = self.run.root.parent()?;
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        dirs.into_iter()
            .filter(|d| *d != self.run.root)
            .map(|d| d.join(folder))
            .find(|d| TeacherCache::exists(d, key))
    }

    /// Cache the teacher's proxy embeddings and logits for every training view, or
    /// link an identical cache from an earlier run. `quiet`: rebuilt on a resume, after
    /// its event was recorded.
    pub fn cache_teacher(&mut self, key: &str, teacher: &Reprogrammed, views: Views, quiet: bool) -> Result<TeacherCache> {
        let started = Instant::now();
        let folder = match views {
            Views::Labelled => CACHE_DIR,
            Views::Transfer => TRANSFER_CACHE_DIR,
        };
        let train = self.views(views)?;
        let hash = self.teacher_cache_key(teacher, train)?;
        let dir = self.run.file(folder);
        let mut reused_from = None;
        if !TeacherCache::exists(&dir, &hash) {
            if let Some(other) = self.find_cache_elsewhere(folder, &hash) {
                TeacherCache::link(&other, &dir, &hash)?;
                reused_from = other.parent().map(|p| p.display().to_string());
            }
        }
        let (foundation, inner) = (self.foundation, self.exp.foundation.inner_size);
        let cache = if TeacherCache::exists(&dir, &hash) {
            TeacherCache::open(&dir, &hash, self.cache_budget, &self.device)?
        } else {
            TeacherCache::build_files(&dir, &hash, train.len(), CACHE_BATCH, self.cache_budget, &self.device, |rows| {
                teacher.forward(foundation, &train.batch(rows, inner)?, false)
            })?
        };
        if quiet {
            return Ok(cache);
        }
        self.ctl.emit(Event::CacheBuilt {
            method: key.into(),
            rows: train.len(),
            bytes: cache.bytes(),
            wall_s: started.elapsed().as_secs_f64(),
            mapped: cache.is_mapped(),
            reused_from,
        });
        Ok(cache)
    }
}
