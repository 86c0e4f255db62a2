//! How a serving process is asked to stop: a token with two levels, graceful (take no new
//! work, let the running image finish) and immediate (cancel it within one step), and the
//! first reason given. Whatever asks — SIGINT/SIGTERM through `app::stop` (wired in
//! `cli::serve`), `POST /sdapi/v1/server-stop`, a `shutdown` line on stdin, the window closing —
//! only sets the token; the HTTP server, stdio mode and the service react, sending the engine
//! its clean [`Command::Stop`](crate::engine::Command::Stop) with that reason.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// Not asked to stop.
const RUNNING: u8 = 0;
/// Finish the running job, take nothing new.
const GRACEFUL: u8 = 1;
/// Cancel the running job too.
const IMMEDIATE: u8 = 2;

/// A stop request shared by everything a serving process runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopToken {
    level: Arc<watch::Sender<u8>>,
    reason: Arc<Mutex<Option<String>>>,
}

impl Default for StopToken {
    fn default() -> Self {
        Self::new()
    }
}

impl StopToken {
    /// A token nobody has triggered.
    pub fn new() -> Self {
        Self { level: Arc::new(watch::Sender::new(RUNNING)), reason: Arc::default() }
    }

    /// Keeps the first reason given.
    fn note(&self, reason: &str) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| reason.to_owned());
    }

    /// Asks for a graceful stop (a second call escalates to an immediate one, as a second
    /// Ctrl-C does).
    pub fn request(&self, reason: &str) {
        self.note(reason);
        self.level
            .send_modify(|level| *level = if *level == RUNNING { GRACEFUL } else { IMMEDIATE });
    }

    /// Asks for a graceful stop; never escalates.
    pub fn request_graceful(&self, reason: &str) {
        self.note(reason);
        self.level.send_modify(|level| *level = (*level).max(GRACEFUL));
    }

    /// Asks for an immediate stop.
    pub fn request_immediate(&self, reason: &str) {
        self.note(reason);
        self.level.send_replace(IMMEDIATE);
    }

    /// Why the stop was first asked for (`stopped` until then).
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "stopped".to_owned())
    }

    /// Whether any stop was asked for.
    pub fn is_requested(&self) -> bool {
        *self.level.borrow() >= GRACEFUL
    }

    /// Whether an immediate stop was asked for.
    pub fn is_immediate(&self) -> bool {
        *self.level.borrow() >= IMMEDIATE
    }

    /// Resolves once a stop (of any level) is asked for.
    pub async fn requested(&self) {
        let mut receiver = self.level.subscribe();
        let _ = receiver.wait_for(|level| *level >= GRACEFUL).await;
    }

    /// Resolves once an immediate stop is asked for.
    pub async fn immediate(&self) {
        let mut receiver = self.level.subscribe();
        let _ = receiver.wait_for(|level| *level >= IMMEDIATE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_request_escalates() {
        let token = StopToken::new();
        assert!(!token.is_requested());
        token.request("SIGTERM");
        assert!(token.is_requested() && !token.is_immediate());
        token.request_graceful("window closed");
        assert!(!token.is_immediate(), "graceful never escalates");
        token.clone().request("SIGINT");
        assert!(token.is_immediate(), "clones share the level");
        assert_eq!(token.reason(), "SIGTERM", "the first reason is kept");
    }
}
