//! Favourites analytics and sweep contact sheets: what the images a user loves share, which
//! configurations to use next, and a sweep laid out as one labelled grid.
//!
//! - [`inputs`]: favourites as a list file, a folder (symlinks or copies), a CSV with a `path`
//!   column, or the window's `favorites.txt` files.
//! - [`images`]: every image the jobs logs list (all instances), joined with the favourites by
//!   path, by embedded metadata or by content; images the logs do not know are read from their
//!   own metadata.
//! - [`stats`]: per-dimension favourite count, generated count, rate and lift, and the
//!   "bundles" (value combinations favourites share), each a ready request.
//! - [`sheet`]: the contact sheet of a sweep folder: layout (shared with the window) and the
//!   PNG with its own metadata.
//!
//! The definitions of rate, lift and ranking are in `docs/FAVORITES.md`, and in [`stats`].

pub mod images;
pub mod inputs;
pub mod sheet;
pub mod stats;
pub mod values;

pub use images::{FavoriteMatch, MatchedBy, Population, Unmatched};
pub use inputs::{FavoriteRef, FavoritesSource};
pub use stats::{Analysis, Bundle, BundleRequest, DimensionStats, Row};
pub use values::{DimValue, Dimension, ImageSettings};

use std::path::PathBuf;

/// Why an analysis or a contact sheet could not start. Each names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A file or folder could not be read (the I/O error names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A folder argument that is not a folder.
    #[error("{flag}: not a folder: {path}")]
    NotAFolder {
        /// The flag that named it (`--dir`, `--logs`, `RUN_DIR`).
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A CSV file without a `path` column, or with a broken record.
    #[error("--csv: {message}: {path}")]
    Csv {
        /// What is wrong (the columns found, the line).
        message: String,
        /// The CSV file.
        path: PathBuf,
    },
    /// A bundle file or number that does not name a bundle.
    #[error("{0}")]
    Bundle(String),
    /// A contact sheet that cannot be made (nothing to show, a width too small).
    #[error("{0}")]
    Sheet(String),
}

/// The usual analysis: read the favourites, the logs beneath `log_dirs`, match and count.
///
/// # Errors
/// A favourites source or a logs folder that cannot be read (nothing is analysed then).
pub fn analyze(
    sources: &[FavoritesSource],
    log_dirs: &[PathBuf],
    min_support: usize,
) -> Result<Analysis, AnalyticsError> {
    let mut population = Population::from_log_dirs(log_dirs)?;
    let favorites = inputs::read_all(sources, population.roots(), population.starred_roots())?;
    let matched = population.match_all(&favorites);
    Ok(Analysis::compute(&population, &matched, min_support))
}
