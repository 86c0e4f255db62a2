//! Clean stops on SIGINT and SIGTERM, for every front end: installed once per process, read as
//! a poll ([`StopSignals::request`]), a callback ([`StopSignals::on_request`]) or a channel
//! ([`StopSignals::subscribe`]).
//!
//! - **First signal**: a graceful stop. The front end sends [`StopMode::AfterImage`] to its
//!   engine: nothing new starts, the running image finishes and is saved with its item's
//!   jobs-log line, the front end prints its summary (`--json` too) and exits with
//!   128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
//! - **Second signal**: cancel now ([`StopMode::Now`]): the running image stops within one
//!   denoising step; nothing half-written is ever kept under a final name.
//! - **Third signal**: exit at once with the same code. Images are written to a temporary name
//!   and linked into place only when complete, and the persistent queue knows what was done, so
//!   even this loses nothing already saved; `imagelab resume` finishes the rest.
//!
//! `IMAGELAB_STOP_GRACE_S` bounds the first stage: after that many seconds (0: at once) a
//! graceful stop becomes "cancel now", as if a second signal came.
//!
//! Docker: `docker stop` sends SIGTERM, waits 10 s (`--time` / compose `stop_grace_period`),
//! then SIGKILL. Within those 10 s the lab finishes the running image if it can, writes its
//! jobs-log line and summary, and exits 143. If the image needs longer, SIGKILL ends the
//! process: the image in progress is lost (only its temporary file remains, removed on the
//! next start) and `imagelab resume` makes it again. `IMAGELAB_STOP_GRACE_S=8` makes the lab
//! cancel that image after 8 s instead, so the summary and log lines are still written
//! before the SIGKILL. The handlers also make SIGTERM work when the lab is the container's
//! PID 1, where the kernel ignores signals that have no handler.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};

use crate::engine::StopMode;

/// A signal that asks the lab to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopSignal {
    /// SIGINT (Ctrl+C).
    Interrupt,
    /// SIGTERM (`kill`, `docker stop`, Slurm's `scancel`, systemd).
    Terminate,
}

impl StopSignal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }

    /// The POSIX signal number.
    pub fn number(self) -> i32 {
        match self {
            Self::Interrupt => 2,
            Self::Terminate => 15,
        }
    }

    /// The conventional exit code of a process stopped by this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }

    /// The signal with POSIX number `number`, if it is one of ours.
    pub fn from_number(number: i32) -> Option<Self> {
        match number {
            2 => Some(Self::Interrupt),
            15 => Some(Self::Terminate),
            _ => None,
        }
    }
}

/// Where a stop stands: the first signal (which picks the exit code) and how hard to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// The first signal received.
    pub signal: StopSignal,
    /// What the engine is asked to do.
    pub mode: StopMode,
}

type Callback = Arc<dyn Fn(StopRequest) + Send + Sync>;

#[derive(Default)]
struct State {
    first: Option<StopSignal>,
    mode: Option<StopMode>,
    signals: usize,
    grace: Option<Duration>,
    callbacks: Vec<Callback>,
}

struct Shared {
    state: Mutex<State>,
    /// Exit the process on the third signal (only for the instance hooked to the OS).
    exit_on_third: bool,
}

/// The process's stop state. Cheap to clone; every clone sees the same signals.
#[derive(Clone)]
pub struct StopSignals {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignals").field("request", &self.request()).finish_non_exhaustive()
    }
}

/// The instance hooked to the OS, once installed.
static INSTALLED: Mutex<Option<StopSignals>> = Mutex::new(None);

impl StopSignals {
    /// Hooks SIGINT and SIGTERM (once per process; later calls return the same instance). The
    /// signals are counted on a named thread, `imagelab-signals`, which runs the callbacks.
    ///
    /// # Errors
    /// The handlers or their thread could not be set up.
    pub fn install() -> std::io::Result<Self> {
        let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(signals) = installed.as_ref() {
            return Ok(signals.clone());
        }
        let signals = Self::new(true);
        hook_os_signals(&signals)?;
        *installed = Some(signals.clone());
        Ok(signals)
    }

    /// The instance [`install`](Self::install) hooked, if any front end installed one.
    pub fn installed() -> Option<Self> {
        INSTALLED.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// An instance not hooked to the OS: [`deliver`](Self::deliver) drives it (tests, and
    /// front ends that stop for other reasons).
    pub fn manual() -> Self {
        Self::new(false)
    }

    fn new(exit_on_third: bool) -> Self {
        Self { shared: Arc::new(Shared { state: Mutex::default(), exit_on_third }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a graceful stop may wait for the running image before it becomes "cancel now"
    /// (`None`: as long as it takes; zero: the first signal cancels at once).
    pub fn set_grace(&self, grace: Option<Duration>) {
        self.state().grace = grace;
    }

    /// Records a signal, as the handler thread does: the first asks for a graceful stop (or
    /// "now" with a zero grace), the second for "now"; the third exits the process when this
    /// instance is hooked to the OS.
    pub fn deliver(&self, signal: StopSignal) {
        let (request, callbacks, grace) = {
            let mut state = self.state();
            state.signals += 1;
            let first = *state.first.get_or_insert(signal);
            if state.signals >= 3 && self.shared.exit_on_third {
                eprintln!("{}: a third stop signal; exiting now", first.name());
                std::process::exit(i32::from(first.exit_code()));
            }
            let wanted = match (state.signals, state.grace) {
                (1, Some(grace)) if grace.is_zero() => StopMode::Now,
                (1, _) => StopMode::AfterImage,
                _ => StopMode::Now,
            };
            if state.mode.is_some_and(|mode| mode >= wanted) {
                return;
            }
            state.mode = Some(wanted);
            let grace = (wanted == StopMode::AfterImage).then_some(state.grace).flatten();
            (StopRequest { signal: first, mode: wanted }, state.callbacks.clone(), grace)
        };
        for callback in &callbacks {
            callback(request);
        }
        if let Some(grace) = grace {
            let signals = self.clone();
            let escalate = move || {
                std::thread::sleep(grace);
                signals.escalate();
            };
            if let Err(err) =
                std::thread::Builder::new().name("imagelab-stop-grace".into()).spawn(escalate)
            {
                tracing::warn!(%err, "no grace timer; the running image will finish");
            }
        }
    }

    /// Turns a graceful stop into "cancel now" (the grace period ran out).
    fn escalate(&self) {
        let (request, callbacks) = {
            let mut state = self.state();
            let (Some(signal), Some(StopMode::AfterImage)) = (state.first, state.mode) else {
                return;
            };
            state.mode = Some(StopMode::Now);
            (StopRequest { signal, mode: StopMode::Now }, state.callbacks.clone())
        };
        for callback in &callbacks {
            callback(request);
        }
    }

    /// The stop asked for so far, if any (the poll).
    pub fn request(&self) -> Option<StopRequest> {
        let state = self.state();
        Some(StopRequest { signal: state.first?, mode: state.mode? })
    }

    /// The exit code a front end should end with: 128 + the first signal's number.
    pub fn exit_code(&self) -> Option<u8> {
        self.request().map(|request| request.signal.exit_code())
    }

    /// Calls `callback` on the signal thread for every change of the request (at once when a
    /// stop was already asked for). It must not block: send a command, wake a window.
    pub fn on_request(&self, callback: impl Fn(StopRequest) + Send + Sync + 'static) {
        let callback: Callback = Arc::new(callback);
        let now = {
            let mut state = self.state();
            state.callbacks.push(callback.clone());
            state.first.zip(state.mode).map(|(signal, mode)| StopRequest { signal, mode })
        };
        if let Some(request) = now {
            callback(request);
        }
    }

    /// A channel that receives every change of the request, for front ends that `select!`.
    pub fn subscribe(&self) -> Receiver<StopRequest> {
        let (sender, receiver) = bounded(4);
        self.on_request(move |request| {
            let _ = sender.try_send(request);
        });
        receiver
    }
}

#[cfg(unix)]
fn hook_os_signals(signals: &StopSignals) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut incoming = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let signals = signals.clone();
    std::thread::Builder::new().name("imagelab-signals".into()).spawn(move || {
        for number in incoming.forever() {
            if let Some(signal) = StopSignal::from_number(number) {
                signals.deliver(signal);
            }
        }
    })?;
    Ok(())
}

#[cfg(not(unix))]
fn hook_os_signals(_signals: &StopSignals) -> std::io::Result<()> {
    // Without POSIX signals the process keeps the platform's default Ctrl+C behaviour.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_is_graceful_second_cancels_and_the_first_picks_the_exit_code() {
        let stops = StopSignals::manual();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        stops.on_request(move |request| sink.lock().expect("lock").push(request));
        assert_eq!((stops.request(), stops.exit_code()), (None, None));
        stops.deliver(StopSignal::Terminate);
        assert_eq!(
            stops.request(),
            Some(StopRequest { signal: StopSignal::Terminate, mode: StopMode::AfterImage })
        );
        stops.deliver(StopSignal::Interrupt);
        stops.deliver(StopSignal::Interrupt);
        assert_eq!(stops.exit_code(), Some(143), "the first signal decides");
        let seen = seen.lock().expect("lock").clone();
        let modes: Vec<StopMode> = seen.iter().map(|r| r.mode).collect();
        assert_eq!(modes, [StopMode::AfterImage, StopMode::Now], "one callback per change");
        // A late subscriber hears where things stand at once.
        let late = stops.subscribe();
        assert_eq!(late.try_recv().map(|r| r.mode), Ok(StopMode::Now));
        assert_eq!(StopSignal::from_number(2).map(StopSignal::exit_code), Some(130));
        assert_eq!(StopSignal::from_number(9), None);
    }

    #[test]
    fn a_grace_period_turns_a_graceful_stop_into_cancel_now() {
        let zero = StopSignals::manual();
        zero.set_grace(Some(Duration::ZERO));
        zero.deliver(StopSignal::Interrupt);
        assert_eq!(zero.request().map(|r| r.mode), Some(StopMode::Now));

        let short = StopSignals::manual();
        short.set_grace(Some(Duration::from_millis(20)));
        let changes = short.subscribe();
        short.deliver(StopSignal::Terminate);
        assert_eq!(changes.recv().map(|r| r.mode), Ok(StopMode::AfterImage));
        let escalated = changes.recv_timeout(Duration::from_secs(30)).expect("escalates");
        assert_eq!(escalated, StopRequest { signal: StopSignal::Terminate, mode: StopMode::Now });

        let unbounded = StopSignals::manual();
        let changes = unbounded.subscribe();
        unbounded.deliver(StopSignal::Terminate);
        assert_eq!(changes.recv().map(|r| r.mode), Ok(StopMode::AfterImage));
        assert!(changes.recv_timeout(Duration::from_millis(50)).is_err(), "no grace, no timer");
    }
}
