//! The `nvidia-smi` fallback: two CSV queries, parsed.
//!
//! ```text
//! nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits
//! 0, GPU-6f2c…, NVIDIA H200, 143771, 0, 0
//! nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits
//! GPU-6f2c…, 81234, 20450
//! ```
//! Values the board does not report read `[N/A]` or `[Not Supported]`; they become `None`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{GpuError, GpuInfo, GpuProcess, GpuSource};

/// The GPU query's fields, in the order [`parse_gpus`] reads them.
pub const GPU_QUERY: &str = "index,uuid,name,memory.total,memory.used,utilization.gpu";
/// The process query's fields, in the order [`parse_processes`] reads them.
pub const APPS_QUERY: &str = "gpu_uuid,pid,used_memory";
/// How long one `nvidia-smi` call may take (a wedged driver can hang it).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `nvidia-smi` (from `PATH`, or a given program) for every query.
#[derive(Debug, Clone)]
pub struct NvidiaSmiSource {
    program: PathBuf,
}

impl Default for NvidiaSmiSource {
    fn default() -> Self {
        Self { program: PathBuf::from("nvidia-smi") }
    }
}

impl NvidiaSmiSource {
    /// A source running `program` instead of `nvidia-smi` from `PATH`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into() }
    }

    fn run(&self, query_flag: &str) -> Result<String, GpuError> {
        let mut child = Command::new(&self.program)
            .arg(query_flag)
            .arg("--format=csv,noheader,nounits")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| {
                GpuError::NoDriver(if err.kind() == std::io::ErrorKind::NotFound {
                    format!("{} not found on PATH", self.program.display())
                } else {
                    format!("cannot run {}: {err}", self.program.display())
                })
            })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(GpuError::NoDriver(format!(
                        "{} did not answer within {} s",
                        self.program.display(),
                        TIMEOUT.as_secs()
                    )));
                }
                Err(err) => {
                    return Err(GpuError::NoDriver(format!(
                        "waiting for {}: {err}",
                        self.program.display()
                    )));
                }
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        if status.success() {
            return Ok(stdout);
        }
        // "No devices were found" (exit 6) is an answer: no GPU.
        if stdout.contains("No devices were found") {
            return Ok(String::new());
        }
        let said = stdout
            .lines()
            .chain(stderr.lines())
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or("no output")
            .to_owned();
        Err(GpuError::NoDriver(format!("{} failed ({status}): {said}", self.program.display())))
    }
}

impl GpuSource for NvidiaSmiSource {
    fn name(&self) -> &'static str {
        "nvidia-smi"
    }

    fn query(&mut self) -> Result<Vec<GpuInfo>, GpuError> {
        let mut gpus = parse_gpus(&self.run(&format!("--query-gpu={GPU_QUERY}"))?)?;
        let processes = parse_processes(&self.run(&format!("--query-compute-apps={APPS_QUERY}"))?)?;
        for (uuid, process) in processes {
            if let Some(gpu) = gpus.iter_mut().find(|gpu| gpu.uuid == uuid) {
                gpu.processes.push(process);
            }
        }
        gpus.sort_by_key(|gpu| gpu.index);
        Ok(gpus)
    }
}

/// A field the board does not report (`[N/A]`, `[Not Supported]`, `N/A`) is `None`.
fn number<T: std::str::FromStr>(
    field: &str,
    what: &str,
    line: &str,
) -> Result<Option<T>, GpuError> {
    let field = field.trim();
    if field.is_empty() || field.starts_with('[') || field.eq_ignore_ascii_case("n/a") {
        return Ok(None);
    }
    field
        .parse()
        .map(Some)
        .map_err(|_| GpuError::Unreadable(format!("{what} {field:?} is not a number in {line:?}")))
}

/// Parses the `--query-gpu` answer (one GPU per line; a name may contain commas).
///
/// # Errors
/// A line with too few fields or a field that is not a number.
pub fn parse_gpus(text: &str) -> Result<Vec<GpuInfo>, GpuError> {
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 6 {
            return Err(GpuError::Unreadable(format!(
                "expected 6 fields ({GPU_QUERY}), got {}: {line:?}",
                fields.len()
            )));
        }
        let tail = fields.len() - 3;
        let index = number::<u32>(fields[0], "index", line)?
            .ok_or_else(|| GpuError::Unreadable(format!("no index in {line:?}")))?;
        gpus.push(GpuInfo {
            index,
            uuid: fields[1].trim().to_owned(),
            name: fields[2..tail].join(",").trim().to_owned(),
            memory_total_mib: number(fields[tail], "memory.total", line)?,
            memory_used_mib: number(fields[tail + 1], "memory.used", line)?,
            utilization_percent: number(fields[tail + 2], "utilization.gpu", line)?,
            processes: Vec::new(),
            cuda_index: None,
        });
    }
    Ok(gpus)
}

/// Parses the `--query-compute-apps` answer into (GPU UUID, process) pairs.
///
/// # Errors
/// A line with too few fields or a pid that is not a number.
pub fn parse_processes(text: &str) -> Result<Vec<(String, GpuProcess)>, GpuError> {
    let mut processes = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        // Older drivers print this instead of an empty answer.
        if line.starts_with("No running") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            return Err(GpuError::Unreadable(format!(
                "expected 3 fields ({APPS_QUERY}), got {}: {line:?}",
                fields.len()
            )));
        }
        let pid = number::<u32>(fields[1], "pid", line)?
            .ok_or_else(|| GpuError::Unreadable(format!("no pid in {line:?}")))?;
        processes.push((
            fields[0].trim().to_owned(),
            GpuProcess { pid, used_memory_mib: number(fields[2], "used_memory", line)? },
        ));
    }
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the form `nvidia-smi` prints (values and UUIDs made up); the third board reports no
    /// memory use or utilisation, as MIG-enabled boards do.
    const GPUS: &str = "\
0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 1, 0
1, GPU-bbbbbbbb-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 30721, 97
2, GPU-cccccccc-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, [N/A], [N/A]
";

    #[test]
    fn gpu_lines_parse_with_missing_values() {
        let gpus = parse_gpus(GPUS).expect("parses");
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].uuid, "GPU-bbbbbbbb-0000-0000-0000-000000000000");
        assert_eq!(gpus[1].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(
            (gpus[1].memory_total_mib, gpus[1].memory_used_mib, gpus[1].utilization_percent),
            (Some(81_559), Some(30_721), Some(97))
        );
        assert_eq!((gpus[2].memory_used_mib, gpus[2].utilization_percent), (None, None));
    }

    #[test]
    fn names_with_commas_and_process_lines() {
        let gpus = parse_gpus("3, GPU-x, Tesla K80, rev. 2, 11441, 0, 0\n").expect("parses");
        assert_eq!(gpus[0].name, "Tesla K80, rev. 2");
        let apps = parse_processes(
            "GPU-bbbbbbbb-0000-0000-0000-000000000000, 4242, 30720\nGPU-x, 17, [N/A]\n",
        )
        .expect("parses");
        assert_eq!(apps[0].1, GpuProcess { pid: 4242, used_memory_mib: Some(30_720) });
        assert_eq!(apps[1].1.used_memory_mib, None);
        assert!(parse_processes("No running processes found\n").expect("ok").is_empty());
    }

    #[test]
    fn garbage_is_an_error_naming_the_field() {
        let err = parse_gpus("0, GPU-x, name, lots, 0, 0\n").expect_err("bad");
        assert!(err.to_string().contains("memory.total \"lots\""), "{err}");
        assert!(parse_gpus("NVIDIA-SMI has failed\n").is_err());
    }

    #[test]
    fn a_missing_program_is_no_driver() {
        let mut source = NvidiaSmiSource::with_program("/nonexistent/nvidia-smi");
        match source.query() {
            Err(GpuError::NoDriver(text)) => assert!(text.contains("not found"), "{text}"),
            other => panic!("expected NoDriver, got {other:?}"),
        }
    }
}
