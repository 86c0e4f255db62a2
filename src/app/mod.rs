//! Wiring shared by every front end — the window, the CLI, env-var mode, and whatever comes
//! next (a runner, a server): which backend runs, with which budgets, where the files go, and
//! how hub models reach the disk.
//!
//! A front end reads its [`FrontEndConfig`] once, describes its engine in an [`EngineSetup`],
//! and calls [`EngineSetup::wire`] once to get the backend and the [`EngineConfig`] to spawn it
//! with. Restoring settings from an image is [`crate::request::restore`].

pub mod config;
pub mod stop;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{ConfigError, FrontEndConfig};
pub use stop::{StopRequest, StopSignal, StopSignals};

use crate::engine::candle_backend::{CandleBackend, FolderResolver};
use crate::engine::{Backend, EngineConfig, LoadProgress};
use crate::models::hub::{DownloadEvent, HubConfig, WeightVariant, resolve_model};
use crate::vocab::VocabError;

/// The default output root.
pub const DEFAULT_OUTPUT_DIR: &str = "output_images";

/// Which backend runs the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// candle SDXL on the chosen device.
    Candle,
    /// The deterministic mock (no weights).
    Mock,
}

impl BackendChoice {
    /// Parses `candle|mock`.
    ///
    /// # Errors
    /// [`VocabError::Unknown`] naming the valid values.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "candle" => Ok(Self::Candle),
            "mock" => Ok(Self::Mock),
            _ => Err(VocabError::unknown("backend", text, &["candle", "mock"])),
        }
    }
}

/// What a front end decides about its engine before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSetup {
    /// Which backend.
    pub backend: BackendChoice,
    /// Output root.
    pub output_root: PathBuf,
    /// `INSTANCE_ID`: selects `jobs_<id>.log`.
    pub instance_id: Option<String>,
    /// Ask the backend for a preview every step (the window does, the CLI does not).
    pub previews: bool,
    /// The mock's delay per step when `IMAGELAB_MOCK_STEP_MS` is unset.
    pub mock_step_delay: Duration,
    /// Run the mock, with a notice, when the chosen backend cannot start (the window does).
    pub fall_back_to_mock: bool,
}

/// Step delay of the mock in the window, so progress can be watched.
pub const WINDOW_MOCK_STEP_DELAY: Duration = Duration::from_millis(60);

/// A backend ready for [`crate::engine::Engine::spawn`], with the config to spawn it with.
pub struct Wiring {
    /// The generator.
    pub backend: Box<dyn Backend>,
    /// Output root, jobs log, previews.
    pub engine: EngineConfig,
    /// Why another backend than the one asked for runs, if so.
    pub notice: Option<String>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("backend", &self.backend.name())
            .field("engine", &self.engine)
            .field("notice", &self.notice)
            .finish()
    }
}

impl EngineSetup {
    /// The window's setup: backend, output root and instance id from the environment,
    /// previews on, a watchable mock, falling back to the mock.
    ///
    /// # Errors
    /// `IMAGELAB_BACKEND` with a bad value.
    pub fn window(config: &FrontEndConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            backend: config.backend()?,
            output_root: config.output_root(),
            instance_id: config.instance_id(),
            previews: true,
            mock_step_delay: WINDOW_MOCK_STEP_DELAY,
            fall_back_to_mock: true,
        })
    }

    /// Builds the backend and the engine config: the one call every front end makes.
    ///
    /// # Errors
    /// A backend that cannot start here (with no fallback), or a bad `IMAGELAB_MOCK_*` value.
    pub fn wire(&self, config: &FrontEndConfig) -> Result<Wiring, ConfigError> {
        let engine = EngineConfig {
            output_root: self.output_root.clone(),
            instance_id: self.instance_id.clone(),
            previews: self.previews,
        };
        let (backend, notice) = match make_backend(self.backend, config, self.mock_step_delay) {
            Ok(backend) => (backend, None),
            Err(err) if self.fall_back_to_mock && self.backend != BackendChoice::Mock => {
                let mock: Box<dyn Backend> = Box::new(config.mock_backend(self.mock_step_delay)?);
                (mock, Some(format!("{err}; the window runs the mock backend")))
            }
            Err(err) => return Err(err),
        };
        Ok(Wiring { backend, engine, notice })
    }
}

/// Builds the backend `choice` with the budgets and hub settings of `config`.
///
/// # Errors
/// A backend that cannot start here, with why.
pub fn make_backend(
    choice: BackendChoice,
    config: &FrontEndConfig,
    mock_step_delay: Duration,
) -> Result<Box<dyn Backend>, ConfigError> {
    match choice {
        BackendChoice::Mock => Ok(Box::new(config.mock_backend(mock_step_delay)?)),
        BackendChoice::Candle => {
            crate::diffusion::attention::set_override(config.attention()?);
            imagelab_kernels::isa::set_cap(config.cpu_isa()?);
            imagelab_kernels::conv::set_override(config.cpu_conv()?);
            Ok(Box::new(
                CandleBackend::new(Some(hub_resolver(config.hub())))
                    .with_model_checks(config.hub(), preferred_weight_variant())
                    .with_cache_budget(config.model_cache_bytes())
                    .with_memory_budget(config.memory_budget_bytes()),
            ))
        }
    }
}

/// The weight files a build loads when a repo has both: GPU builds load `*.fp16.safetensors`,
/// CPU builds run in f32.
pub fn preferred_weight_variant() -> WeightVariant {
    if cfg!(any(feature = "cuda", feature = "metal")) {
        WeightVariant::Fp16
    } else {
        WeightVariant::Full
    }
}

/// Resolves hub models to local files through the Hugging Face cache — a pipeline's snapshot
/// folder, a single-file repo's checkpoint, a VAE repo's folder — downloading only what is
/// needed unless `HF_HUB_OFFLINE=1`, reporting downloads as load progress.
pub fn hub_resolver(hub: HubConfig) -> FolderResolver {
    let prefer = preferred_weight_variant();
    Box::new(move |model, on_progress| {
        let mut on_download = |event: &DownloadEvent| match event {
            DownloadEvent::Started { repo_file, .. } => {
                on_progress(LoadProgress {
                    message: format!("downloading {repo_file}"),
                    fraction: None,
                });
            }
            DownloadEvent::Progress { repo_file, done_bytes, total_bytes } if *total_bytes > 0 => {
                let fraction = *done_bytes as f32 / *total_bytes as f32;
                on_progress(LoadProgress {
                    message: format!("downloading {repo_file}"),
                    fraction: Some(fraction),
                });
            }
            _ => {}
        };
        resolve_model(model, &hub, prefer, &mut on_download)
            .map(|resolved| resolved.path().to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::MOCK_STEP_MS_VAR;

    fn with_mock_step(value: &'static str) -> FrontEndConfig {
        FrontEndConfig::from_lookup(move |name| {
            (name == MOCK_STEP_MS_VAR).then(|| value.to_owned())
        })
    }

    #[test]
    fn wiring_builds_the_chosen_backend_with_the_front_end_settings() {
        let setup = EngineSetup {
            backend: BackendChoice::Mock,
            output_root: PathBuf::from("out"),
            instance_id: Some("gpu-1".to_owned()),
            previews: false,
            mock_step_delay: Duration::ZERO,
            fall_back_to_mock: false,
        };
        let wiring = setup.wire(&with_mock_step("5")).expect("mock");
        assert_eq!(wiring.backend.name(), "mock");
        assert_eq!(
            (wiring.engine.output_root, wiring.engine.instance_id, wiring.engine.previews),
            (PathBuf::from("out"), Some("gpu-1".to_owned()), false)
        );
        assert!(wiring.notice.is_none());
        let candle = EngineSetup { backend: BackendChoice::Candle, ..setup.clone() };
        assert_eq!(candle.wire(&with_mock_step("5")).expect("candle").backend.name(), "candle");
        let err = setup.wire(&with_mock_step("soon")).expect_err("a bad delay");
        assert_eq!(err.variable, MOCK_STEP_MS_VAR);
    }
}
