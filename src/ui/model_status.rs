//! Whether each catalog model is on disk: a small seam the model picker reads, so the window
//! works before the hub module exists and shows real status once it plugs in.

/// Where a model's weights are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelAvailability {
    /// In the local cache (or a local path).
    Cached,
    /// Not on disk; the first run downloads it.
    NotDownloaded,
    /// Being downloaded; fraction done when known.
    Downloading(Option<f32>),
    /// Not known (no hub module in this build).
    Unknown,
}

impl ModelAvailability {
    /// A short label for the picker.
    pub fn label(self) -> String {
        match self {
            Self::Cached => "cached".to_owned(),
            Self::NotDownloaded => "not downloaded".to_owned(),
            Self::Downloading(Some(fraction)) => format!("downloading {:.0}%", fraction * 100.0),
            Self::Downloading(None) => "downloading".to_owned(),
            Self::Unknown => String::new(),
        }
    }
}

/// Answers "is this model here?" for the picker; must be cheap (called every frame).
pub trait ModelStatusSource {
    /// The status of a catalog display name.
    fn availability(&self, display_name: &str) -> ModelAvailability;
}

/// The placeholder until `models::hub` can tell: everything is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoModelStatus;

impl ModelStatusSource for NoModelStatus {
    fn availability(&self, _display_name: &str) -> ModelAvailability {
        ModelAvailability::Unknown
    }
}
