//! What a finished method predicted on the test split, summarised by class for the
//! views (the `class-report` event), and the TDMR teacher's predictions kept for the
//! targets it teaches.

use super::*;

/// The predicted class of every test image.
pub(super) fn predictions(test: &ViewSet, mut logits: impl FnMut(&[usize]) -> Result<Tensor>) -> Result<Vec<u32>> {
    let rows: Vec<usize> = (0..test.len()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(EVAL_BATCH) {
        out.extend(logits(chunk)?.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
    }
    Ok(out)
}

impl Lab<'_> {
    /// The TDMR teacher's test predictions, for a method it teaches: kept from this
    /// process, or read back from beside the checkpoints after a resume.
    pub(super) fn teacher_predictions_for(&mut self, key: &str) -> Option<&[u32]> {
        if !TEACHER_METHODS.iter().any(|m| m.name() == key) {
            return None;
        }
        if self.teacher_predictions.is_none() {
            let saved = self.run.checkpoint(&format!("{}.predictions.json", plan::TEACHER));
            self.teacher_predictions = std::fs::read_to_string(&saved).ok().and_then(|t| serde_json::from_str(&t).ok());
        }
        self.teacher_predictions.as_deref()
    }

    /// A finished method's test predictions by class, to the views. The TDMR teacher's
    /// are kept, so that the targets it teaches can say how often they agree with it.
    pub(super) fn report_classes(&mut self, key: &str, predicted: Vec<u32>) -> Result<()> {
        let classes = self.classes;
        let teacher = self.teacher_predictions_for(key).map(<[u32]>::to_vec);
        let event = crate::engine::class_report::report(key, &self.test.labels, &predicted, classes, teacher.as_deref(), None);
        self.ctl.emit(event);
        if key == plan::TEACHER {
            let saved = self.run.checkpoint(&format!("{}.predictions.json", plan::TEACHER));
            let json = serde_json::to_string(&predicted).map_err(|e| crate::Error::io(&saved, std::io::Error::other(e)))?;
            crate::engine::run_dir::write_text_atomic(&saved, &json)?;
            self.teacher_predictions = Some(predicted);
        }
        Ok(())
    }
}
