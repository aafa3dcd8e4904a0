//! The model registry: versioned snapshots under the state directory.
//!
//! ```text
//!   models/LIVE                       the live version's number
//!   models/PINNED                     present while an operator's promotion holds serving
//!   models/v000007/model.safetensors  parameters (what serving loads)
//!   models/v000007/optimizer.safetensors  AdamW moments (what training resumes from)
//!   models/v000007/meta.json          config, data range, metrics, guard verdict, status
//! ```
//!
//! Files are written to a temporary name and renamed, so a crash leaves either the old or the
//! new file. The newest `keep` versions are kept, and the live one always.
//!
//! A version an operator promotes (a rollback or roll-forward) *pins* serving: later versions
//! are still trained and judged, and those that pass are kept as `passed`, but none goes live
//! until the operator promotes one or resumes automatic publishing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::guards::Verdict;
use super::model::ModelConfig;
use super::validation::TaskMetrics;

/// A registry operation that failed; names the file.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// Reading or writing a file.
    #[error("model registry: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A metadata file that does not parse.
    #[error("model registry: {path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No such version.
    #[error("model version {0} does not exist")]
    Unknown(u64),
    /// The version was refused by the guards and cannot go live.
    #[error("model version {0} was refused by the publish guards: {1}")]
    Refused(u64, String),
}

/// Where a version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Serving now.
    Live,
    /// Passed the guards and served once; replaced since.
    Retired,
    /// Refused by the guards.
    Refused,
    /// Passed the guards while serving was pinned: never served, may be promoted.
    Passed,
}

/// What a version was trained on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataRange {
    /// Event time of the first label trained on in this version's lineage window, ms.
    pub first_label_ms: Option<i64>,
    /// Event time of the newest label trained on, ms.
    pub last_label_ms: Option<i64>,
    /// Examples trained on since the previous version.
    pub examples: u64,
    /// Examples trained on in the whole lineage.
    pub examples_total: u64,
    /// Wall time of the oldest click (positive label) first trained on in this version, ms.
    pub oldest_new_click_ms: Option<i64>,
    /// Wall time of the newest click trained on in this version, ms.
    pub newest_click_ms: Option<i64>,
}

/// A version's metadata (`meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Version number (1, 2...).
    pub version: u64,
    /// When it was snapshotted, ms since the epoch.
    pub created_ms: i64,
    /// The version it was trained from.
    pub parent: Option<u64>,
    /// Where it stands.
    pub status: Status,
    /// When it last went live, ms.
    pub live_since_ms: Option<i64>,
    /// Device it was trained on (`cpu`, `cuda:0`).
    pub device: String,
    /// Architecture.
    pub model: ModelConfig,
    /// The feature spec's version it encodes.
    pub feature_spec_version: u32,
    /// Optimiser steps in its lineage.
    pub optimizer_steps: u64,
    /// Training data.
    pub data: DataRange,
    /// Progressive-validation click metrics over the trainer's rolling window.
    pub click: TaskMetrics,
    /// Progressive-validation conversion metrics (fake-negative labels).
    pub conversion: TaskMetrics,
    /// The publish guards' decision.
    pub verdict: Verdict,
}

impl ModelMeta {
    /// `v{version}`, as served in `ext.model_version`.
    pub fn name(&self) -> String {
        format!("v{}", self.version)
    }
}

/// The versions on disk.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    keep: usize,
    versions: Vec<ModelMeta>,
    live: Option<u64>,
    pinned: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Registry {
    /// Opens (creating) the registry in `dir`, keeping the newest `keep` versions.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, RegistryError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let meta_path = entry.path().join("meta.json");
            if !meta_path.is_file() {
                continue;
            }
            let text = std::fs::read(&meta_path).map_err(io(&meta_path))?;
            let meta: ModelMeta =
                serde_json::from_slice(&text).map_err(|e| RegistryError::Corrupt {
                    path: meta_path.clone(),
                    message: e.to_string(),
                })?;
            versions.push(meta);
        }
        versions.sort_by_key(|m| m.version);
        let live_path = dir.join("LIVE");
        let live = match std::fs::read_to_string(&live_path) {
            Ok(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|e| RegistryError::Corrupt {
                        path: live_path.clone(),
                        message: e.to_string(),
                    })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&live_path)(e)),
        };
        let live = live.filter(|v| versions.iter().any(|m| m.version == *v));
        let pinned = dir.join("PINNED").is_file();
        Ok(Registry {
            dir,
            keep: keep.max(1),
            versions,
            live,
            pinned,
        })
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[ModelMeta] {
        &self.versions
    }

    /// The live version's metadata.
    pub fn live(&self) -> Option<&ModelMeta> {
        let v = self.live?;
        self.versions.iter().find(|m| m.version == v)
    }

    /// Whether an operator's promotion holds serving (no version goes live by itself).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Pins serving to the live version, or resumes automatic publishing.
    pub fn set_pinned(&mut self, pinned: bool) -> Result<(), RegistryError> {
        let path = self.dir.join("PINNED");
        if pinned {
            write_atomic(&path, b"promoted by an operator\n")?;
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        self.pinned = pinned;
        Ok(())
    }

    /// The newest version.
    pub fn latest(&self) -> Option<&ModelMeta> {
        self.versions.last()
    }

    /// The number the next version gets.
    pub fn next_version(&self) -> u64 {
        self.versions.last().map_or(1, |m| m.version + 1)
    }

    fn version_dir(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version:06}"))
    }

    /// Stores a new version: parameters, optimiser state and metadata. A version whose verdict
    /// passed goes live, unless serving is pinned.
    pub fn save(
        &mut self,
        mut meta: ModelMeta,
        weights: &[u8],
        optimizer: &[u8],
    ) -> Result<(), RegistryError> {
        let dir = self.version_dir(meta.version);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_atomic(&dir.join("model.safetensors"), weights)?;
        write_atomic(&dir.join("optimizer.safetensors"), optimizer)?;
        let passed = meta.verdict.passed;
        meta.status = match (passed, self.pinned) {
            (false, _) => Status::Refused,
            (true, true) => Status::Passed,
            (true, false) => Status::Retired,
        };
        self.write_meta(&meta)?;
        self.versions.push(meta.clone());
        if passed && !self.pinned {
            self.set_live(meta.version, meta.created_ms)?;
        }
        self.prune()
    }

    fn write_meta(&self, meta: &ModelMeta) -> Result<(), RegistryError> {
        let path = self.version_dir(meta.version).join("meta.json");
        let text = serde_json::to_vec_pretty(meta).map_err(|e| RegistryError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }

    /// Makes `version` live (a rollback or roll-forward); refused versions cannot be.
    pub fn set_live(&mut self, version: u64, now_ms: i64) -> Result<&ModelMeta, RegistryError> {
        let Some(target) = self.versions.iter().position(|m| m.version == version) else {
            return Err(RegistryError::Unknown(version));
        };
        if self.versions[target].status == Status::Refused {
            return Err(RegistryError::Refused(
                version,
                self.versions[target].verdict.reasons.join("; "),
            ));
        }
        write_atomic(&self.dir.join("LIVE"), version.to_string().as_bytes())?;
        let mut changed = Vec::new();
        for (i, m) in self.versions.iter_mut().enumerate() {
            if i == target {
                m.status = Status::Live;
                m.live_since_ms = Some(now_ms);
                changed.push(m.clone());
            } else if m.status == Status::Live {
                m.status = Status::Retired;
                changed.push(m.clone());
            }
        }
        for m in &changed {
            self.write_meta(m)?;
        }
        self.live = Some(version);
        Ok(&self.versions[target])
    }

    /// A version's parameters (safetensors bytes).
    pub fn weights(&self, version: u64) -> Result<Vec<u8>, RegistryError> {
        if !self.versions.iter().any(|m| m.version == version) {
            return Err(RegistryError::Unknown(version));
        }
        let path = self.version_dir(version).join("model.safetensors");
        std::fs::read(&path).map_err(io(&path))
    }

    /// A version's optimiser state (safetensors bytes), if kept.
    pub fn optimizer(&self, version: u64) -> Option<Vec<u8>> {
        std::fs::read(self.version_dir(version).join("optimizer.safetensors")).ok()
    }

    fn prune(&mut self) -> Result<(), RegistryError> {
        while self.versions.len() > self.keep {
            let Some(pos) = self
                .versions
                .iter()
                .position(|m| Some(m.version) != self.live)
            else {
                break;
            };
            let old = self.versions.remove(pos);
            let dir = self.version_dir(old.version);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }
}

/// Serialises named tensors to safetensors bytes.
pub fn to_safetensors(
    tensors: &HashMap<String, candle_core::Tensor>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let mut named: Vec<(&String, &candle_core::Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::tensor::serialize(named, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64, passed: bool) -> ModelMeta {
        ModelMeta {
            version,
            created_ms: 1_000 * version as i64,
            parent: version.checked_sub(1).filter(|v| *v > 0),
            status: Status::Retired,
            live_since_ms: None,
            device: "cpu".into(),
            model: ModelConfig::default(),
            feature_spec_version: 1,
            optimizer_steps: 10 * version,
            data: DataRange::default(),
            click: TaskMetrics::default(),
            conversion: TaskMetrics::default(),
            verdict: Verdict {
                passed,
                reasons: if passed { vec![] } else { vec!["worse".into()] },
                ..Verdict::default()
            },
        }
    }

    #[test]
    fn versions_survive_a_reopen_and_refused_ones_never_go_live() {
        let dir = tempfile::tempdir().expect("dir");
        let mut r = Registry::open(dir.path(), 3).expect("open");
        assert_eq!(r.next_version(), 1);
        r.save(meta(1, true), b"w1", b"o1").expect("save");
        r.save(meta(2, false), b"w2", b"o2").expect("save");
        assert_eq!(r.live().map(|m| m.version), Some(1));
        assert!(matches!(
            r.set_live(2, 5),
            Err(RegistryError::Refused(2, _))
        ));
        r.save(meta(3, true), b"w3", b"o3").expect("save");
        assert_eq!(r.live().map(|m| m.version), Some(3));
        // Roll back.
        r.set_live(1, 9).expect("rollback");
        let reopened = Registry::open(dir.path(), 3).expect("reopen");
        assert_eq!(
            reopened.live().map(|m| (m.version, m.status)),
            Some((1, Status::Live))
        );
        assert_eq!(reopened.weights(3).expect("w"), b"w3");
        assert_eq!(reopened.optimizer(2).as_deref(), Some(&b"o2"[..]));
        let statuses: Vec<_> = reopened.versions().iter().map(|m| m.status).collect();
        assert_eq!(
            statuses,
            vec![Status::Live, Status::Refused, Status::Retired]
        );
        assert!(matches!(
            reopened.weights(7),
            Err(RegistryError::Unknown(7))
        ));
    }

    #[test]
    fn a_pin_holds_serving_across_a_reopen_until_resumed() {
        let dir = tempfile::tempdir().expect("dir");
        let mut r = Registry::open(dir.path(), 10).expect("open");
        r.save(meta(1, true), b"w1", b"o1").expect("save");
        r.save(meta(2, true), b"w2", b"o2").expect("save");
        r.set_live(1, 5).expect("rollback");
        r.set_pinned(true).expect("pin");
        r.save(meta(3, true), b"w3", b"o3").expect("save");
        let mut reopened = Registry::open(dir.path(), 10).expect("reopen");
        assert!(reopened.pinned());
        assert_eq!(reopened.live().map(|m| m.version), Some(1));
        let statuses: Vec<_> = reopened.versions().iter().map(|m| m.status).collect();
        assert_eq!(
            statuses,
            vec![Status::Live, Status::Retired, Status::Passed]
        );
        reopened.set_pinned(false).expect("resume");
        reopened.save(meta(4, true), b"w4", b"o4").expect("save");
        assert_eq!(reopened.live().map(|m| m.version), Some(4));
        assert!(!Registry::open(dir.path(), 10).expect("reopen").pinned());
        // A passed version can be promoted forward.
        reopened.set_live(3, 9).expect("roll forward");
        assert_eq!(reopened.live().map(|m| m.version), Some(3));
    }

    #[test]
    fn pruning_keeps_the_live_version() {
        let dir = tempfile::tempdir().expect("dir");
        let mut r = Registry::open(dir.path(), 2).expect("open");
        r.save(meta(1, true), b"w", b"o").expect("save");
        r.save(meta(2, false), b"w", b"o").expect("save");
        r.save(meta(3, false), b"w", b"o").expect("save");
        let kept: Vec<u64> = r.versions().iter().map(|m| m.version).collect();
        assert_eq!(kept, vec![1, 3]);
        assert!(!dir.path().join("v000002").exists());
        assert_eq!(r.next_version(), 4);
    }
}
