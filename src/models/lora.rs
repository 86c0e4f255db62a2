//! LoRA files read from their safetensors header alone: which format wrote them, which model
//! (UNet, text encoder 1 or 2) and module each tensor changes, and what kind of adapter it is —
//! so an adapter we cannot merge (DoRA, OFT, (IA)³, a Flux or SD3 LoRA…) is refused by name
//! before any work. The merging itself is numerics and lives in `diffusion::lora`.
//!
//! Names understood (what diffusers' `load_lora_weights`, A1111 and ComfyUI read):
//! - kohya sd-scripts: `lora_unet_<module>` / `lora_te_` / `lora_te1_` / `lora_te2_` +
//!   `<module>` with `.` written `_`, then `.lora_down.weight` (A), `.lora_up.weight` (B),
//!   `.alpha`, optionally `.lora_mid.weight` (a Tucker-decomposed conv); UNet modules in
//!   diffusers' block names (`down_blocks_1_attentions_0_…`) or the original SGM ones
//!   (`input_blocks_4_1_…`, `middle_block_1_…`, `output_blocks_2_1_…`, `in_layers_2`…).
//! - diffusers/peft: `unet.<module>.lora_A.weight` / `.lora_B.weight`, `text_encoder.…`,
//!   `text_encoder_2.…` (scale from the `lora_adapter_metadata` header entry when present), and
//!   the older `.lora.down.weight` / `.lora.up.weight` and attention-processor
//!   (`attn1.processor.to_q_lora.down.weight`) forms.
//!
//! A1111's name for a LoRA is its file stem, and its hash the "addnet" hash kohya's scripts
//! define: SHA-256 of the file after the header (or the `sshs_model_hash` the file carries),
//! shown as its first 12 hex digits in `Lora hashes`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::safetensors_header::SafetensorsHeader;

/// The kind of adapter a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdapterType {
    /// LoRA (`lora_down`/`lora_up`, `lora_A`/`lora_B`): on linear layers, and on convolutions
    /// (LyCORIS' LoCon).
    Lora,
    /// LyCORIS LoHa (`hada_w1_a`…): a Hadamard product of two low-rank products.
    LoHa,
    /// LyCORIS LoKr (`lokr_w1`…): a Kronecker product.
    LoKr,
    /// DoRA (`dora_scale`, peft's `lora_magnitude_vector`): weight-decomposed LoRA.
    Dora,
    /// OFT/BOFT (`oft_blocks`, `oft_diag`, `boft_R`): orthogonal fine-tuning.
    Oft,
    /// (IA)³ (`on_input`): learned rescaling.
    Ia3,
    /// `GLoRA` (`a1`/`a2`/`b1`/`b2`).
    Glora,
    /// A full weight difference (`diff`, `diff_b`).
    Full,
    /// Norm-layer adapters (`w_norm`, `b_norm`).
    Norm,
    /// LoRA with trained biases (peft's `lora_bias`).
    LoraBias,
}

impl AdapterType {
    /// The name in refusals.
    pub fn label(self) -> &'static str {
        match self {
            Self::Lora => "LoRA",
            Self::LoHa => "LoHa (LyCORIS Hadamard-product adapter, hada_w1_a…)",
            Self::LoKr => "LoKr (LyCORIS Kronecker-product adapter, lokr_w1…)",
            Self::Dora => "DoRA (weight-decomposed LoRA, dora_scale / lora_magnitude_vector)",
            Self::Oft => "OFT/BOFT (orthogonal fine-tuning, oft_blocks / boft_R)",
            Self::Ia3 => "(IA)³ (learned rescaling, on_input)",
            Self::Glora => "GLoRA (a1/a2/b1/b2)",
            Self::Full => "a full weight difference (diff / diff_b)",
            Self::Norm => "a norm-layer adapter (w_norm / b_norm)",
            Self::LoraBias => "LoRA with trained biases (lora_B.bias)",
        }
    }
}

/// Which model of the pipeline a LoRA module changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    /// The UNet.
    Unet,
    /// A text encoder by pipeline position (0: `text_encoder` / `lora_te1_`, 1: `text_encoder_2`
    /// / `lora_te2_`).
    TextEncoder(usize),
}

impl LoraTarget {
    /// `UNet`, `text encoder 1`, `text encoder 2`.
    pub fn label(self) -> String {
        match self {
            Self::Unet => "UNet".to_owned(),
            Self::TextEncoder(index) => format!("text encoder {}", index + 1),
        }
    }
}

/// How a module path is written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleNaming {
    /// kohya: `.` written as `_` (`down_blocks_1_attentions_0_proj_in`).
    Flat,
    /// diffusers/peft: the module path as it is.
    Dotted,
}

/// What one tensor of a LoRA module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraPart {
    /// A: `lora_down`, `lora_A`, `lora.down` (rank × in [× kh × kw]).
    Down,
    /// B: `lora_up`, `lora_B`, `lora.up` (out × rank [× 1 × 1]).
    Up,
    /// The Tucker core of a decomposed conv LoRA (`lora_mid`, rank × rank × kh × kw).
    Mid,
    /// `alpha` (a scalar): the scale is alpha / rank.
    Alpha,
    /// `scale` (a scalar), which A1111 uses instead of alpha / rank when present.
    Scale,
    /// A tensor of an adapter type we do not merge.
    Other(AdapterType),
}

/// One tensor name of a LoRA file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoraKey {
    /// The model it changes.
    pub target: LoraTarget,
    /// The module path as written (without the component prefix and the part suffix).
    pub module: String,
    /// How the path is written.
    pub naming: ModuleNaming,
    /// What the tensor is.
    pub part: LoraPart,
}

/// A tensor name that belongs to a LoRA for another architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// What it looks like (`a Flux.1 LoRA`).
    pub looks_like: &'static str,
}

/// Tensor suffixes and what they are, longest first where one ends another.
const SUFFIXES: [(&str, LoraPart); 39] = [
    (".lora_down.weight", LoraPart::Down),
    (".lora_up.weight", LoraPart::Up),
    (".lora_mid.weight", LoraPart::Mid),
    (".lora_A.weight", LoraPart::Down),
    (".lora_B.weight", LoraPart::Up),
    ("_lora.down.weight", LoraPart::Down),
    ("_lora.up.weight", LoraPart::Up),
    (".lora.down.weight", LoraPart::Down),
    (".lora.up.weight", LoraPart::Up),
    (".lora_A.bias", LoraPart::Other(AdapterType::LoraBias)),
    (".lora_B.bias", LoraPart::Other(AdapterType::LoraBias)),
    (".alpha", LoraPart::Alpha),
    (".scale", LoraPart::Scale),
    (".dora_scale", LoraPart::Other(AdapterType::Dora)),
    (".lora_magnitude_vector.weight", LoraPart::Other(AdapterType::Dora)),
    (".lora_magnitude_vector", LoraPart::Other(AdapterType::Dora)),
    (".hada_w1_a", LoraPart::Other(AdapterType::LoHa)),
    (".hada_w1_b", LoraPart::Other(AdapterType::LoHa)),
    (".hada_w2_a", LoraPart::Other(AdapterType::LoHa)),
    (".hada_w2_b", LoraPart::Other(AdapterType::LoHa)),
    (".hada_t1", LoraPart::Other(AdapterType::LoHa)),
    (".hada_t2", LoraPart::Other(AdapterType::LoHa)),
    (".lokr_w1_a", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_w1_b", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_w2_a", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_w2_b", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_w1", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_w2", LoraPart::Other(AdapterType::LoKr)),
    (".lokr_t2", LoraPart::Other(AdapterType::LoKr)),
    (".oft_blocks", LoraPart::Other(AdapterType::Oft)),
    (".oft_diag", LoraPart::Other(AdapterType::Oft)),
    (".oft_r.weight", LoraPart::Other(AdapterType::Oft)),
    (".boft_R", LoraPart::Other(AdapterType::Oft)),
    (".on_input", LoraPart::Other(AdapterType::Ia3)),
    (".a1.weight", LoraPart::Other(AdapterType::Glora)),
    (".b1.weight", LoraPart::Other(AdapterType::Glora)),
    (".diff", LoraPart::Other(AdapterType::Full)),
    (".diff_b", LoraPart::Other(AdapterType::Full)),
    (".w_norm", LoraPart::Other(AdapterType::Norm)),
];

/// Component prefixes: (prefix, target, naming). `None` target: another architecture.
const PREFIXES: [(&str, Option<LoraTarget>, ModuleNaming); 13] = [
    ("lora_unet_", Some(LoraTarget::Unet), ModuleNaming::Flat),
    ("lora_te1_", Some(LoraTarget::TextEncoder(0)), ModuleNaming::Flat),
    ("lora_te2_", Some(LoraTarget::TextEncoder(1)), ModuleNaming::Flat),
    ("lora_te3_", None, ModuleNaming::Flat),
    ("lora_te_", Some(LoraTarget::TextEncoder(0)), ModuleNaming::Flat),
    ("lora_transformer_", None, ModuleNaming::Flat),
    ("unet.", Some(LoraTarget::Unet), ModuleNaming::Dotted),
    ("text_encoder_2.", Some(LoraTarget::TextEncoder(1)), ModuleNaming::Dotted),
    ("text_encoder_3.", None, ModuleNaming::Dotted),
    ("text_encoder.", Some(LoraTarget::TextEncoder(0)), ModuleNaming::Dotted),
    ("transformer.", None, ModuleNaming::Dotted),
    ("diffusion_model.", Some(LoraTarget::Unet), ModuleNaming::Dotted),
    ("base_model.model.", Some(LoraTarget::Unet), ModuleNaming::Dotted),
];

/// Parses one tensor name. `Ok(None)`: not a LoRA tensor (other entries some trainers add);
/// `Err`: a tensor of a LoRA for another architecture.
///
/// # Errors
/// [`ForeignKey`] for SD3/Flux LoRAs.
pub fn parse_key(name: &str) -> Result<Option<LoraKey>, ForeignKey> {
    if name.contains("double_blocks") || name.contains("single_blocks") {
        return Err(ForeignKey { looks_like: "a Flux.1 LoRA (double_blocks/single_blocks)" });
    }
    if name.contains("joint_blocks") || name.contains("transformer_blocks_0_ff_context") {
        return Err(ForeignKey { looks_like: "a Stable Diffusion 3 LoRA (joint_blocks)" });
    }
    let Some((suffix, part)) = SUFFIXES.iter().find(|(suffix, _)| name.ends_with(suffix)) else {
        return Ok(None);
    };
    let stem = &name[..name.len() - suffix.len()];
    let (target, naming, module) = match PREFIXES.iter().find(|(p, ..)| stem.starts_with(p)) {
        Some((prefix, Some(target), naming)) => (*target, *naming, &stem[prefix.len()..]),
        Some((prefix, None, _)) => {
            return Err(ForeignKey {
                looks_like: if prefix.contains("te3") {
                    "a Stable Diffusion 3 LoRA (a third text encoder)"
                } else {
                    "an SD3/Flux transformer LoRA (transformer.*)"
                },
            });
        }
        None if stem.starts_with("lora_") => return Ok(None),
        None => (LoraTarget::Unet, ModuleNaming::Dotted, stem),
    };
    let mut module = module.to_owned();
    if *suffix == "_lora.down.weight" || *suffix == "_lora.up.weight" {
        // diffusers' attention-processor form: `attn1.processor.to_q_lora.down.weight`.
        module = module.replacen(".processor.", ".", 1);
        if module.ends_with(".to_out") {
            module.push_str(".0");
        }
    }
    Ok(Some(LoraKey { target, module, naming, part: *part }))
}

/// A module's path normalised for lookups: text encoders are matched with or without their
/// `text_model.` level (transformers 5 saves `CLIPTextModel` without it).
fn normalise(target: LoraTarget, module: &str, naming: ModuleNaming) -> String {
    let (module, level) = match naming {
        ModuleNaming::Dotted => (module.to_owned(), "text_model."),
        ModuleNaming::Flat => (module.replace('.', "_"), "text_model_"),
    };
    match target {
        LoraTarget::TextEncoder(_) => {
            module.strip_prefix(level).map_or(module.clone(), str::to_owned)
        }
        LoraTarget::Unet => module,
    }
}

/// The modules of one model (its weight tensors' names), found by any name a LoRA may use.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    target: Option<LoraTarget>,
    dotted: HashMap<String, String>,
    flat: HashMap<String, String>,
}

impl ModuleIndex {
    /// The modules of `target` whose weights have these names (the names the model asks for;
    /// only `<module>.weight` entries count). The UNet is also found by its original SGM names.
    pub fn new<'a>(target: LoraTarget, weight_names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = Self { target: Some(target), ..Self::default() };
        let modules: BTreeSet<&str> =
            weight_names.into_iter().filter_map(|name| name.strip_suffix(".weight")).collect();
        let mut add = |alias: &str, module: &str| {
            let weight = format!("{module}.weight");
            index
                .dotted
                .entry(normalise(target, alias, ModuleNaming::Dotted))
                .or_insert_with(|| weight.clone());
            index.flat.entry(normalise(target, alias, ModuleNaming::Flat)).or_insert(weight);
        };
        for module in &modules {
            add(module, module);
        }
        if target == LoraTarget::Unet {
            for (sgm, module) in sgm_unet_names(&modules) {
                add(&sgm, &module);
            }
        }
        index
    }

    /// The weight name of the module `key` changes, if this model has it.
    pub fn find(&self, key: &LoraKey) -> Option<&str> {
        if self.target != Some(key.target) {
            return None;
        }
        let normalised = normalise(key.target, &key.module, key.naming);
        match key.naming {
            ModuleNaming::Dotted => self.dotted.get(&normalised),
            ModuleNaming::Flat => self.flat.get(&normalised),
        }
        .map(String::as_str)
    }

    /// How many modules are indexed (aliases not counted twice).
    pub fn is_empty(&self) -> bool {
        self.dotted.is_empty()
    }
}

/// Original (SGM/LDM) module paths of a diffusers UNet's modules, as `unet_names` in
/// `diffusion::single_file` maps them the other way: block positions counted from the modules
/// present (resnets per level, downsamplers, upsamplers after attention or not).
pub fn sgm_unet_names(modules: &BTreeSet<&str>) -> BTreeMap<String, String> {
    let mut down: BTreeMap<usize, Level> = BTreeMap::new();
    let mut up: BTreeMap<usize, Level> = BTreeMap::new();
    let index_after = |rest: &str, what: &str| -> Option<usize> {
        rest.strip_prefix(what)?.split('.').next()?.parse().ok()
    };
    for module in modules {
        for (prefix, levels) in [("down_blocks.", &mut down), ("up_blocks.", &mut up)] {
            let Some(rest) = module.strip_prefix(prefix) else { continue };
            let Some((level, tail)) = rest.split_once('.') else { continue };
            let Ok(level) = level.parse::<usize>() else { continue };
            let entry = levels.entry(level).or_default();
            if let Some(j) = index_after(tail, "resnets.") {
                entry.resnets = entry.resnets.max(j + 1);
            }
            entry.attentions |= tail.starts_with("attentions.");
            entry.sampler |= tail.starts_with("downsamplers.") || tail.starts_with("upsamplers.");
        }
    }
    let last_level = |levels: &BTreeMap<usize, Level>| levels.keys().max().map_or(0, |l| l + 1);
    // First input block of each down level, first output block of each up level.
    let mut input_start = vec![1usize; last_level(&down)];
    for level in 1..input_start.len() {
        let before = down.get(&(level - 1)).copied().unwrap_or_default();
        input_start[level] = input_start[level - 1] + before.resnets + usize::from(before.sampler);
    }
    let mut output_start = vec![0usize; last_level(&up)];
    for level in 1..output_start.len() {
        output_start[level] =
            output_start[level - 1] + up.get(&(level - 1)).map_or(0, |l| l.resnets);
    }
    let resnet_part = |part: &str| -> String {
        for (diffusers, original) in [
            ("norm1", "in_layers.0"),
            ("conv1", "in_layers.2"),
            ("norm2", "out_layers.0"),
            ("conv2", "out_layers.3"),
            ("time_emb_proj", "emb_layers.1"),
            ("conv_shortcut", "skip_connection"),
        ] {
            if let Some(tail) = part.strip_prefix(diffusers)
                && (tail.is_empty() || tail.starts_with('.'))
            {
                return format!("{original}{tail}");
            }
        }
        part.to_owned()
    };
    let mut names = BTreeMap::new();
    for module in modules {
        let fixed = [
            ("conv_in", "input_blocks.0.0"),
            ("time_embedding.linear_1", "time_embed.0"),
            ("time_embedding.linear_2", "time_embed.2"),
            ("add_embedding.linear_1", "label_emb.0.0"),
            ("add_embedding.linear_2", "label_emb.0.2"),
            ("conv_norm_out", "out.0"),
            ("conv_out", "out.2"),
        ];
        let sgm = if let Some((_, original)) = fixed.iter().find(|(d, _)| d == module) {
            Some((*original).to_owned())
        } else if let Some(rest) = module.strip_prefix("down_blocks.") {
            down_sgm(rest, &input_start, &down).map(|(block, tail)| match tail {
                Tail::Resnet(part) => format!("input_blocks.{block}.0.{}", resnet_part(&part)),
                Tail::Attention(rest) => format!("input_blocks.{block}.1.{rest}"),
                Tail::Sampler => format!("input_blocks.{block}.0.op"),
            })
        } else if let Some(rest) = module.strip_prefix("mid_block.") {
            if let Some(rest) = rest.strip_prefix("attentions.0.") {
                Some(format!("middle_block.1.{rest}"))
            } else {
                rest.strip_prefix("resnets.").and_then(|rest| {
                    let (k, part) = rest.split_once('.')?;
                    let k: usize = k.parse().ok()?;
                    Some(format!("middle_block.{}.{}", 2 * k, resnet_part(part)))
                })
            }
        } else if let Some(rest) = module.strip_prefix("up_blocks.") {
            up_sgm(rest, &output_start, &up).map(|(block, tail)| match tail {
                Tail::Resnet(part) => format!("output_blocks.{block}.0.{}", resnet_part(&part)),
                Tail::Attention(rest) => format!("output_blocks.{block}.1.{rest}"),
                Tail::Sampler => {
                    let level: usize =
                        rest.split('.').next().and_then(|l| l.parse().ok()).unwrap_or(0);
                    let slot = if up.get(&level).is_some_and(|l| l.attentions) { 2 } else { 1 };
                    format!("output_blocks.{block}.{slot}.conv")
                }
            })
        } else {
            None
        };
        if let Some(sgm) = sgm {
            names.insert(sgm, (*module).to_owned());
        }
    }
    names
}

/// One level of a UNet's down or up blocks, as its modules show it.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    resnets: usize,
    attentions: bool,
    sampler: bool,
}

/// What follows a block position.
enum Tail {
    Resnet(String),
    Attention(String),
    Sampler,
}

/// `L.resnets.j.part` / `L.attentions.j.rest` / `L.downsamplers.0.conv` → (input block, tail).
fn down_sgm(
    rest: &str,
    input_start: &[usize],
    levels: &BTreeMap<usize, Level>,
) -> Option<(usize, Tail)> {
    let (level, tail) = rest.split_once('.')?;
    let level: usize = level.parse().ok()?;
    let start = *input_start.get(level)?;
    if tail == "downsamplers.0.conv" {
        return Some((start + levels.get(&level).map_or(0, |l| l.resnets), Tail::Sampler));
    }
    let (kind, rest) = tail.split_once('.')?;
    let (j, part) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    match kind {
        "resnets" => Some((start + j, Tail::Resnet(part.to_owned()))),
        "attentions" => Some((start + j, Tail::Attention(part.to_owned()))),
        _ => None,
    }
}

/// The same for `up_blocks` (the upsampler sits in the level's last output block).
fn up_sgm(
    rest: &str,
    output_start: &[usize],
    levels: &BTreeMap<usize, Level>,
) -> Option<(usize, Tail)> {
    let (level, tail) = rest.split_once('.')?;
    let level: usize = level.parse().ok()?;
    let start = *output_start.get(level)?;
    if tail == "upsamplers.0.conv" {
        let resnets = levels.get(&level).map_or(0, |l| l.resnets);
        return Some((start + resnets.checked_sub(1)?, Tail::Sampler));
    }
    let (kind, rest) = tail.split_once('.')?;
    let (j, part) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    match kind {
        "resnets" => Some((start + j, Tail::Resnet(part.to_owned()))),
        "attentions" => Some((start + j, Tail::Attention(part.to_owned()))),
        _ => None,
    }
}

/// What a LoRA file holds, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraSummary {
    /// Modules per model.
    pub modules: BTreeMap<LoraTarget, usize>,
    /// Modules whose adapter is a convolution (LoCon).
    pub conv_modules: usize,
    /// Tensor names that are not LoRA tensors (ignored).
    pub ignored: Vec<String>,
}

/// Reads what a LoRA file holds, refusing what cannot be merged: another adapter type
/// (named), a LoRA for another architecture, a file with no LoRA tensors, a module with a
/// down matrix and no up matrix.
///
/// # Errors
/// [`ModelError::UnsupportedLora`] naming the file and why.
pub fn inspect_lora(header: &SafetensorsHeader) -> Result<LoraSummary, ModelError> {
    let refuse = |what: String| ModelError::UnsupportedLora { what, path: header.path.clone() };
    let mut modules: BTreeMap<(LoraTarget, ModuleNaming, String), BTreeSet<LoraPart>> =
        BTreeMap::new();
    let mut ignored = Vec::new();
    let mut other: BTreeSet<AdapterType> = BTreeSet::new();
    for name in header.tensors.keys() {
        match parse_key(name) {
            Err(foreign) => {
                return Err(refuse(format!(
                    "this looks like {} (tensor {name}), not an SDXL/SD LoRA",
                    foreign.looks_like
                )));
            }
            Ok(None) => ignored.push(name.clone()),
            Ok(Some(key)) => {
                if let LoraPart::Other(kind) = key.part {
                    other.insert(kind);
                }
                modules.entry((key.target, key.naming, key.module)).or_default().insert(key.part);
            }
        }
    }
    if header
        .metadata
        .get("lora_adapter_metadata")
        .is_some_and(|m| m.contains("\"use_dora\": true"))
        || header
            .metadata
            .get("lora_adapter_metadata")
            .is_some_and(|m| m.contains("\"use_dora\":true"))
    {
        other.insert(AdapterType::Dora);
    }
    if let Some(kind) = other.iter().next() {
        return Err(refuse(format!(
            "this adapter is {}, which is not supported (LoRA and LoCon are: lora_down/lora_up, \
             lora_A/lora_B)",
            kind.label()
        )));
    }
    let mut summary = LoraSummary { modules: BTreeMap::new(), conv_modules: 0, ignored };
    for ((target, _, module), parts) in &modules {
        let down = parts.contains(&LoraPart::Down);
        let up = parts.contains(&LoraPart::Up);
        if down != up {
            return Err(refuse(format!(
                "module {module} of the {} has a {} matrix without its {}",
                target.label(),
                if down { "down (A)" } else { "up (B)" },
                if down { "up (B)" } else { "down (A)" },
            )));
        }
        if !down {
            continue; // an alpha alone, left from a pruned module
        }
        *summary.modules.entry(*target).or_default() += 1;
    }
    summary.conv_modules = header
        .tensors
        .iter()
        .filter(|(name, entry)| {
            entry.shape.len() == 4
                && entry.shape[2..].iter().any(|&d| d > 1)
                && parse_key(name).ok().flatten().is_some_and(|k| k.part == LoraPart::Down)
        })
        .count();
    if summary.modules.is_empty() {
        return Err(refuse(
            "no LoRA tensors (lora_down/lora_up, lora_A/lora_B) in this file".into(),
        ));
    }
    Ok(summary)
}

/// A1111's name for a LoRA file: its file stem (`pixel-art-xl`).
pub fn lora_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// A1111's full hash of a LoRA: the `sshs_model_hash` the file carries (kohya's scripts write
/// it), else SHA-256 of everything after the header (the "addnet" hash), in lowercase hex.
///
/// # Errors
/// Unreadable or too short files.
pub fn a1111_hash(path: &Path, header: &SafetensorsHeader) -> Result<String, ModelError> {
    if let Some(hash) = header.metadata.get("sshs_model_hash")
        && !hash.is_empty()
    {
        return Ok(hash.to_lowercase());
    }
    let mut file = fs_err::File::open(path)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)?;
    let skip = u64::from_le_bytes(length);
    std::io::copy(&mut (&mut file).take(skip), &mut std::io::sink())?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The `Lora hashes` form of a hash: its first 12 hex digits.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> LoraKey {
        parse_key(name).expect("not foreign").expect("a LoRA tensor")
    }

    #[test]
    fn every_naming_parses_to_its_model_and_module() {
        let kohya =
            key("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight");
        assert_eq!(kohya.target, LoraTarget::Unet);
        assert_eq!(kohya.naming, ModuleNaming::Flat);
        assert_eq!(kohya.module, "input_blocks_4_1_transformer_blocks_0_attn1_to_q");
        assert_eq!(kohya.part, LoraPart::Down);
        let te2 = key("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha");
        assert_eq!((te2.target, te2.part), (LoraTarget::TextEncoder(1), LoraPart::Alpha));
        let sd1 = key("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight");
        assert_eq!(sd1.target, LoraTarget::TextEncoder(0));
        let peft = key("text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj.lora_B.weight");
        assert_eq!(peft.target, LoraTarget::TextEncoder(1));
        assert_eq!(peft.module, "text_model.encoder.layers.1.self_attn.k_proj");
        assert_eq!(peft.part, LoraPart::Up);
        let old = key("unet.mid_block.attentions.0.proj_in.lora.down.weight");
        assert_eq!(old.module, "mid_block.attentions.0.proj_in");
        let processor = key(
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight",
        );
        assert_eq!(
            processor.module,
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0"
        );
        assert_eq!(processor.part, LoraPart::Up);
        let bare = key("down_blocks.0.resnets.0.conv1.lora_A.weight");
        assert_eq!(
            (bare.target, bare.module.as_str()),
            (LoraTarget::Unet, "down_blocks.0.resnets.0.conv1")
        );
        assert_eq!(
            parse_key("lora_unet_x.hada_w1_a").expect("ok").map(|k| k.part),
            Some(LoraPart::Other(AdapterType::LoHa))
        );
        assert!(parse_key("lora_unet_double_blocks_0_img_attn_proj.lora_down.weight").is_err());
        assert!(
            parse_key("transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight").is_err()
        );
        assert_eq!(parse_key("some_training_note"), Ok(None));
    }

    #[test]
    fn text_encoders_match_with_or_without_the_text_model_level() {
        let names =
            ["encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.self_attn.q_proj.bias"];
        let index = ModuleIndex::new(LoraTarget::TextEncoder(0), names);
        for name in [
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
            "text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.weight",
        ] {
            assert_eq!(
                index.find(&key(name)),
                Some("encoder.layers.0.self_attn.q_proj.weight"),
                "{name}"
            );
        }
        let other = key("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight");
        assert_eq!(index.find(&other), None, "text encoder 2 is another index");
    }

    #[test]
    fn sgm_names_follow_the_sdxl_layout() {
        // SDXL: 3 levels, 2 resnets each (3 going up), attention in levels 1-2 (up: 0-1).
        let mut modules = vec!["conv_in".to_owned(), "time_embedding.linear_1".to_owned()];
        for level in 0..3 {
            for j in 0..2 {
                modules.push(format!("down_blocks.{level}.resnets.{j}.conv1"));
                if level > 0 {
                    modules.push(format!("down_blocks.{level}.attentions.{j}.proj_in"));
                }
            }
            if level < 2 {
                modules.push(format!("down_blocks.{level}.downsamplers.0.conv"));
            }
            for j in 0..3 {
                modules.push(format!("up_blocks.{level}.resnets.{j}.conv_shortcut"));
                if level < 2 {
                    modules.push(format!("up_blocks.{level}.attentions.{j}.proj_out"));
                }
            }
            if level < 2 {
                modules.push(format!("up_blocks.{level}.upsamplers.0.conv"));
            }
        }
        modules.push("mid_block.resnets.1.time_emb_proj".to_owned());
        modules.push("mid_block.attentions.0.transformer_blocks.0.attn1.to_q".to_owned());
        let set: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
        let sgm = sgm_unet_names(&set);
        let expect = |original: &str, diffusers: &str| {
            assert_eq!(sgm.get(original).map(String::as_str), Some(diffusers), "{original}");
        };
        expect("input_blocks.0.0", "conv_in");
        expect("time_embed.0", "time_embedding.linear_1");
        expect("input_blocks.1.0.in_layers.2", "down_blocks.0.resnets.0.conv1");
        expect("input_blocks.3.0.op", "down_blocks.0.downsamplers.0.conv");
        expect("input_blocks.4.1.proj_in", "down_blocks.1.attentions.0.proj_in");
        expect("input_blocks.8.1.proj_in", "down_blocks.2.attentions.1.proj_in");
        expect("middle_block.2.emb_layers.1", "mid_block.resnets.1.time_emb_proj");
        expect(
            "middle_block.1.transformer_blocks.0.attn1.to_q",
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q",
        );
        expect("output_blocks.0.0.skip_connection", "up_blocks.0.resnets.0.conv_shortcut");
        expect("output_blocks.2.2.conv", "up_blocks.0.upsamplers.0.conv");
        expect("output_blocks.5.1.proj_out", "up_blocks.1.attentions.2.proj_out");
        expect("output_blocks.5.2.conv", "up_blocks.1.upsamplers.0.conv");
        expect("output_blocks.8.0.skip_connection", "up_blocks.2.resnets.2.conv_shortcut");
    }

    #[test]
    fn addnet_hash_skips_the_header_and_metadata_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.safetensors");
        let header = br#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"abc");
        fs_err::write(&path, &bytes).expect("write");
        let parsed = super::super::safetensors_header::read_header(&path).expect("header");
        let hash = a1111_hash(&path, &parsed).expect("hash");
        // sha256("abc")
        assert_eq!(hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(short_hash(&hash), "ba7816bf8f01");
        let mut tagged = parsed.clone();
        tagged.metadata.insert("sshs_model_hash".into(), "ABCDEF0123456789".into());
        assert_eq!(a1111_hash(&path, &tagged).expect("hash"), "abcdef0123456789");
    }
}
