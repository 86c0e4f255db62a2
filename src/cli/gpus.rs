//! `imagelab gpus [--json] [--pick]`: the NVIDIA GPUs, what runs on them, which are idle.

use std::fmt::Write as _;

use clap::Args;

use super::{CliError, Outcome};
use crate::app::FrontEndConfig;
use crate::gpu::{
    DEFAULT_MAX_MEMORY_MIB, DEFAULT_MAX_UTILIZATION_PERCENT, GpuError, IdleRule, Snapshot,
    open_source,
};

/// Flags of `imagelab gpus`.
#[derive(Debug, Clone, Args)]
pub struct GpusArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print the index of one idle GPU (the lowest) and nothing else; exit 3 when none is idle.
    #[arg(long)]
    pub pick: bool,
    /// With --pick: print the GPU's UUID instead of its index (unambiguous in any ordering).
    #[arg(long, requires = "pick")]
    pub uuid: bool,
    #[command(flatten)]
    pub idle: IdleArgs,
}

/// The idle rule's thresholds, shared by `gpus` and `runner`.
#[derive(Debug, Clone, Copy, Args)]
pub struct IdleArgs {
    /// Idle GPUs use at most this much memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_MEMORY_MIB)]
    pub max_mem_mb: u64,
    /// Idle GPUs are at most this busy (percent).
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_MAX_UTILIZATION_PERCENT,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_util: u32,
}

impl IdleArgs {
    /// The rule these flags describe.
    pub fn rule(self) -> IdleRule {
        IdleRule { max_memory_used_mib: self.max_mem_mb, max_utilization_percent: self.max_util }
    }
}

/// Lists the GPUs from the source the configuration picks.
///
/// # Errors
/// No driver, or no GPU at all ([`CliError::NoGpu`]); a bad `IMAGELAB_GPU_SOURCE`.
pub fn snapshot(config: &FrontEndConfig, rule: IdleRule) -> Result<Snapshot, CliError> {
    let mut source = open_source(config.gpu_source()?).map_err(no_gpu)?;
    let snapshot =
        Snapshot::take(source.as_mut(), &config.gpu_visibility(), rule).map_err(no_gpu)?;
    if snapshot.gpus.is_empty() {
        return Err(CliError::NoGpu(format!(
            "no NVIDIA GPU found ({} lists none)",
            snapshot.source
        )));
    }
    Ok(snapshot)
}

fn no_gpu(err: GpuError) -> CliError {
    CliError::NoGpu(err.to_string())
}

/// Runs `imagelab gpus`.
///
/// # Errors
/// No driver or GPU (exit 4); `--pick` with no idle GPU (exit 3).
pub fn run(args: &GpusArgs, config: &FrontEndConfig) -> Result<Outcome, CliError> {
    let snapshot = snapshot(config, args.idle.rule())?;
    for note in &snapshot.notes {
        eprintln!("note: {note}");
    }
    if args.pick {
        let Some(gpu) = snapshot.pick() else {
            let reasons: Vec<String> = snapshot
                .gpus
                .iter()
                .map(|row| {
                    format!("GPU {}: {}", row.gpu.index, row.busy_reason.as_deref().unwrap_or("?"))
                })
                .collect();
            return Err(CliError::NoIdleGpu(format!("no idle GPU ({})", reasons.join("; "))));
        };
        if args.uuid {
            println!("{}", gpu.uuid);
        } else {
            println!("{}", gpu.index);
        }
        return Ok(Outcome::Done);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&snapshot)
            .map_err(|err| CliError::Failed(format!("cannot write JSON: {err}")))?;
        println!("{text}");
    } else {
        print!("{}", format_table(&snapshot));
    }
    Ok(Outcome::Done)
}

fn or_na<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

/// The human table: one line per GPU, then the source and the rule.
pub fn format_table(snapshot: &Snapshot) -> String {
    let mut rows = vec![[
        "GPU".to_owned(),
        "CUDA".to_owned(),
        "NAME".to_owned(),
        "MEMORY MiB".to_owned(),
        "UTIL".to_owned(),
        "PROCESSES".to_owned(),
        "STATE".to_owned(),
    ]];
    for row in &snapshot.gpus {
        let gpu = &row.gpu;
        let processes = if gpu.processes.is_empty() {
            "-".to_owned()
        } else {
            let list: Vec<String> = gpu
                .processes
                .iter()
                .map(|p| match p.used_memory_mib {
                    Some(mib) => format!("{} ({mib} MiB)", p.pid),
                    None => p.pid.to_string(),
                })
                .collect();
            list.join(", ")
        };
        rows.push([
            gpu.index.to_string(),
            gpu.cuda_index.map_or_else(|| "-".to_owned(), |i| i.to_string()),
            gpu.name.clone(),
            format!("{} / {}", or_na(gpu.memory_used_mib), or_na(gpu.memory_total_mib)),
            gpu.utilization_percent.map_or_else(|| "n/a".to_owned(), |p| format!("{p}%")),
            processes,
            match &row.busy_reason {
                None => "idle".to_owned(),
                Some(reason) => format!("busy: {reason}"),
            },
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let rule = snapshot.idle_rule;
    let _ = writeln!(
        out,
        "source: {}; idle = no compute process, ≤ {} MiB used, ≤ {}% utilisation",
        snapshot.source, rule.max_memory_used_mib, rule.max_utilization_percent
    );
    out
}
