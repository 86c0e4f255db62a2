//! GPU awareness: which NVIDIA GPUs a machine has, what runs on them, and which are idle.
//!
//! A [`GpuSource`] lists the GPUs; two real ones exist, both behind the trait so tests use a
//! [`FixedGpus`] fake:
//! - [`nvml::NvmlSource`]: the NVIDIA Management Library, opened at run time
//!   (`libnvidia-ml.so.1`), so no NVIDIA library is needed to build or to start the lab;
//! - [`smi::NvidiaSmiSource`]: `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`, the
//!   fallback where NVML cannot be opened.
//!
//! [`IdleRule`] is the one definition of "idle" (no compute process, memory and utilisation
//! under thresholds); [`visible::Visibility`] maps the indices NVML and `nvidia-smi` print to
//! the CUDA ordinals this process sees under `CUDA_VISIBLE_DEVICES`.

pub mod nvml;
pub mod smi;
pub mod visible;
pub mod watch;

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub use visible::Visibility;

/// A process running on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Its process id, as the driver reports it (the host's pid namespace).
    pub pid: u32,
    /// GPU memory it uses in MiB, when the driver says.
    pub used_memory_mib: Option<u64>,
}

/// One NVIDIA GPU at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The index `nvidia-smi` and NVML print (PCI bus order); `--gpus` and `--pick` use it.
    pub index: u32,
    /// `GPU-…` UUID, stable across reboots and orderings.
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Memory in MiB, when known.
    pub memory_total_mib: Option<u64>,
    /// Memory in use in MiB, when known.
    pub memory_used_mib: Option<u64>,
    /// Recent GPU utilisation in percent, when known (MIG and some boards report none).
    pub utilization_percent: Option<u32>,
    /// Compute processes on it.
    pub processes: Vec<GpuProcess>,
    /// The CUDA ordinal this process would use for it (`cuda:N`), `None` when
    /// `CUDA_VISIBLE_DEVICES` hides it. Filled by [`Visibility::apply`].
    pub cuda_index: Option<usize>,
}

/// Why the GPUs cannot be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No way to ask the driver: NVML did not open and `nvidia-smi` is missing or failed.
    #[error("no NVIDIA driver found: {0}")]
    NoDriver(String),
    /// The driver answered with something we cannot read.
    #[error("cannot read the GPU list: {0}")]
    Unreadable(String),
}

/// Something that lists the GPUs (NVML, `nvidia-smi`, or a fake).
pub trait GpuSource: Send {
    /// `nvml`, `nvidia-smi`, `fake`.
    fn name(&self) -> &'static str;

    /// Every GPU now, in index order, with `cuda_index` unset.
    ///
    /// # Errors
    /// The driver cannot be asked or its answer cannot be read.
    fn query(&mut self) -> Result<Vec<GpuInfo>, GpuError>;
}

/// Which source [`open_source`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceChoice {
    /// NVML, else `nvidia-smi`.
    #[default]
    Auto,
    /// NVML only.
    Nvml,
    /// `nvidia-smi` only.
    NvidiaSmi,
}

impl SourceChoice {
    /// Parses `auto|nvml|nvidia-smi`.
    ///
    /// # Errors
    /// Any other text, with the valid values.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "nvml" => Ok(Self::Nvml),
            "nvidia-smi" | "nvidia_smi" | "smi" => Ok(Self::NvidiaSmi),
            other => Err(format!("unknown GPU source {other:?}; valid: auto, nvml, nvidia-smi")),
        }
    }
}

/// Opens the first source that works: NVML (the library opened at run time), then
/// `nvidia-smi` (run once to check that it answers).
///
/// # Errors
/// [`GpuError::NoDriver`] saying why each source failed.
pub fn open_source(choice: SourceChoice) -> Result<Box<dyn GpuSource>, GpuError> {
    let nvml_error = match choice {
        SourceChoice::NvidiaSmi => None,
        SourceChoice::Auto | SourceChoice::Nvml => match nvml::NvmlSource::open() {
            Ok(source) => return Ok(Box::new(source)),
            Err(err) => Some(err),
        },
    };
    if choice == SourceChoice::Nvml {
        return Err(GpuError::NoDriver(nvml_error.unwrap_or_default()));
    }
    let mut smi = smi::NvidiaSmiSource::default();
    match smi.query() {
        Ok(_) => Ok(Box::new(smi)),
        Err(err) => {
            let smi_error = match err {
                GpuError::NoDriver(text) | GpuError::Unreadable(text) => text,
            };
            Err(GpuError::NoDriver(match nvml_error {
                Some(nvml) => format!("NVML: {nvml}; nvidia-smi: {smi_error}"),
                None => smi_error,
            }))
        }
    }
}

/// When a GPU counts as idle (REFERENCE §8, `imagelab gpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleRule {
    /// Most memory in use, in MiB, for an idle GPU (the driver and a desktop use some).
    pub max_memory_used_mib: u64,
    /// Highest utilisation, in percent, for an idle GPU.
    pub max_utilization_percent: u32,
}

impl Default for IdleRule {
    fn default() -> Self {
        Self { max_memory_used_mib: DEFAULT_MAX_MEMORY_MIB, max_utilization_percent: 10 }
    }
}

/// Default `--max-mem-mb`: a desktop session and the driver's own use stay below it; a loaded
/// SDXL model (about 7 GiB) does not.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 1024;
/// Default `--max-util`.
pub const DEFAULT_MAX_UTILIZATION_PERCENT: u32 = 10;

/// Why a GPU is not idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusyReason {
    /// Other compute processes run on it (their pids).
    Processes(Vec<u32>),
    /// More memory in use than the rule allows (MiB used, MiB allowed).
    Memory(u64, u64),
    /// Busier than the rule allows (percent, percent allowed).
    Utilization(u32, u32),
    /// `CUDA_VISIBLE_DEVICES` hides it from this process.
    Hidden,
    /// It is not in the list any more.
    Gone,
}

impl std::fmt::Display for BusyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Processes(pids) => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                write!(f, "compute process(es) running: pid {}", pids.join(", "))
            }
            Self::Memory(used, max) => write!(f, "{used} MiB in use (idle: ≤ {max} MiB)"),
            Self::Utilization(used, max) => write!(f, "{used}% utilisation (idle: ≤ {max}%)"),
            Self::Hidden => f.write_str("hidden by CUDA_VISIBLE_DEVICES"),
            Self::Gone => f.write_str("no longer listed by the driver"),
        }
    }
}

impl IdleRule {
    /// Whether `gpu` is idle: no compute process, memory in use and utilisation at most the
    /// thresholds. A value the driver does not report does not count against the GPU.
    ///
    /// # Errors
    /// The first reason it is busy.
    pub fn check_idle(&self, gpu: &GpuInfo) -> Result<(), BusyReason> {
        if gpu.cuda_index.is_none() {
            return Err(BusyReason::Hidden);
        }
        if !gpu.processes.is_empty() {
            return Err(BusyReason::Processes(gpu.processes.iter().map(|p| p.pid).collect()));
        }
        if let Some(used) = gpu.memory_used_mib
            && used > self.max_memory_used_mib
        {
            return Err(BusyReason::Memory(used, self.max_memory_used_mib));
        }
        if let Some(percent) = gpu.utilization_percent
            && percent > self.max_utilization_percent
        {
            return Err(BusyReason::Utilization(percent, self.max_utilization_percent));
        }
        Ok(())
    }

    /// Whether a GPU this process already works on may take its next job: no compute process
    /// of anyone else, and the memory others use (in use minus what the driver attributes to
    /// `own_pid`) at most the threshold. Utilisation is not checked (our own work drives it).
    /// Where the driver lists no process of ours (a container without the host's pid
    /// namespace), memory cannot be told apart and only foreign processes count.
    ///
    /// # Errors
    /// The first reason it is taken.
    pub fn check_keep(&self, gpu: &GpuInfo, own_pid: u32) -> Result<(), BusyReason> {
        if gpu.cuda_index.is_none() {
            return Err(BusyReason::Hidden);
        }
        let foreign: Vec<u32> =
            gpu.processes.iter().map(|p| p.pid).filter(|pid| *pid != own_pid).collect();
        if !foreign.is_empty() {
            return Err(BusyReason::Processes(foreign));
        }
        let own: Vec<&GpuProcess> = gpu.processes.iter().filter(|p| p.pid == own_pid).collect();
        if own.is_empty() {
            return Ok(());
        }
        let own_mib: u64 = own.iter().filter_map(|p| p.used_memory_mib).sum();
        if let Some(used) = gpu.memory_used_mib {
            let others = used.saturating_sub(own_mib);
            if others > self.max_memory_used_mib {
                return Err(BusyReason::Memory(others, self.max_memory_used_mib));
            }
        }
        Ok(())
    }
}

/// A source with given GPUs that tests (and demos) change while a run goes on; clones share
/// the same list.
#[derive(Debug, Clone)]
pub struct FixedGpus {
    gpus: Arc<Mutex<Result<Vec<GpuInfo>, GpuError>>>,
}

impl FixedGpus {
    /// A source listing `gpus`.
    pub fn new(gpus: Vec<GpuInfo>) -> Self {
        Self { gpus: Arc::new(Mutex::new(Ok(gpus))) }
    }

    /// A source that fails with `error` (no driver).
    pub fn failing(error: GpuError) -> Self {
        Self { gpus: Arc::new(Mutex::new(Err(error))) }
    }

    /// Replaces the list every clone reports.
    pub fn set(&self, gpus: Vec<GpuInfo>) {
        *self.gpus.lock().unwrap_or_else(PoisonError::into_inner) = Ok(gpus);
    }

    /// Changes one GPU in place (no-op when the index is not listed).
    pub fn update(&self, index: u32, change: impl FnOnce(&mut GpuInfo)) {
        let mut guard = self.gpus.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(gpus) = guard.as_mut()
            && let Some(gpu) = gpus.iter_mut().find(|gpu| gpu.index == index)
        {
            change(gpu);
        }
    }

    /// An idle GPU with this index (80 GiB, nothing running), for tests.
    pub fn idle_gpu(index: u32) -> GpuInfo {
        GpuInfo {
            index,
            uuid: format!("GPU-00000000-0000-0000-0000-{index:012}"),
            name: "Fake GPU".to_owned(),
            memory_total_mib: Some(81_920),
            memory_used_mib: Some(4),
            utilization_percent: Some(0),
            processes: Vec::new(),
            cuda_index: None,
        }
    }
}

impl GpuSource for FixedGpus {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn query(&mut self) -> Result<Vec<GpuInfo>, GpuError> {
        self.gpus.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Every GPU at one moment, as this process sees them, with why each is or is not idle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Which source answered (`nvml`, `nvidia-smi`, `fake`).
    pub source: String,
    /// The rule the `idle` column applies.
    pub idle_rule: IdleRule,
    /// Every GPU, in index order.
    pub gpus: Vec<GpuRow>,
    /// Things the user should know (a `CUDA_VISIBLE_DEVICES` entry that ends the list, …).
    pub notes: Vec<String>,
}

/// One GPU of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRow {
    /// What the driver says.
    #[serde(flatten)]
    pub gpu: GpuInfo,
    /// Idle by the rule.
    pub idle: bool,
    /// Why not, when not.
    pub busy_reason: Option<String>,
}

impl Snapshot {
    /// Asks `source`, maps CUDA ordinals with `visibility`, and applies `rule`.
    ///
    /// # Errors
    /// The source cannot answer.
    pub fn take(
        source: &mut dyn GpuSource,
        visibility: &Visibility,
        rule: IdleRule,
    ) -> Result<Self, GpuError> {
        let mut gpus = source.query()?;
        let notes = visibility.apply(&mut gpus);
        let gpus = gpus
            .into_iter()
            .map(|gpu| {
                let verdict = rule.check_idle(&gpu);
                GpuRow {
                    idle: verdict.is_ok(),
                    busy_reason: verdict.err().map(|r| r.to_string()),
                    gpu,
                }
            })
            .collect();
        Ok(Self { source: source.name().to_owned(), idle_rule: rule, gpus, notes })
    }

    /// The lowest-indexed idle GPU.
    pub fn pick(&self) -> Option<&GpuInfo> {
        self.gpus.iter().filter(|row| row.idle).map(|row| &row.gpu).min_by_key(|gpu| gpu.index)
    }
}

/// The lowest-indexed idle GPU that this process can see.
pub fn pick_idle(gpus: &[GpuInfo], rule: &IdleRule) -> Option<u32> {
    gpus.iter().filter(|gpu| rule.check_idle(gpu).is_ok()).map(|gpu| gpu.index).min()
}

/// Megabytes in `n` bytes, rounded down, as NVML and `nvidia-smi` count them (MiB).
pub(crate) fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(mut gpu: GpuInfo) -> GpuInfo {
        gpu.cuda_index = Some(gpu.index as usize);
        gpu
    }

    #[test]
    fn idle_rule_checks_processes_memory_and_utilisation() {
        let rule = IdleRule { max_memory_used_mib: 500, max_utilization_percent: 5 };
        let idle = visible(FixedGpus::idle_gpu(0));
        assert_eq!(rule.check_idle(&idle), Ok(()));
        let with_process = GpuInfo {
            processes: vec![GpuProcess { pid: 77, used_memory_mib: Some(300) }],
            ..idle.clone()
        };
        assert_eq!(rule.check_idle(&with_process), Err(BusyReason::Processes(vec![77])));
        let memory = GpuInfo { memory_used_mib: Some(501), ..idle.clone() };
        assert_eq!(rule.check_idle(&memory), Err(BusyReason::Memory(501, 500)));
        let busy = GpuInfo { utilization_percent: Some(6), ..idle.clone() };
        assert_eq!(rule.check_idle(&busy), Err(BusyReason::Utilization(6, 5)));
        let unknown = GpuInfo { memory_used_mib: None, utilization_percent: None, ..idle.clone() };
        assert_eq!(rule.check_idle(&unknown), Ok(()), "unknown values do not count");
        let hidden = GpuInfo { cuda_index: None, ..idle };
        assert_eq!(rule.check_idle(&hidden), Err(BusyReason::Hidden));
    }

    #[test]
    fn a_gpu_we_use_stays_ours_until_someone_else_comes() {
        let rule = IdleRule::default();
        let own = 1000;
        let ours = GpuInfo {
            memory_used_mib: Some(9000),
            utilization_percent: Some(100),
            processes: vec![GpuProcess { pid: own, used_memory_mib: Some(8500) }],
            ..visible(FixedGpus::idle_gpu(1))
        };
        assert_eq!(rule.check_keep(&ours, own), Ok(()));
        assert!(rule.check_idle(&ours).is_err(), "not idle to anyone else");
        let shared = GpuInfo {
            processes: vec![
                GpuProcess { pid: own, used_memory_mib: Some(8500) },
                GpuProcess { pid: 4242, used_memory_mib: Some(20_000) },
            ],
            ..ours.clone()
        };
        assert_eq!(rule.check_keep(&shared, own), Err(BusyReason::Processes(vec![4242])));
        // Memory someone else holds without a listed process (another container).
        let hidden_other = GpuInfo { memory_used_mib: Some(30_000), ..ours.clone() };
        assert_eq!(rule.check_keep(&hidden_other, own), Err(BusyReason::Memory(21_500, 1024)));
        // No process of ours listed (pid namespace): only foreign processes count.
        let blind = GpuInfo { processes: Vec::new(), ..hidden_other };
        assert_eq!(rule.check_keep(&blind, own), Ok(()));
    }

    #[test]
    fn pick_takes_the_lowest_idle_visible_index() {
        let rule = IdleRule::default();
        let mut gpus: Vec<GpuInfo> = (0..4).map(|i| visible(FixedGpus::idle_gpu(i))).collect();
        gpus[0].processes.push(GpuProcess { pid: 1, used_memory_mib: None });
        gpus[1].cuda_index = None;
        assert_eq!(pick_idle(&gpus, &rule), Some(2));
        gpus[2].utilization_percent = Some(90);
        gpus[3].memory_used_mib = Some(40_000);
        assert_eq!(pick_idle(&gpus, &rule), None);
    }

    #[test]
    fn source_choice_names() {
        assert_eq!(SourceChoice::parse("NVML"), Ok(SourceChoice::Nvml));
        assert_eq!(SourceChoice::parse("nvidia-smi"), Ok(SourceChoice::NvidiaSmi));
        assert!(SourceChoice::parse("rocm").expect_err("bad").contains("auto, nvml, nvidia-smi"));
    }
}
