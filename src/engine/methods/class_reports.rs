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
    /// A finished method's test predictions by class, to the views. The TDMR teacher's
    /// are kept, so that the targets it teaches can say how often they agree with it.
    pub(super) fn report_classes(&mut self, key: &str, predicted: Vec<u32>) -> Result<()> {
        use crate::engine::class_report::{agreement, most_confused, per_class};
        // Kept beside the checkpoints, so a resume after the teacher finished still knows them.
        let saved = self.run.checkpoint(&format!("{}.predictions.json", plan::TEACHER));
        let taught = TEACHER_METHODS.iter().any(|m| m.name() == key);
        if taught && self.teacher_predictions.is_none() {
            self.teacher_predictions = std::fs::read_to_string(&saved).ok().and_then(|t| serde_json::from_str(&t).ok());
        }
        let truth = &self.test.labels;
        let event = Event::ClassReport {
            method: key.into(),
            per_class: per_class(truth, &predicted, self.classes),
            agreement: self
                .teacher_predictions
                .as_deref()
                .filter(|_| taught)
                .map(|t| agreement(&predicted, t)),
            confused: most_confused(truth, &predicted),
        };
        self.ctl.emit(event);
        if key == plan::TEACHER {
            let json = serde_json::to_string(&predicted).map_err(|e| crate::Error::io(&saved, std::io::Error::other(e)))?;
            crate::engine::run_dir::write_text_atomic(&saved, &json)?;
            self.teacher_predictions = Some(predicted);
        }
        Ok(())
    }
}
