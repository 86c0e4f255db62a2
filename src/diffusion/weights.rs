//! Weights: `.safetensors` only, read tensor by tensor with positioned reads into the model's
//! own buffers (LoRA files are memory-mapped: the one audited `unsafe` of the crate), the
//! choice of file within a component folder (`*.fp16.safetensors` on GPU when present), and
//! tensor byte counts read from the safetensors headers (what the model cache accounts).
//!
//! [`ComponentWeights`] is the seam every model builder reads through: a component's tensors by
//! the names the model asks for (diffusers/transformers names), from a diffusers folder's files
//! as they are, or from a single-file checkpoint through a name map
//! ([`super::single_file`]). A [`TensorPatch`] given at load sees every tensor on the way in
//! (in the file's precision, after renaming), which is where LoRA deltas are merged.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use serde_json::Value;

use super::error::{DiffusionError, Result, read_json};
use super::single_file::names::{NameMap, Transform};
use crate::models::safetensors_header::{SafetensorsHeader, read_header};
use crate::models::weight_files::{WeightVariant, choose_weight_files};

/// A change made to tensors as a component loads them: given the model's name for the tensor
/// and the tensor (on the device, in the file's precision, renamed and reshaped as the model
/// expects), returns what the model gets. LoRA merging implements this.
pub trait TensorPatch: Send + Sync {
    /// The tensor `name` becomes the returned tensor (same shape).
    ///
    /// # Errors
    /// Tensor errors.
    fn patch(&self, name: &str, tensor: Tensor) -> candle_core::Result<Tensor>;
}

/// Where one component's tensors come from, by the names its model asks for.
#[derive(Debug, Clone)]
pub enum ComponentWeights {
    /// Safetensors files whose tensor names are the model's (a diffusers component folder).
    Files(Vec<PathBuf>),
    /// A single-file checkpoint read through a name map (model name → stored tensor).
    Mapped {
        /// The checkpoint.
        file: PathBuf,
        /// Its validated header (shapes and dtypes of the stored tensors).
        header: Arc<SafetensorsHeader>,
        /// This component's tensors.
        map: Arc<NameMap>,
    },
}

impl ComponentWeights {
    /// The weight files of a diffusers component folder ([`component_weights`]).
    ///
    /// # Errors
    /// As [`component_weights`].
    pub fn folder(folder: &Path, stem: &str, prefer_fp16: bool) -> Result<Self> {
        Ok(Self::Files(component_weights(folder, stem, prefer_fp16)?))
    }

    /// The file named in errors.
    pub fn first_file(&self) -> &Path {
        match self {
            Self::Files(files) => files.first().map_or(Path::new(""), PathBuf::as_path),
            Self::Mapped { file, .. } => file,
        }
    }

    /// A `VarBuilder` over these tensors (read as they are asked for), converting to `dtype`
    /// on `device`, each tensor passed through `patch` first when there is one.
    ///
    /// # Errors
    /// Unreadable or malformed files.
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
        patch: Option<Arc<dyn TensorPatch>>,
    ) -> Result<VarBuilder<'static>> {
        match (self, patch) {
            (Self::Files(files), None) => mmap_var_builder(files, dtype, device),
            (Self::Files(files), Some(patch)) => {
                let backend = MappedBackend {
                    tensors: ReadSafetensors::open(files)?,
                    map: None,
                    patch: Some(patch),
                };
                Ok(VarBuilder::from_backend(Box::new(backend), dtype, device.clone()))
            }
            (Self::Mapped { file, map, .. }, patch) => {
                let backend = MappedBackend {
                    tensors: ReadSafetensors::open(std::slice::from_ref(file))?,
                    map: Some(Arc::clone(map)),
                    patch,
                };
                Ok(VarBuilder::from_backend(Box::new(backend), dtype, device.clone()))
            }
        }
    }

    /// For a mapped single file: every tensor the model can ask for, with the shape it will
    /// have (after its transform). `None` for plain files.
    pub fn mapped_shapes(&self) -> Option<std::collections::BTreeMap<String, Vec<usize>>> {
        let Self::Mapped { header, map, .. } = self else { return None };
        let shapes = super::single_file::infer::Shapes { header, map };
        Some(map.keys().filter_map(|name| Some((name.clone(), shapes.get(name)?))).collect())
    }

    /// Bytes of the tensors once loaded as `dtype`, counting only those whose (model) name
    /// `keep` accepts; read from headers only.
    ///
    /// # Errors
    /// Unreadable or malformed headers.
    pub fn bytes(&self, dtype: DType, keep: &dyn Fn(&str) -> bool) -> Result<u64> {
        match self {
            Self::Files(files) => safetensors_bytes(files, dtype, keep),
            Self::Mapped { header, map, .. } => Ok(map
                .iter()
                .filter(|(name, _)| keep(name))
                .filter_map(|(_, source)| {
                    let stored = header.tensors.get(&source.name)?;
                    let elements: u64 = stored.shape.iter().product();
                    Some(match source.transform {
                        Transform::Rows { len, .. } => {
                            let rows = stored.shape.first().copied().unwrap_or(1).max(1);
                            elements / rows * len as u64
                        }
                        _ => elements,
                    })
                })
                .map(|elements| elements * dtype.size_in_bytes() as u64)
                .sum()),
        }
    }
}

/// Memory-maps safetensors files (LoRA files too) through the one audited mapping below.
///
/// # Errors
/// Files that are not `.safetensors`, unreadable or malformed files.
pub(crate) fn open_safetensors(files: &[PathBuf]) -> Result<MmapedSafetensors> {
    open_mmap(files)
}

/// Memory-maps safetensors files.
#[allow(unsafe_code, reason = "the one audited mmap: see SAFETY below")]
fn open_mmap(files: &[PathBuf]) -> Result<MmapedSafetensors> {
    for file in files {
        if file.extension().and_then(|ext| ext.to_str()) != Some("safetensors") {
            return Err(DiffusionError::config(
                "weights",
                "only .safetensors files are loaded",
                file,
            ));
        }
    }
    // SAFETY: the files are mapped read-only; safetensors headers are validated by candle
    // before any tensor is read. The mapping is undefined behaviour only if another process
    // truncates or rewrites a model file while it is loaded, which model folders never expect.
    let mapped = unsafe { MmapedSafetensors::multi(files) };
    mapped.map_err(|err| {
        DiffusionError::config(
            "weights",
            err.to_string(),
            files.first().map_or(Path::new(""), PathBuf::as_path),
        )
    })
}

/// Safetensors files whose tensors are read one at a time, when the model asks for them, with
/// a seek and one read straight into the tensor's buffer. Memory-mapping them instead (candle's
/// `MmapedSafetensors`) made every weight exist twice while a model loaded (the mapped page
/// and the tensor copied from it: 19 GiB of peak RSS for SDXL's 9.6 GiB f32 UNet) and faulted
/// the file in 4 KiB at a time (34 s to load it from the page cache on the 2-vCPU bench machine).
struct ReadSafetensors {
    files: Vec<Mutex<fs_err::File>>,
    /// Tensor name → (file index, absolute byte range, dtype, shape).
    tensors: HashMap<String, StoredTensor>,
}

struct StoredTensor {
    file: usize,
    start: u64,
    bytes: usize,
    /// The stored dtype, or its name when candle has no such dtype.
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
}

impl ReadSafetensors {
    /// Opens `files` and validates their headers (nothing else is read yet). A tensor name in
    /// two shards is taken from the first, as candle's `MmapedSafetensors::multi` does.
    fn open(files: &[PathBuf]) -> Result<Self> {
        let mut opened = Vec::with_capacity(files.len());
        let mut tensors = HashMap::new();
        for (index, path) in files.iter().enumerate() {
            if path.extension().and_then(|ext| ext.to_str()) != Some("safetensors") {
                return Err(DiffusionError::config(
                    "weights",
                    "only .safetensors files are loaded",
                    path,
                ));
            }
            let header = read_header(path)?;
            let file = fs_err::File::open(path).map_err(|err| {
                DiffusionError::config("weights", err.to_string(), path.as_path())
            })?;
            let file_bytes = file
                .metadata()
                .map_err(|err| DiffusionError::config("weights", err.to_string(), path.as_path()))?
                .len();
            let data_start = file_bytes - header.data_bytes;
            for (name, entry) in header.tensors {
                let (begin, end) = entry.data_offsets;
                let stored = StoredTensor {
                    file: index,
                    start: data_start + begin,
                    bytes: usize::try_from(end - begin).unwrap_or(usize::MAX),
                    // Checkpoints carry tensors no model reads (e.g. an I32 step counter):
                    // refused only if one is asked for.
                    dtype: safetensors_dtype(&entry.dtype).ok_or(entry.dtype),
                    shape: entry
                        .shape
                        .iter()
                        .map(|&dim| usize::try_from(dim).unwrap_or(usize::MAX))
                        .collect(),
                };
                tensors.entry(name).or_insert(stored);
            }
            opened.push(Mutex::new(file));
        }
        Ok(Self { files: opened, tensors })
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Reads tensor `name` in its stored dtype onto `device`.
    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let Some(stored) = self.tensors.get(name) else {
            return Err(candle_core::Error::CannotFindTensor { path: name.to_owned() });
        };
        let dtype = match &stored.dtype {
            Ok(dtype) => *dtype,
            Err(name_of_dtype) => {
                return Err(candle_core::Error::Msg(format!(
                    "tensor {name} has dtype {name_of_dtype}, which is not loaded"
                )));
            }
        };
        let read_error =
            |err: std::io::Error| candle_core::Error::Msg(format!("reading tensor {name}: {err}"));
        let mut file = self.files[stored.file]
            .lock()
            .map_err(|_| candle_core::Error::Msg("a weights reader panicked".to_owned()))?;
        file.seek(SeekFrom::Start(stored.start)).map_err(read_error)?;
        let tensor = if dtype == DType::F32 {
            // Straight into the f32 buffer the tensor keeps (no second copy); huge pages where
            // the kernel offers them, as for the packed weights.
            let mut values = imagelab_kernels::zeroed(stored.bytes / 4);
            file.read_exact(bytemuck::cast_slice_mut(&mut values)).map_err(read_error)?;
            Tensor::from_vec(values, stored.shape.as_slice(), &Device::Cpu)?
        } else {
            let mut bytes = vec![0u8; stored.bytes];
            file.read_exact(&mut bytes).map_err(read_error)?;
            Tensor::from_raw_buffer(&bytes, dtype, &stored.shape, &Device::Cpu)?
        };
        drop(file);
        tensor.to_device(device)
    }
}

/// candle's dtype for a safetensors dtype name (the ones model weights use).
fn safetensors_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" | "BOOL" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        _ => return None,
    })
}

/// Tensors read from safetensors files, optionally renamed (`map`: model name → stored tensor)
/// and patched.
struct MappedBackend {
    tensors: ReadSafetensors,
    map: Option<Arc<NameMap>>,
    patch: Option<Arc<dyn TensorPatch>>,
}

impl SimpleBackend for MappedBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            let stored = self
                .map
                .as_ref()
                .and_then(|map| map.get(name))
                .map_or_else(String::new, |source| format!(" (stored as {})", source.name));
            return Err(candle_core::Error::Msg(format!(
                "tensor {name}{stored} has shape {:?}, the model expects {:?}",
                tensor.dims(),
                shape.dims()
            )));
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = match &self.map {
            None => self.tensors.load(name, device)?,
            Some(map) => {
                let Some(source) = map.get(name) else {
                    return Err(candle_core::Error::CannotFindTensor { path: name.to_owned() });
                };
                let stored = self.tensors.load(&source.name, device)?;
                match source.transform {
                    Transform::Identity => stored,
                    Transform::Rows { start, len } => stored.narrow(0, start, len)?,
                    Transform::Transpose => stored.t()?.contiguous()?,
                    Transform::DropUnitDims => {
                        let dims = stored.dims();
                        if dims.len() > 2 && dims[2..].iter().all(|&d| d == 1) {
                            stored.reshape((dims[0], dims[1]))?
                        } else {
                            stored
                        }
                    }
                }
            }
        };
        let tensor = match &self.patch {
            Some(patch) => patch.patch(name, tensor)?,
            None => tensor,
        };
        tensor.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.map {
            Some(map) => map.contains_key(name),
            None => self.tensors.contains(name),
        }
    }
}

/// The weights files of a diffusers component folder, chosen as the hub planner chooses them
/// ([`choose_weight_files`]): the `fp16` variant first when `prefer_fp16`, single file or
/// shards (the shards the index lists, all required). Pickled `.bin` files are never considered.
///
/// # Errors
/// No weights (the message names what was looked for), or a malformed shard index.
pub fn component_weights(folder: &Path, stem: &str, prefer_fp16: bool) -> Result<Vec<PathBuf>> {
    // A missing or unreadable folder has no weights: the error below names it.
    let names: Vec<String> = fs_err::read_dir(folder)
        .map(|entries| {
            entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect()
        })
        .unwrap_or_default();
    let prefer = if prefer_fp16 { WeightVariant::Fp16 } else { WeightVariant::Full };
    let chosen = choose_weight_files(names.iter().map(String::as_str), &[stem], prefer).map_err(
        |_| {
            DiffusionError::config(
                "weights",
                format!(
                    "no {stem}.safetensors or {stem}.fp16.safetensors (only .safetensors are loaded)"
                ),
                folder,
            )
        },
    )?;
    match &chosen.index {
        Some(index) => shards_from_index(folder, &folder.join(index)),
        None => Ok(chosen.files.iter().map(|file| folder.join(file)).collect()),
    }
}

/// The distinct shard files named by a `*.safetensors.index.json` `weight_map`, in order.
fn shards_from_index(folder: &Path, index_path: &Path) -> Result<Vec<PathBuf>> {
    let index: serde_json::Value = read_json("weights index", index_path)?;
    let Some(map) = index.get("weight_map").and_then(serde_json::Value::as_object) else {
        return Err(DiffusionError::config("weight_map", "missing or not an object", index_path));
    };
    let mut shards: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let Some(name) = file.as_str() else {
            return Err(DiffusionError::config(
                "weight_map",
                "values must be file names",
                index_path,
            ));
        };
        if name.contains('/') || name.contains('\\') || !name.ends_with(".safetensors") {
            return Err(DiffusionError::config(
                "weight_map",
                format!("{name:?} is not a .safetensors shard here"),
                index_path,
            ));
        }
        let shard = folder.join(name);
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    if let Some(missing) = shards.iter().find(|shard| !shard.is_file()) {
        return Err(DiffusionError::config(
            "weight_map",
            "lists a shard that is not there",
            missing,
        ));
    }
    Ok(shards)
}

/// A `VarBuilder` over safetensors files (each tensor read when the model asks for it),
/// converting to `dtype` on `device`.
///
/// # Errors
/// Unreadable or malformed files.
pub fn mmap_var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let backend = MappedBackend { tensors: ReadSafetensors::open(files)?, map: None, patch: None };
    Ok(VarBuilder::from_backend(Box::new(backend), dtype, device.clone()))
}

/// Bytes of the tensors in safetensors `files` once loaded as `dtype` (read from the headers:
/// element counts × the element size of `dtype`; nothing else is read), counting only the
/// tensors whose name `keep` accepts.
///
/// # Errors
/// Unreadable or malformed headers (the message names the file).
pub fn safetensors_bytes(
    files: &[PathBuf],
    dtype: DType,
    keep: &dyn Fn(&str) -> bool,
) -> Result<u64> {
    use std::io::Read;
    let mut total = 0u64;
    for file in files {
        let header_error =
            |what: String| DiffusionError::config("safetensors header", what, file.as_path());
        let mut reader = fs_err::File::open(file).map_err(|err| header_error(err.to_string()))?;
        let mut length = [0u8; 8];
        reader.read_exact(&mut length).map_err(|err| header_error(err.to_string()))?;
        let length = u64::from_le_bytes(length);
        let mut header = Vec::new();
        reader
            .take(length)
            .read_to_end(&mut header)
            .map_err(|err| header_error(err.to_string()))?;
        let header: Value =
            serde_json::from_slice(&header).map_err(|err| header_error(err.to_string()))?;
        let Some(entries) = header.as_object() else {
            return Err(header_error("not a JSON object".to_owned()));
        };
        for (name, entry) in entries {
            if name == "__metadata__" || !keep(name) {
                continue;
            }
            let elements: u64 = entry
                .get("shape")
                .and_then(Value::as_array)
                .map_or(0, |shape| shape.iter().filter_map(Value::as_u64).product());
            total += elements * dtype.size_in_bytes() as u64;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_variant_is_preferred_only_when_asked_and_bin_files_are_never_picked() {
        let folder = tempfile::tempdir().expect("tempdir");
        fs_err::write(folder.path().join("diffusion_pytorch_model.bin"), b"pickle").expect("write");
        let missing = component_weights(folder.path(), "diffusion_pytorch_model", false);
        assert!(missing.expect_err("no safetensors").to_string().contains("only .safetensors"));
        fs_err::write(folder.path().join("diffusion_pytorch_model.safetensors"), b"x")
            .expect("write");
        fs_err::write(folder.path().join("diffusion_pytorch_model.fp16.safetensors"), b"x")
            .expect("write");
        let full =
            component_weights(folder.path(), "diffusion_pytorch_model", false).expect("full");
        assert!(full[0].ends_with("diffusion_pytorch_model.safetensors"));
        let half = component_weights(folder.path(), "diffusion_pytorch_model", true).expect("half");
        assert!(half[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
    }

    #[test]
    fn sharded_weights_are_found_through_their_index() {
        let folder = tempfile::tempdir().expect("tempdir");
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        fs_err::write(folder.path().join("model.safetensors.index.json"), index).expect("write");
        fs_err::write(folder.path().join("model-00001-of-00002.safetensors"), b"x").expect("write");
        let missing =
            component_weights(folder.path(), "model", false).expect_err("shard 2 missing");
        assert!(missing.to_string().contains("model-00002-of-00002"), "{missing}");
        fs_err::write(folder.path().join("model-00002-of-00002.safetensors"), b"x").expect("write");
        let shards = component_weights(folder.path(), "model", false).expect("shards");
        assert_eq!(shards.len(), 2);
    }
}
