//! The serving side of a model: a published version loaded on the CPU, shared by the serving
//! replicas of a process through a [`ModelSlot`] they read on every request (a lock-free swap,
//! so publishing never blocks serving).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::features::{FeatureContext, FeatureSpec};
use super::model::ModelConfig;
use super::model::RankerModel;
use super::registry::{ModelMeta, Status};
use crate::catalog::Listed;
use crate::ranker::prior::{Prediction, PriorRanker, Ranker};
use crate::records::Engagement;
use crate::request::AdRequest;
use crate::time::EventTime;

/// A version on its way from the trainer to every serving replica (broadcast in the graph).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedModel {
    /// Its metadata.
    pub meta: ModelMeta,
    /// Its parameters, safetensors bytes.
    pub weights: Vec<u8>,
    /// When the trainer published it, ms.
    pub published_ms: i64,
}

thread_local! {
    /// A serving thread scores its requests' batches on itself alone: a request's batch is
    /// small, and splitting it over the machine's cores fights the other workers for them
    /// (measured at 200 candidates: 1.7x the requests/s of one thread).
    static ONE_THREAD: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build()
        .ok();
}

/// A version ready to score.
pub struct ScoringModel {
    /// Its metadata.
    pub meta: ModelMeta,
    /// `v{version}`.
    pub name: String,
    spec: FeatureSpec,
    model: RankerModel,
    fallback: PriorRanker,
}

impl ScoringModel {
    /// Loads a published version for `spec` on the CPU.
    pub fn load(published: &PublishedModel, spec: &FeatureSpec) -> candle_core::Result<Self> {
        if published.meta.feature_spec_version != spec.version {
            return Err(candle_core::Error::Msg(format!(
                "model v{} encodes feature spec version {}, serving has {}",
                published.meta.version, published.meta.feature_spec_version, spec.version
            )));
        }
        let vb = VarBuilder::from_slice_safetensors(&published.weights, DType::F32, &Device::Cpu)?;
        let model = RankerModel::new(spec, &published.meta.model, vb)?;
        Ok(ScoringModel {
            name: published.meta.name(),
            meta: published.meta.clone(),
            spec: spec.clone(),
            model,
            fallback: PriorRanker::default(),
        })
    }
}

impl ScoringModel {
    /// Version 0 of `spec`'s network with `config`'s sizes at its initial (random) weights, on
    /// the CPU: scores at the cost of a trained version, for the serving bench.
    pub fn initial(spec: &FeatureSpec, config: &ModelConfig) -> candle_core::Result<Self> {
        let varmap = candle_nn::VarMap::new();
        let model = RankerModel::new(
            spec,
            config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        let meta = ModelMeta {
            version: 0,
            created_ms: 0,
            parent: None,
            status: Status::Passed,
            live_since_ms: None,
            device: "cpu".into(),
            model: config.clone(),
            feature_spec_version: spec.version,
            optimizer_steps: 0,
            data: Default::default(),
            click: Default::default(),
            conversion: Default::default(),
            verdict: Default::default(),
        };
        Ok(ScoringModel {
            name: meta.name(),
            meta,
            spec: spec.clone(),
            model,
            fallback: PriorRanker::default(),
        })
    }
}

impl Ranker for ScoringModel {
    fn score(
        &self,
        request: &AdRequest,
        history: &Engagement,
        candidates: &[&Listed],
        priors: &[Prediction],
        now: EventTime,
    ) -> Vec<Prediction> {
        let mut batch = self.spec.batch();
        for (at, listed) in candidates.iter().enumerate() {
            let prior = priors.get(at).copied().unwrap_or_default();
            self.spec.encode(
                &FeatureContext::for_candidate(request, history, listed, prior, now),
                &mut batch,
            );
        }
        let scored = ONE_THREAD.with(|pool| match pool {
            Some(pool) => pool.install(|| self.model.predict(&batch)),
            None => self.model.predict(&batch),
        });
        match scored {
            Ok(p) if p.len() == candidates.len() => p,
            result => {
                tracing::warn!(model = %self.name, error = ?result.err(), "scoring failed; using the prior");
                self.fallback
                    .score(request, history, candidates, priors, now)
            }
        }
    }

    fn version(&self) -> String {
        self.name.clone()
    }
}

/// The live model of a process, shared by its serving replicas and its API.
#[derive(Default)]
pub struct ModelSlot {
    live: ArcSwapOption<ScoringModel>,
}

impl ModelSlot {
    /// The live model, if one is installed.
    pub fn current(&self) -> Option<Arc<ScoringModel>> {
        self.live.load_full()
    }

    /// Installs `model`, unless the same version is live already; returns whether it changed.
    pub fn install(&self, model: ScoringModel) -> bool {
        let same = self
            .live
            .load()
            .as_ref()
            .is_some_and(|m| m.meta.version == model.meta.version);
        if !same {
            self.live.store(Some(Arc::new(model)));
        }
        !same
    }
}
