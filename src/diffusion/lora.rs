//! LoRA merged into the weights as they load: `W' = W + Σᵢ wᵢ · scaleᵢ · Bᵢ·Aᵢ` for every module
//! a LoRA names, in f32, in the order given — what diffusers' `load_lora_weights` followed by
//! `fuse_lora(lora_scale=w)` leaves in the model, LoRA after LoRA. A step then costs exactly
//! what it costs without LoRAs.
//!
//! The names are the models layer's ([`crate::models::lora`]): kohya, diffusers/peft and SGM
//! block names, found in each component's own weight names; conv LoRAs (`LoCon`) are merged as
//! `(B.flatten(1) @ A.flatten(1))` reshaped to the kernel, a Tucker core (`lora_mid`) as A1111
//! rebuilds it. The scale is `alpha / rank` (kohya's `.alpha`, or the peft config diffusers
//! saves in the `lora_adapter_metadata` header entry; without either, 1).
//!
//! Everything that can be checked from headers is checked before a tensor is read: adapter
//! types we do not merge (by name), modules whose change does not fit the model's weight
//! (another base model), a LoRA that matches nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::error::{DiffusionError, Result};
use super::pipeline::{PartToLoad, PipelineParts};
use super::weights::{ComponentWeights, TensorPatch, open_safetensors};
use crate::models::ModelError;
use crate::models::lora::{
    LoraKey, LoraPart, LoraTarget, ModuleIndex, ModuleNaming, inspect_lora, parse_key,
};
use crate::models::safetensors_header::{SafetensorsHeader, read_header};

/// A LoRA to merge, with its weight (negative allowed).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraToApply {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The multiplier (`<lora:name:w>`, diffusers' `lora_scale`).
    pub weight: f32,
}

/// What one LoRA changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraReport {
    /// The file.
    pub path: PathBuf,
    /// Modules merged, per model.
    pub modules: BTreeMap<LoraTarget, usize>,
    /// Modules of the file that this pipeline does not have (not merged), as written.
    pub unmatched: Vec<String>,
}

/// One module's change, read when its weight loads.
struct ModuleDelta {
    file: Arc<MmapedSafetensors>,
    down: String,
    up: String,
    mid: Option<String>,
    /// weight × scale.
    factor: f64,
}

impl ModuleDelta {
    /// The change to a weight of `shape`, in f32 on `device`.
    fn delta(&self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let load = |name: &str| self.file.load(name, device)?.to_dtype(DType::F32);
        let down = load(&self.down)?;
        let up = load(&self.up)?;
        let rank = down.dim(0)?;
        let up = up.flatten_from(1)?;
        let product = match &self.mid {
            None => up.matmul(&down.flatten_from(1)?)?,
            Some(mid) => {
                // A1111's rebuild of a Tucker-decomposed conv: Σ up[i,n]·mid[n,m,k,l]·down[m,j].
                let mid = load(mid)?;
                let (n, m, kh, kw) = mid.dims4()?;
                let down = down.flatten_from(1)?;
                let cores = mid.permute((2, 3, 0, 1))?.reshape((kh * kw, n, m))?;
                let out = up.dim(0)?;
                let inner = down.dim(1)?;
                let left = up.unsqueeze(0)?.broadcast_as((kh * kw, out, n))?.contiguous()?;
                let right =
                    down.unsqueeze(0)?.broadcast_as((kh * kw, rank, inner))?.contiguous()?;
                let product = left.matmul(&cores)?.matmul(&right)?; // (kh·kw, out, in)
                product.permute((1, 2, 0))?.reshape((out, inner, kh, kw))?
            }
        };
        product.reshape(shape)?.affine(self.factor, 0.0)
    }
}

/// The deltas of every LoRA for one component, by the weight names its model asks for.
struct LoraPatch {
    deltas: HashMap<String, Vec<ModuleDelta>>,
    inner: Option<Arc<dyn TensorPatch>>,
}

impl TensorPatch for LoraPatch {
    fn patch(&self, name: &str, tensor: Tensor) -> candle_core::Result<Tensor> {
        let tensor = match &self.inner {
            Some(inner) => inner.patch(name, tensor)?,
            None => tensor,
        };
        let Some(deltas) = self.deltas.get(name) else { return Ok(tensor) };
        let shape = tensor.dims().to_vec();
        let mut merged = tensor.to_dtype(DType::F32)?;
        for delta in deltas {
            merged = (merged + delta.delta(&shape, tensor.device())?)?;
        }
        Ok(merged)
    }
}

/// A component of the pipeline seen from a LoRA: where its modules are and their shapes.
struct Target {
    index: ModuleIndex,
    shapes: BTreeMap<String, Vec<usize>>,
    deltas: HashMap<String, Vec<ModuleDelta>>,
}

impl Target {
    fn of(target: LoraTarget, part: &PartToLoad) -> Result<Self> {
        let shapes = weight_shapes(&part.component.weights)?;
        let index = ModuleIndex::new(target, shapes.keys().map(String::as_str));
        Ok(Self { index, shapes, deltas: HashMap::new() })
    }
}

/// Every tensor of a component with its shape, as the model will ask for it.
fn weight_shapes(weights: &ComponentWeights) -> Result<BTreeMap<String, Vec<usize>>> {
    if let Some(shapes) = weights.mapped_shapes() {
        return Ok(shapes);
    }
    let ComponentWeights::Files(files) = weights else { return Ok(BTreeMap::new()) };
    let mut shapes = BTreeMap::new();
    for file in files {
        let header = read_header(file)?;
        for (name, entry) in header.tensors {
            let shape = entry.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX));
            shapes.insert(name, shape.collect());
        }
    }
    Ok(shapes)
}

/// A module of a LoRA file: its tensors by part.
#[derive(Default)]
struct ModuleTensors {
    parts: BTreeMap<LoraPart, String>,
}

/// The peft configuration diffusers stores in the `lora_adapter_metadata` header entry:
/// `<component>.lora_alpha`, `.r`, `.alpha_pattern`, `.rank_pattern`, `.use_rslora`.
struct PeftConfigs {
    config: serde_json::Map<String, Value>,
}

impl PeftConfigs {
    fn of(header: &SafetensorsHeader) -> Option<Self> {
        let text = header.metadata.get("lora_adapter_metadata")?;
        match serde_json::from_str::<Value>(text).ok()? {
            Value::Object(config) => Some(Self { config }),
            _ => None,
        }
    }

    /// alpha / r for `module` of `target` (peft's pattern keys match a module path's end).
    fn scale(&self, target: LoraTarget, module: &str) -> Option<f64> {
        let prefix = match target {
            LoraTarget::Unet => "unet",
            LoraTarget::TextEncoder(0) => "text_encoder",
            LoraTarget::TextEncoder(_) => "text_encoder_2",
        };
        let get = |key: &str| self.config.get(&format!("{prefix}.{key}"));
        let pattern = |key: &str| -> Option<f64> {
            let Value::Object(patterns) = get(key)? else { return None };
            patterns
                .iter()
                .find(|(pattern, _)| {
                    module == pattern.as_str() || module.ends_with(&format!(".{pattern}"))
                })
                .and_then(|(_, value)| value.as_f64())
        };
        let rank = pattern("rank_pattern").or_else(|| get("r")?.as_f64())?;
        let alpha = pattern("alpha_pattern").or_else(|| get("lora_alpha")?.as_f64())?;
        let rslora = get("use_rslora").and_then(Value::as_bool).unwrap_or(false);
        (rank > 0.0).then(|| if rslora { alpha / rank.sqrt() } else { alpha / rank })
    }
}

fn unsupported(path: &Path, what: impl Into<String>) -> DiffusionError {
    DiffusionError::Model(ModelError::UnsupportedLora { what: what.into(), path: path.into() })
}

/// A scalar tensor's value (`.alpha`, `.scale`).
fn scalar(file: &MmapedSafetensors, name: &str, path: &Path) -> Result<f64> {
    let tensor = file.load(name, &Device::Cpu)?.to_dtype(DType::F64)?;
    let values = tensor.flatten_all()?.to_vec1::<f64>()?;
    match values.as_slice() {
        [value] if value.is_finite() => Ok(*value),
        _ => Err(unsupported(path, format!("{name} is not one finite number"))),
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl PipelineParts {
    /// The same pipeline with `loras` merged into its UNet and text encoders as they load.
    /// Every LoRA is read (headers, and its `alpha` scalars) and checked now; the products
    /// are computed when each weight loads.
    ///
    /// # Errors
    /// A file that is not a LoRA we can merge (the adapter type named), a module whose change
    /// does not fit the model's weight, a LoRA that changes nothing in this pipeline.
    pub fn with_loras(mut self, loras: &[LoraToApply]) -> Result<(Self, Vec<LoraReport>)> {
        if loras.is_empty() {
            return Ok((self, Vec::new()));
        }
        let mut unet = Target::of(LoraTarget::Unet, &self.unet)?;
        let mut encoders = self
            .text_encoders
            .iter()
            .enumerate()
            .map(|(i, part)| Target::of(LoraTarget::TextEncoder(i), part))
            .collect::<Result<Vec<_>>>()?;
        let mut reports = Vec::with_capacity(loras.len());
        for lora in loras {
            if !lora.weight.is_finite() {
                return Err(unsupported(
                    &lora.path,
                    format!("weight {} is not finite", lora.weight),
                ));
            }
            let mut targets: Vec<&mut Target> =
                std::iter::once(&mut unet).chain(encoders.iter_mut()).collect();
            reports.push(add_lora(lora, &mut targets)?);
        }
        let attach = |part: &mut PartToLoad, target: Target| {
            if !target.deltas.is_empty() {
                let inner = part.patch.take();
                part.patch = Some(Arc::new(LoraPatch { deltas: target.deltas, inner }));
            }
        };
        attach(&mut self.unet, unet);
        for (part, target) in self.text_encoders.iter_mut().zip(encoders) {
            attach(part, target);
        }
        Ok((self, reports))
    }
}

/// Reads one LoRA and adds its module deltas to `targets` (UNet first, then the encoders).
fn add_lora(lora: &LoraToApply, targets: &mut [&mut Target]) -> Result<LoraReport> {
    let path = lora.path.as_path();
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_none_or(|e| !e.eq_ignore_ascii_case("safetensors"))
    {
        return Err(unsupported(
            path,
            "only .safetensors LoRA files are loaded (pickles can run code)",
        ));
    }
    let header = read_header(path)?;
    inspect_lora(&header)?;
    let peft = PeftConfigs::of(&header);
    let file = Arc::new(open_safetensors(std::slice::from_ref(&lora.path))?);
    let mut modules: BTreeMap<(LoraTarget, ModuleNaming, String), ModuleTensors> = BTreeMap::new();
    for name in header.tensors.keys() {
        if let Ok(Some(key)) = parse_key(name) {
            let entry = modules.entry((key.target, key.naming, key.module)).or_default();
            entry.parts.insert(key.part, name.clone());
        }
    }
    let mut report =
        LoraReport { path: lora.path.clone(), modules: BTreeMap::new(), unmatched: Vec::new() };
    for ((target, naming, module), tensors) in modules {
        let (Some(down), Some(up)) =
            (tensors.parts.get(&LoraPart::Down), tensors.parts.get(&LoraPart::Up))
        else {
            continue; // an alpha left from a pruned module (inspect_lora refused half pairs)
        };
        let key = LoraKey { target, module: module.clone(), naming, part: LoraPart::Down };
        let slot = match target {
            LoraTarget::Unet => 0,
            LoraTarget::TextEncoder(i) => i + 1,
        };
        let Some(model) = targets.get_mut(slot) else {
            report.unmatched.push(written(&key));
            continue;
        };
        let Some(weight_name) = model.index.find(&key).map(str::to_owned) else {
            report.unmatched.push(written(&key));
            continue;
        };
        let shape = |name: &str| -> Vec<usize> {
            header.tensors.get(name).map_or_else(Vec::new, |entry| {
                entry.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect()
            })
        };
        let mid = tensors.parts.get(&LoraPart::Mid).cloned();
        let target_shape = model.shapes.get(&weight_name).cloned().unwrap_or_default();
        let shapes = [down, up].map(|name| shape(name));
        let mid_shape = mid.as_deref().map(shape);
        if !fits(&shapes[0], &shapes[1], mid_shape.as_deref(), &target_shape) {
            return Err(unsupported(
                path,
                format!(
                    "module {} (up {:?}, down {:?}) does not fit the {}'s {weight_name} \
                     {target_shape:?}: is this LoRA for another base model?",
                    written(&key),
                    shapes[1],
                    shapes[0],
                    target.label()
                ),
            ));
        }
        let rank = shapes[0].first().copied().unwrap_or(1);
        let scale = if let Some(scale) = tensors.parts.get(&LoraPart::Scale) {
            scalar(&file, scale, path)?
        } else if let Some(alpha) = tensors.parts.get(&LoraPart::Alpha) {
            scalar(&file, alpha, path)? / rank as f64
        } else if naming == ModuleNaming::Dotted {
            peft.as_ref().and_then(|peft| peft.scale(target, &module)).unwrap_or(1.0)
        } else {
            1.0
        };
        model.deltas.entry(weight_name).or_default().push(ModuleDelta {
            file: Arc::clone(&file),
            down: down.clone(),
            up: up.clone(),
            mid,
            factor: f64::from(lora.weight) * scale,
        });
        *report.modules.entry(target).or_default() += 1;
    }
    if report.modules.is_empty() {
        let example = report.unmatched.first().cloned().unwrap_or_default();
        return Err(unsupported(
            path,
            format!(
                "none of its {} module(s) is in this model (e.g. {example}): is this LoRA for \
                 another base model?",
                report.unmatched.len()
            ),
        ));
    }
    Ok(report)
}

/// Whether a module's change, `up (out × r) · [mid (r × r × kh × kw)] · down (r × in…)`, has
/// the shape of the model's weight (a linear change may land on a 1×1 conv and back).
fn fits(down: &[usize], up: &[usize], mid: Option<&[usize]>, target: &[usize]) -> bool {
    let rank = down.first().copied().unwrap_or(0);
    let out = up.first().copied().unwrap_or(0);
    let up_rank = up.get(1).copied().unwrap_or(0);
    let inner = numel(down) / rank.max(1);
    let (ranks_agree, kernel) = match mid {
        None => (up_rank == rank, 1),
        Some(mid) => (
            mid.len() == 4 && mid[0] == up_rank && mid[1] == rank,
            numel(mid.get(2..).unwrap_or(&[])),
        ),
    };
    rank > 0 && ranks_agree && target.first() == Some(&out) && out * inner * kernel == numel(target)
}

/// A module as the file writes it, for messages.
fn written(key: &LoraKey) -> String {
    let prefix = match (key.target, key.naming) {
        (LoraTarget::Unet, ModuleNaming::Flat) => "lora_unet_",
        (LoraTarget::TextEncoder(0), ModuleNaming::Flat) => "lora_te1_",
        (LoraTarget::TextEncoder(_), ModuleNaming::Flat) => "lora_te2_",
        (LoraTarget::Unet, ModuleNaming::Dotted) => "unet.",
        (LoraTarget::TextEncoder(0), ModuleNaming::Dotted) => "text_encoder.",
        (LoraTarget::TextEncoder(_), ModuleNaming::Dotted) => "text_encoder_2.",
    };
    format!("{prefix}{}", key.module)
}
