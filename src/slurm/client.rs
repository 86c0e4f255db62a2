//! Runs Slurm's client commands (`sbatch`, `squeue`, `sacct`, `scancel`) as found on `PATH`,
//! with the environment this process has (`SLURM_CONF` included), and turns their failures
//! into messages a person can act on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::parse::{self, Submitted, TaskRow};

/// A client command that did not do its job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not on `PATH`.
    #[error(
        "{0} not found on PATH: run this on a Slurm login node (or add Slurm's bin folder to PATH)"
    )]
    NotFound(String),
    /// No Slurm configuration reachable.
    #[error("{0}: no Slurm configuration found (set SLURM_CONF, or ask for /etc/slurm/slurm.conf)")]
    NoConfig(String),
    /// It ran and failed; its own words.
    #[error("{program}: {message}")]
    Failed {
        /// The command.
        program: String,
        /// What it said.
        message: String,
    },
}

/// Where the client commands are found: on `PATH` (the default), or in one folder (a Slurm
/// installation off `PATH`; the window's tests put stand-ins there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The folder holding `sbatch`, `squeue`, `sacct` and `scancel`; `None`: `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl Client {
    /// The commands on `PATH`.
    pub fn on_path() -> Self {
        Self::default()
    }

    /// The commands in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { bin_dir: Some(dir.into()) }
    }

    fn command(&self, program: &str) -> Command {
        match &self.bin_dir {
            Some(dir) => Command::new(dir.join(program)),
            None => Command::new(program),
        }
    }

    fn run(&self, program: &str, args: &[&str], dir: Option<&Path>) -> Result<Output, ClientError> {
        let mut command = self.command(program);
        command.args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let output = command.output().map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ClientError::NotFound(program.to_owned()),
            _ => ClientError::Failed { program: program.to_owned(), message: err.to_string() },
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let text = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
            if text.contains("Could not establish a configuration source") {
                return Err(ClientError::NoConfig(program.to_owned()));
            }
            return Err(ClientError::Failed {
                program: program.to_owned(),
                message: if program == "sbatch" {
                    parse::submit_error(text)
                } else {
                    text.to_owned()
                },
            });
        }
        Ok(output)
    }

    /// Whether `sbatch` can be run here.
    pub fn sbatch_available(&self) -> bool {
        self.command("sbatch").arg("--version").output().is_ok_and(|output| output.status.success())
    }

    /// `sbatch --parsable [extra…] SCRIPT [script_args…]`, run in `dir` (`script_args` reach
    /// the script as `"$@"`).
    ///
    /// # Errors
    /// Not found, not configured, or refused (Slurm's reason).
    pub fn submit(
        &self,
        script: &Path,
        extra: &[String],
        script_args: &[String],
        dir: &Path,
    ) -> Result<Submitted, ClientError> {
        let script_arg = script.to_string_lossy();
        let mut args: Vec<&str> = vec!["--parsable"];
        args.extend(extra.iter().map(String::as_str));
        args.push(&script_arg);
        args.extend(script_args.iter().map(String::as_str));
        let output = self.run("sbatch", &args, Some(dir))?;
        parse::parse_submitted(&String::from_utf8_lossy(&output.stdout))
            .map_err(|message| ClientError::Failed { program: "sbatch".to_owned(), message })
    }

    /// `sbatch --test-only SCRIPT`: Slurm's verdict on the script without submitting it.
    ///
    /// # Errors
    /// Not found, not configured, or refused (Slurm's reason).
    pub fn test_only(&self, script: &Path, dir: &Path) -> Result<String, ClientError> {
        let script_arg = script.to_string_lossy();
        let output = self.run("sbatch", &["--test-only", &script_arg], Some(dir))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        Ok(parse::test_only_verdict(&stderr).unwrap_or_else(|| stderr.trim().to_owned()))
    }

    /// The tasks of array `job` in the queue (`squeue -r`). A job slurmctld no longer knows
    /// (purged `MinJobAge` after it ended: "Invalid job id specified") has none.
    ///
    /// # Errors
    /// Not found, not configured, or another failure.
    pub fn queued(&self, job: u64) -> Result<Vec<TaskRow>, ClientError> {
        let id = job.to_string();
        match self.run("squeue", &["-h", "-r", "-j", &id, "-o", parse::SQUEUE_FORMAT], None) {
            Ok(output) => Ok(parse::parse_squeue(&String::from_utf8_lossy(&output.stdout))),
            Err(ClientError::Failed { message, .. }) if message.contains("Invalid job id") => {
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    /// The tasks of array `job` in accounting (`sacct -X`).
    ///
    /// # Errors
    /// Not found, not configured, accounting disabled, or another failure.
    pub fn accounted(&self, job: u64) -> Result<Vec<TaskRow>, ClientError> {
        let id = job.to_string();
        let format = format!("--format={}", parse::SACCT_FORMAT);
        let output = self.run("sacct", &["-n", "-P", "-X", "-j", &id, &format], None)?;
        Ok(parse::parse_sacct(&String::from_utf8_lossy(&output.stdout)))
    }

    /// `scancel ID` (`<job>` for a whole array, `<job>_<task>` for one task).
    ///
    /// # Errors
    /// Not found, not configured, or refused.
    pub fn cancel(&self, id: &str) -> Result<(), ClientError> {
        self.run("scancel", &[id], None).map(|_| ())
    }
}
