//! The online trainer: its own thread (GPU when built with `cuda` and one is present), fed
//! labelled examples by the graph, so serving never waits for training.
//!
//! Each mini-batch is scored before the update (progressive validation: the scores are out of
//! sample), then trained on with AdamW. Every `snapshot_interval`, once enough click labels have
//! been judged, the weights become a new registry version; it goes live only if the
//! [`guards`](super::guards) pass against the live model on the same examples, and is then
//! published to every serving replica.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::features::{EncodedBatch, FeatureContext, FeatureSpec};
use super::guards::{judge, GuardConfig};
use super::link::TrainerLink;
use super::model::{loss, probabilities, ModelConfig, RankerModel, Targets};
use super::optim::{AdamW, AdamWConfig};
use super::registry::{to_safetensors, DataRange, ModelMeta, Registry, RegistryError, Status};
use super::scoring::PublishedModel;
use super::validation::{TaskMetrics, Window};
use crate::records::LabeledExample;
use crate::time::EventTime;

/// Where training runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePreference {
    /// A CUDA GPU if the binary was built with `cuda` and one is present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; an error without one.
    Cuda,
}

/// Why the trainer could not start or step.
#[derive(Debug, Error)]
pub enum TrainerError {
    /// The device asked for is not there.
    #[error("model.device = \"cuda\": {0}")]
    NoCuda(String),
    /// candle failed.
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Serialising a snapshot failed.
    #[error("writing a snapshot: {0}")]
    Snapshot(String),
    /// The trainer thread could not be started.
    #[error("starting the trainer thread: {0}")]
    Thread(std::io::Error),
}

/// Picks the training device.
pub fn select_device(preference: DevicePreference) -> Result<Device, TrainerError> {
    match preference {
        DevicePreference::Cpu => Ok(Device::Cpu),
        DevicePreference::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DevicePreference::Cuda => {
            Device::new_cuda(0).map_err(|e| TrainerError::NoCuda(e.to_string()))
        }
    }
}

/// `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Settings of the trainer (the pipeline file's `[model]` section).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Architecture.
    pub model: ModelConfig,
    /// Optimiser.
    pub optimizer: AdamWConfig,
    /// Examples per update.
    pub batch_size: usize,
    /// A partial batch is trained on after waiting this long (low traffic).
    pub max_batch_wait: Duration,
    /// Weight of the conversion loss beside the click loss.
    pub conversion_weight: f64,
    /// How often a snapshot is considered for publishing.
    pub snapshot_interval: Duration,
    /// Examples in the rolling progressive-validation window, per task.
    pub validation_window: usize,
    /// Publish guards.
    pub guards: GuardConfig,
    /// Versions kept on disk (the live one always).
    pub keep_versions: usize,
    /// Training device.
    pub device: DevicePreference,
    /// Examples queued for the trainer; beyond it the graph drops (and counts) them.
    pub queue: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            model: ModelConfig::default(),
            optimizer: AdamWConfig::default(),
            batch_size: 256,
            max_batch_wait: Duration::from_millis(200),
            conversion_weight: 1.0,
            snapshot_interval: Duration::from_secs(60),
            validation_window: 20_000,
            guards: GuardConfig::default(),
            keep_versions: 20,
            device: DevicePreference::Auto,
            queue: 65_536,
        }
    }
}

/// What the trainer reports, for `/metrics` and `GET /v1/models`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainerStatus {
    /// Training device.
    pub device: String,
    /// Examples trained on since start.
    pub examples: u64,
    /// Optimiser steps since start.
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// Examples per second over the last few seconds of training.
    pub examples_per_second: f64,
    /// Progressive click metrics over the rolling window.
    pub click: TaskMetrics,
    /// Progressive conversion metrics (fake-negative labels) over the rolling window.
    pub conversion: TaskMetrics,
    /// Every version in the registry, oldest first.
    pub versions: Vec<ModelMeta>,
    /// Whether an operator's promotion pins serving (trained versions do not go live).
    pub pinned: bool,
}

/// A request to the trainer from the API.
pub enum Command {
    /// Make a version live (roll back or forward); training continues from it.
    Promote {
        /// The version.
        version: u64,
        /// The answer: the version's metadata, or why not.
        reply: Sender<Result<ModelMeta, TrainerError>>,
    },
    /// Resume automatic publishing after a promotion pinned serving.
    Resume {
        /// Done, or why not.
        reply: Sender<Result<(), TrainerError>>,
    },
}

/// The API's handle on a running trainer (the graph's is a [`TrainerLink`]).
pub struct TrainerControl {
    /// Commands in.
    pub commands: Sender<Command>,
    /// Latest status.
    pub status: Arc<Mutex<TrainerStatus>>,
    /// Examples the graph dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl TrainerControl {
    /// Waits for the thread; it stops once the graph has dropped its [`TrainerLink`].
    pub fn join(&self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Holds the click positives of a cold start until their negatives come.
///
/// Clicks are labelled the moment they arrive, negatives only when their click window closes;
/// in steady state both flow at their true rates, but a trainer that starts (or restarts) sees
/// one click window of positives alone, which would teach the model that everything is
/// clicked. So until the first negative arrives nothing is trained; then the held positives
/// (and their conversion labels) are released as the negatives' serving time passes theirs, and
/// once it passes the newest example held when the first negative came, everything flows
/// straight through.
#[derive(Debug, Default)]
pub struct Warmup {
    held: std::collections::VecDeque<LabeledExample>,
    negatives_served_ms: Option<i64>,
    cutoff_ms: Option<i64>,
    done: bool,
    capacity: usize,
}

impl Warmup {
    /// A warm-up holding at most `capacity` examples (the oldest are dropped beyond it).
    pub fn new(capacity: usize) -> Self {
        Warmup {
            capacity: capacity.max(1),
            ..Warmup::default()
        }
    }

    /// Whether examples now flow straight through.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes one example; appends to `out` what may be trained on now.
    pub fn admit(&mut self, example: LabeledExample, out: &mut Vec<LabeledExample>) {
        if self.done {
            out.push(example);
            return;
        }
        let served = example.served.ts.millis();
        if example.click == Some(false) {
            if self.cutoff_ms.is_none() {
                self.cutoff_ms = Some(
                    self.held
                        .iter()
                        .map(|e| e.served.ts.millis())
                        .max()
                        .unwrap_or(served),
                );
            }
            let seen = self.negatives_served_ms.map_or(served, |s| s.max(served));
            self.negatives_served_ms = Some(seen);
            out.push(example);
            let mut keep = std::collections::VecDeque::with_capacity(self.held.len());
            for e in self.held.drain(..) {
                if e.served.ts.millis() <= seen {
                    out.push(e);
                } else {
                    keep.push_back(e);
                }
            }
            self.held = keep;
            if self.cutoff_ms.is_some_and(|c| seen >= c) {
                out.extend(self.held.drain(..));
                self.done = true;
            }
            return;
        }
        if self.held.len() >= self.capacity {
            self.held.pop_front();
        }
        self.held.push_back(example);
    }
}

/// Example held since the last snapshot, to judge the candidate against the live model.
struct Held {
    example: LabeledExample,
    candidate: [f64; 2],
}

/// The training state: model, optimiser, validation windows, registry.
pub struct Learner {
    spec: FeatureSpec,
    config: TrainerConfig,
    device: Device,
    varmap: VarMap,
    model: RankerModel,
    optimizer: AdamW,
    parent: Option<u64>,
    live: Option<(u64, RankerModel)>,
    registry: Registry,
    click_window: Window,
    conversion_window: Window,
    held: std::collections::VecDeque<Held>,
    data: DataRange,
    examples_total: u64,
    pub(crate) status: TrainerStatus,
    rate: (Instant, u64),
}

fn new_model(
    spec: &FeatureSpec,
    config: &ModelConfig,
    device: &Device,
) -> candle_core::Result<(VarMap, RankerModel)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = RankerModel::new(spec, config, vb)?;
    Ok((varmap, model))
}

/// A separate copy of the network holding `tensors` (the live model the guards compare with).
fn model_with(
    spec: &FeatureSpec,
    config: &ModelConfig,
    device: &Device,
    tensors: &HashMap<String, Tensor>,
) -> candle_core::Result<RankerModel> {
    let (varmap, model) = new_model(spec, config, device)?;
    load_into(&varmap, tensors)?;
    Ok(model)
}

fn load_into(varmap: &VarMap, tensors: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
    for (name, var) in vars.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("snapshot lacks `{name}`")))?;
        if t.shape() != var.shape() {
            return Err(candle_core::Error::Msg(format!(
                "`{name}` is {:?} in the snapshot, {:?} in the model",
                t.shape(),
                var.shape()
            )));
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

fn encode(spec: &FeatureSpec, examples: &[&LabeledExample]) -> (EncodedBatch, Targets) {
    let mut batch = spec.batch();
    let mut t = Targets::default();
    for e in examples {
        spec.encode(&FeatureContext::from_served(&e.served), &mut batch);
        let flag = |b: Option<bool>| (b.unwrap_or(false) as u8 as f32, b.is_some() as u8 as f32);
        let (c, cm) = flag(e.click);
        let (v, vm) = flag(e.conversion);
        t.click.push(c);
        t.click_mask.push(cm);
        t.conversion.push(v);
        t.conversion_mask.push(vm);
    }
    (batch, t)
}

impl Learner {
    /// A learner on `device`, resuming from the registry's live version when it fits the
    /// configured architecture and feature spec.
    pub fn new(
        spec: FeatureSpec,
        config: TrainerConfig,
        device: Device,
        registry: Registry,
    ) -> Result<Self, TrainerError> {
        let (varmap, model) = new_model(&spec, &config.model, &device)?;
        let mut optimizer = AdamW::new(&varmap, config.optimizer)?;
        let mut parent = None;
        let mut live = None;
        let mut examples_total = 0;
        if let Some(meta) = registry.live().cloned() {
            if meta.model == config.model && meta.feature_spec_version == spec.version {
                let weights = candle_core::safetensors::load_buffer(
                    &registry.weights(meta.version)?,
                    &device,
                )?;
                load_into(&varmap, &weights)?;
                if let Some(bytes) = registry.optimizer(meta.version) {
                    let state = candle_core::safetensors::load_buffer(&bytes, &device)?;
                    optimizer.restore(&state, meta.optimizer_steps)?;
                }
                live = Some((
                    meta.version,
                    model_with(&spec, &config.model, &device, &weights)?,
                ));
                parent = Some(meta.version);
                examples_total = meta.data.examples_total;
                tracing::info!(
                    version = meta.version,
                    "trainer resumes from the live model"
                );
            } else {
                tracing::warn!(
                    version = meta.version,
                    "the live model's architecture or feature spec differs from the pipeline's: training starts afresh"
                );
            }
        }
        let status = TrainerStatus {
            device: device_name(&device),
            versions: registry.versions().to_vec(),
            pinned: registry.pinned(),
            ..TrainerStatus::default()
        };
        Ok(Learner {
            click_window: Window::new(config.validation_window),
            conversion_window: Window::new(config.validation_window),
            spec,
            config,
            device,
            varmap,
            model,
            optimizer,
            parent,
            live,
            registry,
            held: std::collections::VecDeque::new(),
            data: DataRange {
                examples_total,
                ..DataRange::default()
            },
            examples_total,
            status,
            rate: (Instant::now(), 0),
        })
    }

    /// The status as of now.
    pub fn status(&self) -> &TrainerStatus {
        &self.status
    }

    /// The live version as a publishable model (sent once at start so every replica has it).
    pub fn live_published(&self) -> Option<PublishedModel> {
        let (version, _) = self.live.as_ref()?;
        let weights = self.registry.weights(*version).ok()?;
        self.published(weights)
    }

    /// The live version's metadata with `weights`, its parameters.
    fn published(&self, weights: Vec<u8>) -> Option<PublishedModel> {
        Some(PublishedModel {
            meta: self.registry.live()?.clone(),
            weights,
            published_ms: EventTime::now().millis(),
        })
    }

    /// Predictions of the model being trained, for examples (no update).
    pub fn predict(&self, examples: &[&LabeledExample]) -> candle_core::Result<Vec<[f64; 2]>> {
        let (batch, _) = encode(&self.spec, examples);
        probabilities(&self.model.forward(&self.model.inputs(&batch)?)?)
    }

    /// Scores `examples` (progressive validation), then trains on them; returns the scores
    /// (click, conversion before fake-negative calibration), made before the update.
    pub fn train(&mut self, examples: Vec<LabeledExample>) -> Result<Vec<[f64; 2]>, TrainerError> {
        if examples.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&LabeledExample> = examples.iter().collect();
        let (batch, targets) = encode(&self.spec, &refs);
        let inputs = self.model.inputs(&batch)?;
        let (total, logits) = loss(
            &self.model,
            &inputs,
            &targets,
            self.config.conversion_weight,
        )?;
        let scores = probabilities(&logits)?;
        let grads = total.backward()?;
        self.optimizer.step(&grads)?;
        let n = examples.len() as u64;
        for (e, p) in examples.into_iter().zip(scores.iter().copied()) {
            if let Some(y) = e.click {
                self.click_window.push(p[0], y);
                if y {
                    let at = e.label_ms;
                    self.data.oldest_new_click_ms =
                        Some(self.data.oldest_new_click_ms.map_or(at, |o| o.min(at)));
                    self.data.newest_click_ms =
                        Some(self.data.newest_click_ms.map_or(at, |o| o.max(at)));
                }
            }
            if let Some(y) = e.conversion {
                self.conversion_window.push(p[1], y);
            }
            self.data.first_label_ms = Some(
                self.data
                    .first_label_ms
                    .map_or(e.label_ms, |f| f.min(e.label_ms)),
            );
            self.data.last_label_ms = Some(
                self.data
                    .last_label_ms
                    .map_or(e.label_ms, |l| l.max(e.label_ms)),
            );
            if self.held.len() >= self.config.validation_window.max(1) {
                self.held.pop_front();
            }
            self.held.push_back(Held {
                example: e,
                candidate: p,
            });
        }
        self.data.examples += n;
        self.examples_total += n;
        self.status.examples += n;
        self.status.steps += 1;
        let elapsed = self.rate.0.elapsed();
        if elapsed >= Duration::from_secs(2) {
            self.status.examples_per_second =
                (self.status.examples - self.rate.1) as f64 / elapsed.as_secs_f64();
            self.rate = (Instant::now(), self.status.examples);
            self.refresh_metrics();
        }
        Ok(scores)
    }

    /// Recomputes the rolling metrics (they sort the window: not on every step).
    pub fn refresh_metrics(&mut self) {
        self.status.click = self.click_window.metrics();
        self.status.conversion = self.conversion_window.metrics();
    }

    fn clicks_held(&self) -> usize {
        self.held
            .iter()
            .filter(|h| h.example.click.is_some())
            .count()
    }

    /// Snapshots the weights as a new version if enough click labels arrived since the last
    /// one; returns it for publishing if the guards passed.
    pub fn snapshot(&mut self) -> Result<Option<PublishedModel>, TrainerError> {
        if self.clicks_held() < self.config.guards.min_examples.max(1) {
            return Ok(None);
        }
        self.refresh_metrics();
        // The baseline: the live model on the same examples, or what serving logged.
        let refs: Vec<&LabeledExample> = self.held.iter().map(|h| &h.example).collect();
        let baseline: Vec<[f64; 2]> = match &self.live {
            Some((_, live)) => {
                let mut out = Vec::with_capacity(refs.len());
                for chunk in refs.chunks(4_096) {
                    let (batch, _) = encode(&self.spec, chunk);
                    out.extend(probabilities(&live.forward(&live.inputs(&batch)?)?)?);
                }
                out
            }
            None => refs
                .iter()
                .map(|e| {
                    let p = e.served.pcvr.clamp(0.0, 1.0);
                    [e.served.pctr, p / (1.0 + p)]
                })
                .collect(),
        };
        let mut clicks = Vec::new();
        let mut conversions = Vec::new();
        for (h, b) in self.held.iter().zip(&baseline) {
            if let Some(y) = h.example.click {
                clicks.push((h.candidate[0], b[0], y));
            }
            if let Some(y) = h.example.conversion {
                conversions.push((h.candidate[1], b[1], y));
            }
        }
        let verdict = judge(&clicks, &conversions, &self.config.guards);
        let mut named: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self
            .varmap
            .data()
            .lock()
            .map_err(|_| TrainerError::Snapshot("variable map poisoned".into()))?
            .iter()
        {
            named.insert(name.clone(), var.as_tensor().to_device(&Device::Cpu)?);
        }
        let weights = to_safetensors(&named).map_err(|e| TrainerError::Snapshot(e.to_string()))?;
        let (moments, steps) = self.optimizer.state();
        let moments: HashMap<String, Tensor> = moments
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        let optimizer =
            to_safetensors(&moments).map_err(|e| TrainerError::Snapshot(e.to_string()))?;
        let now = EventTime::now().millis();
        let version = self.registry.next_version();
        self.data.examples_total = self.examples_total;
        let meta = ModelMeta {
            version,
            created_ms: now,
            parent: self.parent,
            status: Status::Retired,
            live_since_ms: None,
            device: device_name(&self.device),
            model: self.config.model.clone(),
            feature_spec_version: self.spec.version,
            optimizer_steps: steps,
            data: std::mem::take(&mut self.data),
            click: self.status.click.clone(),
            conversion: self.status.conversion.clone(),
            verdict,
        };
        let passed = meta.verdict.passed;
        if passed {
            tracing::info!(version, auc = ?meta.verdict.candidate.auc, baseline = ?meta.verdict.baseline.auc, "model passed the guards: publishing");
        } else {
            tracing::warn!(version, reasons = ?meta.verdict.reasons, "model refused by the guards");
        }
        self.registry.save(meta, &weights, &optimizer)?;
        self.held.clear();
        self.parent = Some(version);
        self.status.versions = self.registry.versions().to_vec();
        if !passed || self.registry.pinned() {
            return Ok(None);
        }
        let live = model_with(&self.spec, &self.config.model, &self.device, &named)?;
        self.live = Some((version, live));
        Ok(self.published(weights))
    }

    /// Resumes automatic publishing after a promotion pinned serving: the next version that
    /// passes the guards goes live.
    pub fn resume(&mut self) -> Result<(), TrainerError> {
        self.registry.set_pinned(false)?;
        self.status.pinned = false;
        Ok(())
    }

    /// Makes `version` live, pins serving to it (no trained version replaces it until
    /// [`Learner::resume`]) and continues training from it.
    pub fn promote(&mut self, version: u64) -> Result<PublishedModel, TrainerError> {
        let bytes = self.registry.weights(version)?;
        let meta = self
            .registry
            .versions()
            .iter()
            .find(|m| m.version == version)
            .cloned()
            .ok_or(RegistryError::Unknown(version))?;
        if meta.model != self.config.model || meta.feature_spec_version != self.spec.version {
            return Err(TrainerError::Snapshot(format!(
                "version {version} has another architecture or feature spec than the pipeline's"
            )));
        }
        self.registry.set_live(version, EventTime::now().millis())?;
        self.registry.set_pinned(true)?;
        self.status.pinned = true;
        let weights = candle_core::safetensors::load_buffer(&bytes, &self.device)?;
        load_into(&self.varmap, &weights)?;
        if let Some(state) = self.registry.optimizer(version) {
            let state = candle_core::safetensors::load_buffer(&state, &self.device)?;
            self.optimizer.restore(&state, meta.optimizer_steps)?;
        }
        let live = model_with(&self.spec, &self.config.model, &self.device, &weights)?;
        self.live = Some((version, live));
        self.parent = Some(version);
        self.held.clear();
        self.status.versions = self.registry.versions().to_vec();
        self.published(bytes)
            .ok_or_else(|| TrainerError::Snapshot(format!("version {version} vanished")))
    }
}

/// Starts the trainer thread with its registry in `registry_dir`.
pub fn spawn(
    spec: FeatureSpec,
    config: TrainerConfig,
    registry_dir: PathBuf,
) -> Result<(TrainerLink, TrainerControl), TrainerError> {
    let device = select_device(config.device)?;
    let registry = Registry::open(registry_dir, config.keep_versions)?;
    let mut learner = Learner::new(spec, config.clone(), device, registry)?;
    let (example_tx, example_rx) = mpsc::sync_channel::<LabeledExample>(config.queue.max(1));
    let (published_tx, published_rx) = mpsc::channel();
    let (command_tx, command_rx) = mpsc::channel::<Command>();
    let status = Arc::new(Mutex::new(learner.status().clone()));
    let thread_status = status.clone();
    if let Some(live) = learner.live_published() {
        let _ = published_tx.send(live);
    }
    tracing::info!(device = %learner.status().device, "trainer started");
    let thread = std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let mut last_snapshot = Instant::now();
            let mut warmup = Warmup::new(config.queue);
            let mut last_status = Instant::now();
            let mut open = true;
            while open {
                let mut batch = Vec::with_capacity(config.batch_size);
                let deadline = Instant::now() + config.max_batch_wait;
                while batch.len() < config.batch_size {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match example_rx.recv_timeout(wait) {
                        Ok(e) => batch.push(e),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                let mut ready = Vec::with_capacity(batch.len());
                for e in batch {
                    warmup.admit(e, &mut ready);
                }
                if let Err(e) = learner.train(ready) {
                    learner.status.errors += 1;
                    tracing::error!(error = %e, "training step failed");
                }
                while let Ok(command) = command_rx.try_recv() {
                    match command {
                        Command::Promote { version, reply } => {
                            let answer = learner.promote(version);
                            // The API's listing knows a version before serving can show it.
                            if let Ok(mut s) = thread_status.lock() {
                                *s = learner.status().clone();
                            }
                            let answer = answer.map(|p| {
                                let meta = p.meta.clone();
                                let _ = published_tx.send(p);
                                meta
                            });
                            let _ = reply.send(answer);
                        }
                        Command::Resume { reply } => {
                            let answer = learner.resume();
                            // The API reads the status next: it shows the change at once.
                            if let Ok(mut s) = thread_status.lock() {
                                *s = learner.status().clone();
                            }
                            let _ = reply.send(answer);
                        }
                    }
                }
                if last_snapshot.elapsed() >= config.snapshot_interval {
                    last_snapshot = Instant::now();
                    match learner.snapshot() {
                        Ok(Some(p)) => {
                            // Listed in the API's status before any serving replica has it.
                            if let Ok(mut s) = thread_status.lock() {
                                *s = learner.status().clone();
                            }
                            let _ = published_tx.send(p);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            learner.status.errors += 1;
                            tracing::error!(error = %e, "snapshot failed");
                        }
                    }
                }
                if last_status.elapsed() >= Duration::from_millis(250) || !open {
                    last_status = Instant::now();
                    if let Ok(mut s) = thread_status.lock() {
                        *s = learner.status().clone();
                    }
                }
            }
            tracing::info!("trainer stopped");
        })
        .map_err(TrainerError::Thread)?;
    let dropped = Arc::new(AtomicU64::new(0));
    Ok((
        TrainerLink {
            examples: example_tx,
            published: published_rx,
            dropped: dropped.clone(),
        },
        TrainerControl {
            commands: command_tx,
            status,
            dropped,
            thread: Mutex::new(Some(thread)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Served;

    fn example(served_ms: i64, click: Option<bool>) -> LabeledExample {
        let json = format!(
            r#"{{"request_id":"r{served_ms}","imp_id":"1","ts":{served_ms},"campaign_id":"c","advertiser_id":"a","ad_id":"x","billing":"cpc","charge_micros":1,"price_ecpm_micros":1,"pctr":0.02,"pcvr":0.05,"model_version":"prior","user_id":null,"country":null,"device":null,"interests":[],"tag_id":null}}"#
        );
        let served: Served = serde_json::from_str(&json).expect("served");
        LabeledExample {
            served: Box::new(served),
            click,
            conversion: None,
            label_ms: served_ms,
        }
    }

    fn served(out: &[LabeledExample]) -> Vec<(i64, Option<bool>)> {
        out.iter()
            .map(|e| (e.served.ts.millis(), e.click))
            .collect()
    }

    #[test]
    fn warmup_holds_positives_until_their_negatives_come() {
        let mut w = Warmup::new(100);
        let mut out = Vec::new();
        // A click window of positives alone: nothing is trained.
        for t in [10, 20, 30] {
            w.admit(example(t, Some(true)), &mut out);
        }
        assert!(out.is_empty());
        // Negatives of the same serving times release the positives in step.
        w.admit(example(5, Some(false)), &mut out);
        assert_eq!(served(&out), vec![(5, Some(false))]);
        out.clear();
        w.admit(example(40, Some(true)), &mut out);
        w.admit(example(20, Some(false)), &mut out);
        assert_eq!(
            served(&out),
            vec![(20, Some(false)), (10, Some(true)), (20, Some(true))]
        );
        assert!(!w.is_done());
        out.clear();
        // Past the newest example held when the first negative came: all flows.
        w.admit(example(31, Some(false)), &mut out);
        assert_eq!(
            served(&out),
            vec![(31, Some(false)), (30, Some(true)), (40, Some(true))]
        );
        assert!(w.is_done());
        out.clear();
        w.admit(example(50, Some(true)), &mut out);
        assert_eq!(served(&out), vec![(50, Some(true))]);
    }
}
