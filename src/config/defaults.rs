//! Every key's default: what an experiment file may leave out.

use super::schema::*;

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "digits-tdmr".into(),
            seed: 0,
            device: "auto".into(),
            precision: Precision::F32,
            methods: vec![Method::Scratch, Method::LinearProbe, Method::Vp, Method::Kd, Method::Tdmr],
            data: Data::default(),
            foundation: Foundation::default(),
            reprogram: Reprogram::default(),
            stage1: Optim::default(),
            target: Target::default(),
            distill: Distill::default(),
            baselines: Baselines::default(),
            checkpoint: Checkpointing::default(),
            theme: "dark".into(),
            source: None,
            bases: Vec::new(),
        }
    }
}

impl Default for Data {
    fn default() -> Self {
        Data {
            kind: DataKind::Digits,
            path: "sample-data/digits".into(),
            k: 10,
            eval_every: 5,
            views: 8,
            eval_on: EvalOn::Test,
            test_fraction: 0.2,
            validation_fraction: 0.0,
            unlabeled: String::new(),
            unlabeled_views: 0,
            mix_views: 0,
            unlabeled_mix_views: 0,
            stored_side: 0,
            memory_budget_mb: 1024,
            workers: 0,
            crop_scale: [0.35, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            flip: false,
        }
    }
}

impl Default for Foundation {
    fn default() -> Self {
        Foundation {
            path: "sample-data/foundation/efficientnet-lite0.safetensors".into(),
            family: crate::models::foundation::Family::Auto,
            image_size: 96,
            inner_size: 64,
        }
    }
}

impl Default for Reprogram {
    fn default() -> Self {
        Reprogram {
            prompt: PromptKind::Padding,
            pad: 16,
            proxy_dim: 128,
            projector: ProjectorKind::Linear,
            normalize: true,
            logit_scale: 10.0,
            label_smoothing: 0.0,
        }
    }
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            epochs: 30,
            batch_size: 32,
            optimizer: OptimizerKind::Adamw,
            lr: 1e-2,
            weight_decay: 0.0,
            momentum: 0.9,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 1,
            probe_init_epochs: 0,
            select_on_validation: false,
        }
    }
}

impl Default for Target {
    fn default() -> Self {
        Target {
            arch: crate::models::targets::Arch::SmallCnn,
            image_size: 32,
            width: 1.0,
        }
    }
}

impl Default for Distill {
    fn default() -> Self {
        let stage = |name: &str, lr: f64, train: Vec<Group>, align: f64, kd: f64, ce: f64| Stage {
            name: name.into(),
            epochs: 20,
            lr,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 0,
            train,
            weights: LossWeights { align, kd, ce },
            ramp: false,
        };
        use Group::*;
        Distill {
            temperature: 4.0,
            align_loss: AlignLoss::Cosine,
            batch_size: 64,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 5e-4,
            momentum: 0.9,
            head: HeadMode::Copy,
            transfer_budget: 1.0,
            stages: vec![
                stage("align", 3e-3, vec![Backbone, Projector], 1.0, 0.0, 0.0),
                stage("align+kd", 3e-3, vec![Backbone, Projector, Head], 1.0, 1.0, 0.1),
                stage("task", 1e-3, vec![Backbone, Projector, Head], 0.0, 0.2, 1.0),
            ],
        }
    }
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            name: "stage".into(),
            epochs: 10,
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 0,
            train: vec![Group::Backbone, Group::Projector, Group::Head],
            weights: LossWeights {
                ce: 1.0,
                ..LossWeights::default()
            },
            ramp: false,
        }
    }
}

/// A weight left out of a `weights = { ... }` table is 0.
impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            align: 0.0,
            kd: 0.0,
            ce: 0.0,
        }
    }
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines {
            linear_probe_epochs: 100,
            linear_probe_lr: 1e-2,
            kd_alpha: 0.5,
        }
    }
}
