//! Errors and notices: a log panel keeping the session's messages, and toasts that show the
//! newest errors over the window for a few seconds.

use std::time::{Duration, Instant};

/// How long a toast stays.
pub const TOAST_SECS: f32 = 6.0;
const MAX_LINES: usize = 500;

/// How serious a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Information.
    Info,
    /// A problem that did not stop anything.
    Warning,
    /// Something failed.
    Error,
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// How serious.
    pub severity: Severity,
    /// The text.
    pub text: String,
    /// When it arrived (wall clock, for the panel).
    pub time: String,
}

/// The log panel and the toasts.
#[derive(Debug, Default)]
pub struct LogPanel {
    /// Every message of the session (the oldest dropped past 500).
    pub lines: Vec<LogLine>,
    toasts: Vec<(Instant, String)>,
}

impl LogPanel {
    /// Records a message; warnings and errors also become toasts.
    pub fn push(&mut self, severity: Severity, text: impl Into<String>) {
        let text = text.into();
        if severity != Severity::Info {
            self.toasts.push((Instant::now(), text.clone()));
        }
        self.lines.push(LogLine {
            severity,
            text,
            time: chrono::Local::now().format("%H:%M:%S").to_string(),
        });
        if self.lines.len() > MAX_LINES {
            self.lines.remove(0);
        }
    }

    /// The errors recorded so far.
    pub fn errors(&self) -> impl Iterator<Item = &LogLine> {
        self.lines.iter().filter(|line| line.severity == Severity::Error)
    }

    /// Draws the panel.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Log");
        egui::ScrollArea::vertical().id_salt("log").stick_to_bottom(true).show(ui, |ui| {
            for line in &self.lines {
                let text = line.text.as_str();
                let response = match line.severity {
                    Severity::Info => ui.label(text),
                    Severity::Warning => ui.colored_label(ui.visuals().warn_fg_color, text),
                    Severity::Error => ui.colored_label(ui.visuals().error_fg_color, text),
                };
                response.on_hover_text(&line.time);
            }
        });
    }

    /// Draws the live toasts in the top-right corner; asks for a repaint while any is shown.
    pub fn toasts_ui(&mut self, ctx: &egui::Context) {
        let lifetime = Duration::from_secs_f32(TOAST_SECS);
        self.toasts.retain(|(since, _)| since.elapsed() < lifetime);
        if self.toasts.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::unique("imagelab.toasts"))
            .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-12.0, 12.0))
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                for (_, text) in self.toasts.iter().rev().take(4) {
                    egui::Frame::popup(ui.style()).show(ui, |ui| {
                        ui.set_max_width(360.0);
                        ui.colored_label(ui.visuals().error_fg_color, text);
                    });
                }
            });
        ctx.request_repaint_after(Duration::from_millis(500));
    }
}
