//! `imagelab serve --stdio`: a host application runs imagelab as a child process and talks to
//! it in JSON lines. Each line on stdin is one request — the same JSON as `POST /jobs` — or a
//! command `{"command": "cancel", "job": 3}` (`cancel`, `skip`, `clear`, `health`,
//! `preload` with `model`, `shutdown`). Each line on stdout is one event, the same JSON as the
//! Server-Sent Events of `/jobs/{id}/events`, plus `accepted` (the job number of a request
//! line, before any of its events), `rejected` (a bad line, with its line number and field),
//! `health` and `stopped` (the last line). Logs go to stderr.
//!
//! At the end of stdin, the jobs already submitted finish, then the process exits; a
//! `shutdown` command (or the process's stop) drops the waiting jobs and lets the running one
//! finish.

use std::io::{BufRead, Write};
use std::sync::Arc;

use crossbeam_channel::{RecvTimeoutError, Sender, bounded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{Accepted, parse_body};
use super::events::ApiEvent;
use super::service::{Health, Origin, Service};
use crate::engine::{Event, JobId};
use crate::request::Request;
use crate::vocab::{DeviceChoice, Precision};

/// Lines waiting for the writer; a host that stops reading stalls the engine's events after
/// this many.
const OUTPUT_CAPACITY: usize = 1024;
/// How often the input loop looks at the stop token while stdin is silent.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A control line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum StdioCommand {
    /// Cancel a job.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Skip the running item.
    Skip,
    /// Drop every waiting job.
    Clear,
    /// Answer a `health` line.
    Health,
    /// Load a model ahead of the jobs queued after this line.
    Preload {
        /// Catalog name, hub id, or an allowed local path.
        model: String,
        /// Device (default auto).
        #[serde(default)]
        device: DeviceChoice,
        /// Precision (default: the device's).
        #[serde(default)]
        dtype: Option<Precision>,
    },
    /// Stop: drop the waiting jobs, let the running one finish, exit.
    Shutdown,
}

/// A line written to stdout.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StdioLine {
    /// An engine event, as SSE sends it.
    Event(ApiEvent),
    /// Something about one input line.
    Reply(StdioReply),
}

/// Replies to input lines.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StdioReply {
    /// A request line was queued as `job`.
    Accepted {
        /// The input line (from 1).
        line: usize,
        /// What `POST /jobs` answers.
        #[serde(flatten)]
        accepted: Accepted,
    },
    /// A line was not taken.
    Rejected {
        /// The input line (from 1).
        line: usize,
        /// The field to blame, when there is one.
        field: Option<String>,
        /// Why.
        error: String,
    },
    /// The answer to a `health` line.
    Health {
        /// The input line (from 1).
        line: usize,
        /// What `GET /health` says.
        health: Health,
    },
    /// The last line: the process is about to exit.
    Stopped {
        /// Jobs accepted from stdin.
        jobs: usize,
    },
}

/// Reads requests from `input` until it ends (or a `shutdown` line, or the stop token),
/// writing events to `output`; once every accepted job has finished (or was dropped by a
/// stop) it shuts the service down and writes `stopped`. Returns the jobs accepted.
///
/// # Errors
/// Writing to `output` failed (the host went away).
pub fn run(
    service: &Arc<Service>,
    input: impl BufRead + Send + 'static,
    output: impl Write + Send + 'static,
) -> std::io::Result<usize> {
    let (lines_tx, lines_rx) = bounded::<StdioLine>(OUTPUT_CAPACITY);
    let writer = std::thread::Builder::new().name("imagelab-stdout".into()).spawn(move || {
        let mut output = output;
        for line in &lines_rx {
            let text = serde_json::to_string(&line).unwrap_or_else(|_| "{}".to_owned());
            writeln!(output, "{text}")?;
            output.flush()?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    let root = service.output_root().to_owned();
    let events_tx = lines_tx.clone();
    service.subscribe(move |event: &Event| {
        let line = StdioLine::Event(ApiEvent::from_engine(event, &root));
        match event {
            Event::Progress { .. } | Event::Preview { .. } | Event::ModelLoading { .. } => {
                !matches!(
                    events_tx.try_send(line),
                    Err(crossbeam_channel::TrySendError::Disconnected(_))
                )
            }
            _ => events_tx.send(line).is_ok(),
        }
    });
    let mut accepted: Vec<JobId> = Vec::new();
    // stdin is read on its own thread, so a stop (a signal) is seen while the host is silent;
    // a reader still blocked on stdin when the process exits is simply dropped.
    let (input_tx, input_rx) = bounded::<std::io::Result<String>>(16);
    std::thread::Builder::new().name("imagelab-stdin".into()).spawn(move || {
        for line in input.lines() {
            if input_tx.send(line).is_err() {
                break;
            }
        }
    })?;
    let mut number = 0;
    while !service.stop_token().is_requested() {
        let line = match input_rx.recv_timeout(STOP_POLL) {
            Ok(Ok(line)) => line,
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => continue,
        };
        number += 1;
        if line.trim().is_empty() || service.stop_token().is_requested() {
            continue;
        }
        match handle_line(service, &line, number, &lines_tx, &mut accepted) {
            Flow::Continue => {}
            Flow::Shutdown => {
                service.stop_token().request_graceful("stdio shutdown");
                break;
            }
        }
    }
    if service.stop_token().is_requested() {
        service.begin_stop();
    }
    // The jobs submitted finish (a stop dropped the waiting ones already).
    while !service.wait_finished(&accepted, Some(std::time::Duration::from_millis(200))) {
        if service.stop_token().is_immediate() {
            service.stop_now();
        }
    }
    // Every event of those jobs reaches the writer before the engine stops (the dispatcher is
    // joined), then `stopped` is the last line.
    service.shutdown();
    let _ = lines_tx.send(StdioLine::Reply(StdioReply::Stopped { jobs: accepted.len() }));
    drop(lines_tx);
    writer.join().map_err(|_| std::io::Error::other("the stdout writer panicked"))??;
    Ok(accepted.len())
}

enum Flow {
    Continue,
    Shutdown,
}

fn handle_line(
    service: &Arc<Service>,
    line: &str,
    number: usize,
    out: &Sender<StdioLine>,
    accepted: &mut Vec<JobId>,
) -> Flow {
    let reject = |field: Option<String>, error: String| {
        let _ = out.send(StdioLine::Reply(StdioReply::Rejected { line: number, field, error }));
    };
    let is_command = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|value| value.as_object().map(|object| object.contains_key("command")))
        .unwrap_or(false);
    if is_command {
        let command: StdioCommand = match parse_body(line.as_bytes()) {
            Ok(command) => command,
            Err(err) => {
                reject(err.field, err.message);
                return Flow::Continue;
            }
        };
        let result = match command {
            StdioCommand::Cancel { job } => service.cancel(job).map(|_| ()),
            StdioCommand::Skip => service.skip_current(),
            StdioCommand::Clear => service.clear_queue(),
            StdioCommand::Health => {
                let _ = out.send(StdioLine::Reply(StdioReply::Health {
                    line: number,
                    health: service.health(),
                }));
                Ok(())
            }
            StdioCommand::Preload { model, device, dtype } => {
                match service.preload(&model, device, dtype, Origin::Stdio) {
                    Ok(job) => {
                        accepted.push(job);
                        Ok(())
                    }
                    Err(err) => Err(err),
                }
            }
            StdioCommand::Shutdown => return Flow::Shutdown,
        };
        if let Err(err) = result {
            let err = super::errors::ApiError::from(err);
            reject(err.field, err.message);
        }
        return Flow::Continue;
    }
    let request: Request = match parse_body(line.as_bytes()) {
        Ok(request) => request,
        Err(err) => {
            reject(err.field, err.message);
            return Flow::Continue;
        }
    };
    let sent = out.clone();
    match submit_with_reply(service, &request, number, &sent) {
        Ok(job) => accepted.push(job),
        Err(err) => reject(err.field, err.message),
    }
    Flow::Continue
}

/// Queues a request line; its `accepted` reply is written before any of its events.
fn submit_with_reply(
    service: &Service,
    request: &Request,
    line: usize,
    out: &Sender<StdioLine>,
) -> Result<JobId, super::errors::ApiError> {
    let plan = service.prepare(request)?;
    let (items, images, seed) = (plan.items.len(), plan.image_count(), plan.seed_base);
    let job = service.submit(
        plan,
        super::service::Submission { origin: Origin::Stdio, label: String::new() },
        |job| {
            let mut links = std::collections::BTreeMap::new();
            links.insert("self".to_owned(), format!("/jobs/{job}"));
            links.insert("events".to_owned(), format!("/jobs/{job}/events"));
            let accepted = Accepted { job, items, images, seed, links };
            let _ = out.send(StdioLine::Reply(StdioReply::Accepted { line, accepted }));
        },
    )?;
    Ok(job)
}
