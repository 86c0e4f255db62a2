//! The front-end configuration: the one place that reads the process environment.
//!
//! Library modules take plain values (a cache budget, a profiles path, a [`HubConfig`]); front
//! ends hold one [`FrontEndConfig`] and ask it. Tests build one from a map with
//! [`FrontEndConfig::from_lookup`], so nothing here needs global state.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{BackendChoice, DEFAULT_OUTPUT_DIR};
use crate::diffusion::attention::AttentionKind;
use crate::engine::mock::MockBackend;
use crate::gpu::{SourceChoice, Visibility};
use crate::models::Catalog;
use crate::models::hub::HubConfig;
use crate::models::library::ModelLibrary;
use crate::request::profiles::{Profiles, ProfilesError, USER_PROFILES_FILE};

/// Output root (`--out`; default `output_images`).
pub const OUTPUT_DIR_VAR: &str = "IMAGELAB_OUTPUT_DIR";
/// Backend, `candle` or `mock` (`--backend`; default candle).
pub const BACKEND_VAR: &str = "IMAGELAB_BACKEND";
/// Port of `imagelab serve` (`--port`; default 7860).
pub const PORT_VAR: &str = "IMAGELAB_PORT";
/// Device, `auto|cpu|cuda:N|metal` (`--device`; default auto).
pub const DEVICE_VAR: &str = "IMAGELAB_DEVICE";
/// Selects `jobs_<id>.log`, so instances sharing an output folder never share a log file.
pub const INSTANCE_ID_VAR: &str = "INSTANCE_ID";
/// A `profiles.ron` to use instead of `./profiles.ron` or the built-in one.
pub const PROFILES_VAR: &str = "IMAGELAB_PROFILES";
/// The user profiles file (imported styles) to use instead of the one beside the profiles.
pub const USER_PROFILES_VAR: &str = "IMAGELAB_USER_PROFILES";
/// Model cache budget in MiB (0 or unset: keep only the newest pipeline).
pub const MODEL_CACHE_MB_VAR: &str = "IMAGELAB_MODEL_CACHE_MB";
/// Memory budget of one generation in MiB (unset: none).
pub const MEMORY_BUDGET_MB_VAR: &str = "IMAGELAB_MEMORY_BUDGET_MB";
/// Attention implementation, `flash|chunked|naive` (unset: flash where built, else chunked).
pub const ATTENTION_VAR: &str = "IMAGELAB_ATTENTION";
/// Caps the CPU kernels' instruction set, `avx512|avx2|portable` (unset: the best the CPU has).
pub const CPU_ISA_VAR: &str = imagelab_kernels::isa::CAP_VAR;
/// The CPU convolutions' algorithm, `auto|im2col|winograd` (unset: auto, by size).
pub const CPU_CONV_VAR: &str = imagelab_kernels::conv::ALGORITHM_VAR;
/// Mock backend: delay per step in milliseconds.
pub const MOCK_STEP_MS_VAR: &str = "IMAGELAB_MOCK_STEP_MS";
/// Mock backend: the display name of a model whose load fails.
pub const MOCK_FAIL_MODEL_VAR: &str = "IMAGELAB_MOCK_FAIL_MODEL";
/// Mock backend: a substring of the final prompt that fails the image half-way.
pub const MOCK_FAIL_PROMPT_VAR: &str = "IMAGELAB_MOCK_FAIL_PROMPT";
/// Which GPU lister to use: `auto` (NVML, else `nvidia-smi`), `nvml` or `nvidia-smi`.
pub const GPU_SOURCE_VAR: &str = "IMAGELAB_GPU_SOURCE";
/// CUDA's list of visible GPUs (indices or UUIDs); maps `nvidia-smi` indices to CUDA ordinals.
pub const CUDA_VISIBLE_DEVICES_VAR: &str = "CUDA_VISIBLE_DEVICES";
/// CUDA's device order (`PCI_BUS_ID` makes CUDA ordinals follow `nvidia-smi`).
pub const CUDA_DEVICE_ORDER_VAR: &str = "CUDA_DEVICE_ORDER";
/// Seconds a graceful stop (first SIGINT/SIGTERM) waits for the running image before it
/// cancels it (unset: as long as the image takes; 0: cancel at once). See `app::stop`.
pub const STOP_GRACE_S_VAR: &str = "IMAGELAB_STOP_GRACE_S";
/// Log filter (tracing's `EnvFilter` syntax; default `warn`).
pub const LOG_FILTER_VAR: &str = "RUST_LOG";
/// Checkpoint folders to scan (A1111/ComfyUI layouts), separated as `PATH` is.
pub const MODELS_DIR_VAR: &str = "IMAGELAB_MODELS_DIR";
/// Set (to anything): no colour on stderr.
pub const NO_COLOR_VAR: &str = "NO_COLOR";

/// Every variable read here, checked for UTF-8 by [`FrontEndConfig::check_utf8`] (`NO_COLOR`
/// counts only by being set, whatever its bytes).
pub const VARIABLES: &[&str] = &[
    OUTPUT_DIR_VAR,
    BACKEND_VAR,
    DEVICE_VAR,
    INSTANCE_ID_VAR,
    PROFILES_VAR,
    MODEL_CACHE_MB_VAR,
    MEMORY_BUDGET_MB_VAR,
    CPU_ISA_VAR,
    CPU_CONV_VAR,
    MOCK_STEP_MS_VAR,
    MOCK_FAIL_MODEL_VAR,
    MOCK_FAIL_PROMPT_VAR,
    STOP_GRACE_S_VAR,
    LOG_FILTER_VAR,
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
];

/// The spellings every on/off variable accepts (any case; empty = unset).
pub const BOOLEAN_SPELLINGS: &str = "1/0, true/false, yes/no, on/off";

/// An on/off value in one of [`BOOLEAN_SPELLINGS`]; `None` for anything else.
pub fn parse_switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// A variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong and, where it helps, the valid values.
    pub message: String,
}

type Lookup = dyn Fn(&str) -> Option<OsString> + Send + Sync;

/// The environment a front end runs in, read through one lookup.
#[derive(Clone)]
pub struct FrontEndConfig {
    lookup: Arc<Lookup>,
}

impl std::fmt::Debug for FrontEndConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEndConfig").finish_non_exhaustive()
    }
}

impl FrontEndConfig {
    /// The process environment.
    #[allow(clippy::disallowed_methods, reason = "the one place that reads the environment")]
    pub fn from_process_env() -> Self {
        Self::from_os_lookup(|name| std::env::var_os(name))
    }

    /// Variables from `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::from_os_lookup(move |name| lookup(name).map(OsString::from))
    }

    /// Variables as the OS gives them, possibly not UTF-8 (tests of bad bytes).
    pub fn from_os_lookup(
        lookup: impl Fn(&str) -> Option<OsString> + Send + Sync + 'static,
    ) -> Self {
        Self { lookup: Arc::new(lookup) }
    }

    /// A variable as set (untrimmed; `None` when unset, or when not UTF-8: front ends call
    /// [`check_utf8`](Self::check_utf8) first, so such a value is refused, never ignored).
    pub fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).and_then(|value| value.into_string().ok())
    }

    /// Refuses any of `names` whose value is not valid UTF-8, naming it: a value the lab
    /// cannot read must stop it, not be treated as unset.
    ///
    /// # Errors
    /// The first such variable.
    #[allow(
        clippy::unnecessary_debug_formatting,
        reason = "the escaped bytes (`\\xFF`) show what is wrong with the value"
    )]
    pub fn check_utf8(&self, names: &[&'static str]) -> Result<(), ConfigError> {
        for name in names {
            if let Some(value) = (self.lookup)(name)
                && value.to_str().is_none()
            {
                return Err(ConfigError {
                    variable: name,
                    message: format!("{value:?} is not valid UTF-8"),
                });
            }
        }
        Ok(())
    }

    /// A variable trimmed, `None` when unset or blank.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    /// Refuses a switch read outside env-var mode (`HF_HUB_OFFLINE`) that is not one of the
    /// [`BOOLEAN_SPELLINGS`]: `huggingface_hub` would read a typo as "off" and go online.
    ///
    /// # Errors
    /// The variable, with the spellings.
    pub fn check_switches(&self) -> Result<(), ConfigError> {
        for name in ["HF_HUB_OFFLINE"] {
            if let Some(value) = self.var(name)
                && parse_switch(&value).is_none()
            {
                return Err(ConfigError {
                    variable: name,
                    message: format!("{value:?} is not a boolean ({BOOLEAN_SPELLINGS})"),
                });
            }
        }
        Ok(())
    }

    /// `IMAGELAB_OUTPUT_DIR`, else `output_images`.
    pub fn output_root(&self) -> PathBuf {
        self.non_empty(OUTPUT_DIR_VAR)
            .map_or_else(|| PathBuf::from(DEFAULT_OUTPUT_DIR), PathBuf::from)
    }

    /// `IMAGELAB_BACKEND`, else candle.
    ///
    /// # Errors
    /// A value that is not a backend name.
    pub fn backend(&self) -> Result<BackendChoice, ConfigError> {
        self.non_empty(BACKEND_VAR).map_or(Ok(BackendChoice::Candle), |text| {
            BackendChoice::parse(&text)
                .map_err(|err| ConfigError { variable: BACKEND_VAR, message: err.to_string() })
        })
    }

    /// `INSTANCE_ID`, when set.
    pub fn instance_id(&self) -> Option<String> {
        self.non_empty(INSTANCE_ID_VAR)
    }

    /// The Hugging Face cache and hub settings (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`,
    /// `HF_TOKEN`, `HF_ENDPOINT`, as `huggingface_hub` reads them).
    pub fn hub(&self) -> HubConfig {
        HubConfig::from_vars(|name| self.var(name).filter(|value| !value.is_empty()))
    }

    /// `IMAGELAB_PROFILES`, else `./profiles.ron` when present, else the built-in profiles;
    /// with the user profiles file (imported styles) merged when it exists.
    ///
    /// # Errors
    /// A file that exists but is broken is an error, never silently replaced.
    pub fn profiles(&self) -> Result<Profiles, ProfilesError> {
        Profiles::discover(self.profiles_path().as_deref(), Some(&self.user_profiles_path()))
    }

    /// The user profiles file: `IMAGELAB_USER_PROFILES`, else `profiles.user.ron` beside
    /// `IMAGELAB_PROFILES`, else `./profiles.user.ron` (beside `./profiles.ron`).
    pub fn user_profiles_path(&self) -> PathBuf {
        if let Some(path) = self.non_empty(USER_PROFILES_VAR) {
            return PathBuf::from(path);
        }
        let dir = self
            .profiles_path()
            .and_then(|path| path.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        dir.join(USER_PROFILES_FILE)
    }

    /// `IMAGELAB_PROFILES`, when set.
    pub fn profiles_path(&self) -> Option<PathBuf> {
        self.var(PROFILES_VAR).filter(|value| !value.is_empty()).map(PathBuf::from)
    }

    /// `IMAGELAB_MODELS_DIR`: the models folders to scan, split as `PATH` is (`:` on Unix,
    /// `;` on Windows).
    pub fn models_dirs(&self) -> Vec<PathBuf> {
        self.var(MODELS_DIR_VAR)
            .map(|value| {
                std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()).collect()
            })
            .unwrap_or_default()
    }

    /// The catalog with what the models folders hold: `IMAGELAB_MODELS_DIR`'s, then `extra`
    /// (`--models-dir`).
    pub fn catalog(&self, extra: &[PathBuf]) -> Catalog {
        let mut dirs = self.models_dirs();
        dirs.extend(extra.iter().cloned());
        if dirs.is_empty() {
            return Catalog::builtin();
        }
        Catalog::builtin().with_library(ModelLibrary::scan(&dirs))
    }

    /// `IMAGELAB_MODEL_CACHE_MB` in bytes (0 when unset: keep only the newest pipeline).
    pub fn model_cache_bytes(&self) -> u64 {
        self.mebibytes(MODEL_CACHE_MB_VAR).unwrap_or(0)
    }

    /// `IMAGELAB_MEMORY_BUDGET_MB` in bytes (`None` when unset: no budget).
    pub fn memory_budget_bytes(&self) -> Option<u64> {
        self.mebibytes(MEMORY_BUDGET_MB_VAR)
    }

    /// A MiB count; `None` when unset, empty or not a number (logged, so a typo is not silently
    /// ignored).
    fn mebibytes(&self, name: &'static str) -> Option<u64> {
        let text = self.non_empty(name)?;
        match text.parse::<u64>() {
            Ok(mebibytes) => Some(mebibytes.saturating_mul(1024 * 1024)),
            Err(err) => {
                tracing::warn!(variable = name, value = text, %err, "ignored: not a whole number of MiB");
                None
            }
        }
    }

    /// The mock backend with the `IMAGELAB_MOCK_*` failure injection; `default_step_delay`
    /// applies when `IMAGELAB_MOCK_STEP_MS` is unset.
    ///
    /// # Errors
    /// `IMAGELAB_MOCK_STEP_MS` that is not a whole number.
    pub fn mock_backend(&self, default_step_delay: Duration) -> Result<MockBackend, ConfigError> {
        let step_delay = match self.var(MOCK_STEP_MS_VAR) {
            None => default_step_delay,
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| ConfigError {
                variable: MOCK_STEP_MS_VAR,
                message: format!("{ms:?} is not a whole number"),
            })?),
        };
        let mut mock = MockBackend::new().with_step_delay(step_delay);
        if let Some(model) = self.var(MOCK_FAIL_MODEL_VAR).filter(|s| !s.is_empty()) {
            mock = mock.failing_model(model);
        }
        if let Some(needle) = self.var(MOCK_FAIL_PROMPT_VAR).filter(|s| !s.is_empty()) {
            mock = mock.failing_prompt(needle);
        }
        Ok(mock)
    }

    /// `IMAGELAB_GPU_SOURCE`, else auto (NVML, then `nvidia-smi`).
    ///
    /// # Errors
    /// A value that is not a source name.
    pub fn gpu_source(&self) -> Result<SourceChoice, ConfigError> {
        self.non_empty(GPU_SOURCE_VAR).map_or(Ok(SourceChoice::Auto), |text| {
            SourceChoice::parse(&text)
                .map_err(|message| ConfigError { variable: GPU_SOURCE_VAR, message })
        })
    }

    /// `CUDA_VISIBLE_DEVICES` (an empty value counts: it hides every GPU) and
    /// `CUDA_DEVICE_ORDER`.
    pub fn gpu_visibility(&self) -> Visibility {
        Visibility::new(self.var(CUDA_VISIBLE_DEVICES_VAR), self.non_empty(CUDA_DEVICE_ORDER_VAR))
    }

    /// `IMAGELAB_STOP_GRACE_S` as a duration (`None` when unset: no limit).
    ///
    /// # Errors
    /// A value that is not a number of seconds ≥ 0.
    pub fn stop_grace(&self) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.non_empty(STOP_GRACE_S_VAR) else { return Ok(None) };
        text.parse::<f64>()
            .ok()
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .map(Some)
            .ok_or_else(|| ConfigError {
                variable: STOP_GRACE_S_VAR,
                message: format!("{text:?} is not a number of seconds ≥ 0"),
            })
    }

    /// `IMAGELAB_ATTENTION`, when set.
    ///
    /// # Errors
    /// A value that is not `flash`, `chunked` or `naive`.
    pub fn attention(&self) -> Result<Option<AttentionKind>, ConfigError> {
        self.non_empty(ATTENTION_VAR).map_or(Ok(None), |text| {
            AttentionKind::parse(&text).map(Some).ok_or_else(|| ConfigError {
                variable: ATTENTION_VAR,
                message: format!("{text:?} is not an attention; valid: flash, chunked, naive"),
            })
        })
    }

    /// `IMAGELAB_CPU_ISA`, when set: the cap on the CPU kernels' instruction set
    /// (`imagelab_kernels::isa::set_cap`).
    ///
    /// # Errors
    /// A value that is not `avx512`, `avx2` or `portable`.
    pub fn cpu_isa(&self) -> Result<Option<imagelab_kernels::isa::Isa>, ConfigError> {
        self.non_empty(CPU_ISA_VAR).map_or(Ok(None), |text| {
            imagelab_kernels::isa::Isa::parse(&text).map(Some).ok_or_else(|| ConfigError {
                variable: CPU_ISA_VAR,
                message: format!(
                    "{text:?} is not an instruction set; valid: avx512, avx2, portable"
                ),
            })
        })
    }

    /// `IMAGELAB_CPU_CONV`, when set: the algorithm of the CPU convolutions
    /// (`imagelab_kernels::conv::set_override`).
    ///
    /// # Errors
    /// A value that is not `auto`, `im2col` or `winograd`.
    pub fn cpu_conv(&self) -> Result<Option<imagelab_kernels::conv::Algorithm>, ConfigError> {
        self.non_empty(CPU_CONV_VAR).map_or(Ok(None), |text| {
            imagelab_kernels::conv::Algorithm::parse(&text).map(Some).ok_or_else(|| ConfigError {
                variable: CPU_CONV_VAR,
                message: format!(
                    "{text:?} is not a convolution algorithm; valid: auto, im2col, winograd"
                ),
            })
        })
    }

    /// `RUST_LOG`, when set.
    pub fn log_filter(&self) -> Option<String> {
        self.var(LOG_FILTER_VAR)
    }

    /// `NO_COLOR` is set (to anything).
    pub fn no_color(&self) -> bool {
        (self.lookup)(NO_COLOR_VAR).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> FrontEndConfig {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        FrontEndConfig::from_lookup(move |name| map.get(name).cloned())
    }

    #[test]
    fn models_dirs_split_like_path_and_skip_empty_parts() {
        let joined = std::env::join_paths(["/a/webui", "", "/b/ComfyUI"]).expect("joins");
        let value = joined.to_string_lossy().into_owned();
        let dirs = config(&[(MODELS_DIR_VAR, value.as_str())]).models_dirs();
        assert_eq!(dirs, [PathBuf::from("/a/webui"), PathBuf::from("/b/ComfyUI")]);
        assert!(config(&[]).models_dirs().is_empty());
    }

    #[test]
    fn defaults_apply_when_unset_and_bad_values_name_the_variable() {
        let empty = config(&[]);
        assert_eq!(empty.output_root(), PathBuf::from(DEFAULT_OUTPUT_DIR));
        assert_eq!(empty.backend(), Ok(BackendChoice::Candle));
        assert_eq!((empty.model_cache_bytes(), empty.memory_budget_bytes()), (0, None));
        assert_eq!(empty.instance_id(), None);
        assert_eq!(empty.attention(), Ok(None));
        assert_eq!(
            config(&[(ATTENTION_VAR, " Chunked ")]).attention(),
            Ok(Some(AttentionKind::Chunked))
        );
        let bad_attention = config(&[(ATTENTION_VAR, "xformers")]).attention().expect_err("bad");
        assert_eq!(bad_attention.variable, ATTENTION_VAR);
        assert_eq!(empty.cpu_isa(), Ok(None));
        assert_eq!(
            config(&[(CPU_ISA_VAR, "AVX2")]).cpu_isa(),
            Ok(Some(imagelab_kernels::isa::Isa::Avx2))
        );
        let bad_isa = config(&[(CPU_ISA_VAR, "avx10")]).cpu_isa().expect_err("bad");
        assert_eq!(bad_isa.variable, CPU_ISA_VAR);
        assert!(bad_isa.message.contains("avx512, avx2, portable"), "{}", bad_isa.message);
        assert_eq!(empty.cpu_conv(), Ok(None));
        assert_eq!(
            config(&[(CPU_CONV_VAR, "Im2col")]).cpu_conv(),
            Ok(Some(imagelab_kernels::conv::Algorithm::Im2col))
        );
        let bad_conv = config(&[(CPU_CONV_VAR, "fft")]).cpu_conv().expect_err("bad");
        assert_eq!(bad_conv.variable, CPU_CONV_VAR);
        assert!(bad_conv.message.contains("auto, im2col, winograd"), "{}", bad_conv.message);
        let set = config(&[
            (OUTPUT_DIR_VAR, "/tmp/out"),
            (BACKEND_VAR, "Mock"),
            (MODEL_CACHE_MB_VAR, "2"),
            (MEMORY_BUDGET_MB_VAR, "lots"),
            (INSTANCE_ID_VAR, " gpu-1 "),
        ]);
        assert_eq!(set.output_root(), PathBuf::from("/tmp/out"));
        assert_eq!(set.backend(), Ok(BackendChoice::Mock));
        assert_eq!((set.model_cache_bytes(), set.memory_budget_bytes()), (2 << 20, None));
        assert_eq!(set.instance_id().as_deref(), Some("gpu-1"));
        assert_eq!(empty.stop_grace(), Ok(None));
        assert_eq!(
            config(&[(STOP_GRACE_S_VAR, "8.5")]).stop_grace(),
            Ok(Some(Duration::from_millis(8500)))
        );
        for bad in ["-1", "soon", "NaN", "inf"] {
            let err = config(&[(STOP_GRACE_S_VAR, bad)]).stop_grace().expect_err(bad);
            assert_eq!(err.variable, STOP_GRACE_S_VAR);
        }
        let bad = config(&[(BACKEND_VAR, "torch"), (MOCK_STEP_MS_VAR, "fast")]);
        assert_eq!(bad.backend().expect_err("bad").variable, BACKEND_VAR);
        assert_eq!(
            bad.mock_backend(Duration::ZERO).expect_err("bad").to_string(),
            "IMAGELAB_MOCK_STEP_MS: \"fast\" is not a whole number"
        );
    }

    #[cfg(unix)]
    #[test]
    fn values_that_are_not_utf8_are_refused_naming_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = FrontEndConfig::from_os_lookup(|name| {
            (name == OUTPUT_DIR_VAR).then(|| OsString::from_vec(b"out\xff".to_vec()))
        });
        assert_eq!(bytes.var(OUTPUT_DIR_VAR), None);
        let err = bytes.check_utf8(VARIABLES).expect_err("not UTF-8");
        assert_eq!(err.variable, OUTPUT_DIR_VAR);
        assert!(err.message.contains("not valid UTF-8"), "{err}");
        bytes.check_utf8(&[BACKEND_VAR]).expect("others are fine");
    }
}
