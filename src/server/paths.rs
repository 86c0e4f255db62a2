//! File paths that arrive in requests are confined to the folders the operator allowed: the
//! output folder and each `--allow-dir`. A path with a `..` component is refused outright; any
//! other path is resolved (symlinks included) and must land inside one of those folders.

use std::path::{Component, Path, PathBuf};

use crate::models::catalog::{ModelRef, ModelSource};
use crate::request::{Request, RequestError};

/// The folders request paths may point into, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
}

impl AllowedRoots {
    /// Resolves each folder (they must exist).
    ///
    /// # Errors
    /// A folder that cannot be resolved, named.
    pub fn new(folders: &[PathBuf]) -> Result<Self, String> {
        let roots = folders
            .iter()
            .map(|folder| {
                fs_err::canonicalize(folder).map_err(|err| format!("allowed folder: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { roots })
    }

    /// The resolved folders.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` resolved, when it exists inside an allowed folder.
    ///
    /// # Errors
    /// `..` in the path, a path that does not exist, or one outside every allowed folder; the
    /// error names `field`.
    pub fn check(&self, field: &str, path: &Path) -> Result<PathBuf, RequestError> {
        if path.components().any(|part| part == Component::ParentDir) {
            return Err(RequestError::new(
                field,
                format!("'..' is not allowed in request paths: {}", path.display()),
            ));
        }
        let resolved = fs_err::canonicalize(path)
            .map_err(|_| RequestError::new(field, format!("file not found: {}", path.display())))?;
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(resolved)
        } else {
            Err(RequestError::new(
                field,
                format!(
                    "{} is outside the folders this server may read (the output folder and \
                     each --allow-dir)",
                    path.display()
                ),
            ))
        }
    }

    /// Checks every path a request names: the init image, a local model, local LoRA files.
    /// Catalog names and hub ids pass untouched.
    ///
    /// # Errors
    /// The first path that is not allowed, naming its field.
    pub fn check_request(
        &self,
        request: &Request,
        model: Option<&ModelRef>,
    ) -> Result<(), RequestError> {
        if let Some(path) = &request.init_image {
            self.check("init_image", path)?;
        }
        if let Some(model) = model
            && let ModelSource::LocalDir(path) | ModelSource::LocalFile(path) = &model.source
        {
            self.check("model", path)?;
        }
        for lora in &request.loras {
            let path = Path::new(&lora.source);
            if looks_like_path(path) {
                self.check("loras", path)?;
            }
        }
        Ok(())
    }
}

/// Whether a LoRA source names a file rather than a hub id: absolute, with `..`, a file
/// extension, or something that exists on disk.
fn looks_like_path(path: &Path) -> bool {
    path.is_absolute()
        || path.components().any(|part| part == Component::ParentDir)
        || path.extension().is_some()
        || path.exists()
}

/// Resolves a path below the output folder for `GET /images/...`: relative, no `..`, an
/// existing file inside `root` (symlinks resolved).
///
/// # Errors
/// Why the path is not served (the caller answers 404 or 400).
pub fn image_below(root: &Path, relative: &str) -> Result<PathBuf, ImagePathError> {
    let path = Path::new(relative);
    if relative.is_empty()
        || path.is_absolute()
        || path.components().any(|part| !matches!(part, Component::Normal(_)))
    {
        return Err(ImagePathError::Refused);
    }
    let root = fs_err::canonicalize(root).map_err(|_| ImagePathError::NotFound)?;
    let resolved = fs_err::canonicalize(root.join(path)).map_err(|_| ImagePathError::NotFound)?;
    if !resolved.starts_with(&root) {
        return Err(ImagePathError::Refused);
    }
    if !resolved.is_file() {
        return Err(ImagePathError::NotFound);
    }
    Ok(resolved)
}

/// Why `GET /images/...` serves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePathError {
    /// Absolute, `..`, or resolving outside the output folder.
    Refused,
    /// No such file.
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_roots_pass() {
        let dir = tempfile::tempdir().expect("tmp");
        let inside = dir.path().join("out");
        let outside = dir.path().join("elsewhere");
        fs_err::create_dir_all(&inside).expect("mkdir");
        fs_err::create_dir_all(&outside).expect("mkdir");
        fs_err::write(inside.join("a.png"), b"x").expect("write");
        fs_err::write(outside.join("b.png"), b"x").expect("write");
        let roots = AllowedRoots::new(std::slice::from_ref(&inside)).expect("roots");
        assert!(roots.check("init_image", &inside.join("a.png")).is_ok());
        let err = roots.check("init_image", &outside.join("b.png")).expect_err("outside");
        assert_eq!(err.field, "init_image");
        assert!(err.message.contains("outside"), "{err}");
        let err = roots.check("init_image", &inside.join("../elsewhere/b.png")).expect_err("..");
        assert!(err.message.contains("'..'"), "{err}");
        let err = roots.check("init_image", &inside.join("missing.png")).expect_err("missing");
        assert!(err.message.contains("not found"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("out");
        fs_err::create_dir_all(&root).expect("mkdir");
        fs_err::write(dir.path().join("secret.txt"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.png"))
            .expect("symlink");
        fs_err::write(root.join("ok.png"), b"x").expect("write");
        assert_eq!(image_below(&root, "link.png"), Err(ImagePathError::Refused));
        assert_eq!(image_below(&root, "../secret.txt"), Err(ImagePathError::Refused));
        assert_eq!(image_below(&root, "/etc/passwd"), Err(ImagePathError::Refused));
        assert_eq!(image_below(&root, "nope.png"), Err(ImagePathError::NotFound));
        assert!(image_below(&root, "ok.png").is_ok());
        let roots = AllowedRoots::new(std::slice::from_ref(&root)).expect("roots");
        assert!(roots.check("init_image", &root.join("link.png")).is_err());
    }
}
