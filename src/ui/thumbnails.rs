//! Decoding images off the UI thread: a named worker reads PNGs, shrinks them to thumbnails and
//! reads their metadata; it also lists the output folder. The window only uploads textures.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::storage::metadata::GenerationInfo;
use crate::storage::metadata::containers::generation_info;

/// Largest side of a thumbnail, in pixels.
pub const THUMBNAIL_MAX_PX: u32 = 256;
/// Most images listed from the output folder (newest first).
pub const MAX_LISTED_IMAGES: usize = 500;
const CHANNEL_CAPACITY: usize = 512;

/// What the worker is asked to do.
#[derive(Debug)]
enum LoadRequest {
    /// Decode one image.
    Thumbnail(PathBuf),
    /// List the PNGs under a folder.
    Scan(PathBuf),
}

/// What the worker answers.
#[derive(Debug)]
pub enum Loaded {
    /// A decoded thumbnail and the image's own metadata.
    Thumbnail {
        /// The image file.
        path: PathBuf,
        /// The shrunk picture.
        image: egui::ColorImage,
        /// Our `imagelab` chunk, when the file has one.
        info: Option<Box<GenerationInfo>>,
    },
    /// The PNGs found under a folder, newest first.
    Listing(Vec<PathBuf>),
    /// A file that could not be read.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// The handle on the decoding thread, plus the textures made so far.
pub struct ThumbnailLoader {
    requests: Sender<LoadRequest>,
    results: Receiver<Loaded>,
    pending: HashSet<PathBuf>,
    textures: HashMap<PathBuf, egui::TextureHandle>,
}

impl std::fmt::Debug for ThumbnailLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThumbnailLoader")
            .field("textures", &self.textures.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ThumbnailLoader {
    /// Starts the `imagelab-thumbnails` thread; `waker` is called after each result.
    ///
    /// # Errors
    /// The thread could not start.
    pub fn spawn(waker: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (request_tx, request_rx) = bounded::<LoadRequest>(CHANNEL_CAPACITY);
        let (result_tx, result_rx) = bounded::<Loaded>(CHANNEL_CAPACITY);
        std::thread::Builder::new().name("imagelab-thumbnails".into()).spawn(move || {
            for request in request_rx {
                let answer = match request {
                    LoadRequest::Thumbnail(path) => decode_thumbnail(&path),
                    LoadRequest::Scan(root) => Loaded::Listing(list_images(&root)),
                };
                if result_tx.send(answer).is_err() {
                    break;
                }
                waker();
            }
        })?;
        Ok(Self {
            requests: request_tx,
            results: result_rx,
            pending: HashSet::new(),
            textures: HashMap::new(),
        })
    }

    /// Asks for a thumbnail unless it is loaded or on its way; never blocks.
    pub fn request(&mut self, path: &Path) {
        if self.textures.contains_key(path) || self.pending.contains(path) {
            return;
        }
        match self.requests.try_send(LoadRequest::Thumbnail(path.to_owned())) {
            Ok(()) => {
                self.pending.insert(path.to_owned());
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// Asks for a listing of the PNGs under `root`.
    pub fn scan(&self, root: &Path) {
        let _ = self.requests.try_send(LoadRequest::Scan(root.to_owned()));
    }

    /// The texture for `path`, once decoded.
    pub fn texture(&self, path: &Path) -> Option<&egui::TextureHandle> {
        self.textures.get(path)
    }

    /// Takes finished results: uploads thumbnails as textures and hands the rest back.
    pub fn drain(&mut self, ctx: &egui::Context, budget: std::time::Duration) -> Vec<Loaded> {
        let started = std::time::Instant::now();
        let mut other = Vec::new();
        while started.elapsed() < budget {
            let Ok(loaded) = self.results.try_recv() else { break };
            match loaded {
                Loaded::Thumbnail { path, image, info } => {
                    self.pending.remove(&path);
                    let name = path.display().to_string();
                    let texture = ctx.load_texture(name, image, egui::TextureOptions::LINEAR);
                    self.textures.insert(path.clone(), texture);
                    other.push(Loaded::Thumbnail {
                        path,
                        image: egui::ColorImage::default(),
                        info,
                    });
                }
                Loaded::Failed { path, error } => {
                    self.pending.remove(&path);
                    other.push(Loaded::Failed { path, error });
                }
                listing @ Loaded::Listing(_) => other.push(listing),
            }
        }
        other
    }
}

fn decode_thumbnail(path: &Path) -> Loaded {
    let bytes = match fs_err::read(path) {
        Ok(bytes) => bytes,
        Err(err) => return Loaded::Failed { path: path.to_owned(), error: err.to_string() },
    };
    let decoded = match image::load_from_memory(&bytes) {
        Ok(decoded) => decoded,
        Err(err) => {
            return Loaded::Failed {
                path: path.to_owned(),
                error: format!("cannot decode: {err}: {}", path.display()),
            };
        }
    };
    let small = decoded.thumbnail(THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX).to_rgba8();
    let size = [small.width() as usize, small.height() as usize];
    let image = egui::ColorImage::from_rgba_unmultiplied(size, small.as_raw());
    let info = generation_info(&bytes).ok().flatten().map(Box::new);
    Loaded::Thumbnail { path: path.to_owned(), image, info }
}

/// The images the lab writes (PNG, JPEG, WebP) under `root` (two folder levels deep, as
/// sweeps nest them), newest first. Hidden folders (`.inputs`, where the server keeps init
/// images it was sent) are not the gallery.
fn list_images(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    let mut folders = vec![(root.to_owned(), 0_usize)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = fs_err::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let hidden =
                    path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'));
                if depth < 3 && !hidden {
                    folders.push((path, depth + 1));
                }
            } else if path.extension().is_some_and(|ext| {
                ["png", "jpg", "jpeg", "webp"].iter().any(|known| ext.eq_ignore_ascii_case(known))
            }) {
                found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), path));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().take(MAX_LISTED_IMAGES).map(|(_, path)| path).collect()
}

impl ThumbnailLoader {
    /// A loader with no thread (when the thread could not start): requests go nowhere.
    pub fn inert() -> Self {
        let (requests, _) = bounded(1);
        let (_, results) = bounded(1);
        Self { requests, results, pending: HashSet::new(), textures: HashMap::new() }
    }
}
