//! ComfyUI's `prompt` chunk (the API-format graph it ran), read into a [`Recovered`] request.
//!
//! The graph is `{"<node id>": {"class_type": "KSampler", "inputs": {…}}, …}`, where an input is
//! a literal or a link `["<node id>", <output index>]`. From the image output (`SaveImage`) the
//! reader walks back to the nearest sampler (KSampler, KSamplerAdvanced, SamplerCustom,
//! SamplerCustomAdvanced), then from the sampler to its prompts (through text encoders,
//! conditioning combiners and string/primitive nodes), its latent (size, or an encoded image for
//! img2img) and its checkpoint (through LoRA loaders).
//!
//! Every walk keeps a visited set and a depth limit, so cyclic or enormous graphs cost at most
//! linear work and never recurse without bound.

use std::collections::{HashSet, VecDeque};

use serde_json::{Map, Value};

use super::foreign_samplers;
use super::recover::{Recovered, Source};
use super::values::{as_f32, as_text, as_u32, as_u64};
use crate::vocab::LoraSpec;

/// Keyword of ComfyUI's API-format graph chunk.
pub const PROMPT_KEY: &str = "prompt";

/// Deepest chain of links followed from one input.
const MAX_DEPTH: usize = 64;
/// Longest prompt assembled from string nodes.
const MAX_TEXT_CHARS: usize = 1 << 20;

const SAMPLER_CLASSES: [&str; 4] =
    ["KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"];

type Graph = Map<String, Value>;

/// One node of the graph.
#[derive(Clone, Copy)]
struct Node<'a> {
    id: &'a str,
    class: &'a str,
    inputs: &'a Map<String, Value>,
}

impl<'a> Node<'a> {
    fn input(&self, name: &str) -> Option<&'a Value> {
        self.inputs.get(name)
    }
}

fn node<'a>(graph: &'a Graph, id: &str) -> Option<Node<'a>> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let (id, body) = graph.get_key_value(id)?;
    let body = body.as_object()?;
    let class = body.get("class_type")?.as_str()?;
    let inputs = match body.get("inputs") {
        Some(Value::Object(inputs)) => inputs,
        _ => EMPTY.get_or_init(Map::new),
    };
    Some(Node { id, class, inputs })
}

/// The node id of a link input (`["4", 0]`; some writers use numbers for ids).
fn link_target(value: &Value) -> Option<String> {
    let [id, slot] = value.as_array()?.as_slice() else { return None };
    if !slot.is_u64() {
        return None;
    }
    match id {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

fn linked<'a>(graph: &'a Graph, value: Option<&Value>) -> Option<Node<'a>> {
    node(graph, &link_target(value?)?)
}

/// Reads the `prompt` graph.
///
/// # Errors
/// Not JSON, not a graph, or no sampler that produced an image.
pub fn recover_from_prompt(json: &str) -> Result<Recovered, String> {
    let value: Value = serde_json::from_str(json).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(graph) = value else {
        return Err("not a JSON object of nodes".to_owned());
    };
    if !graph.values().any(|n| n.get("class_type").is_some()) {
        return Err("no nodes with a class_type".to_owned());
    }
    let mut found = Recovered::new(Source::Comfyui);
    let sampler = find_final_sampler(&graph, &mut found)?;
    read_sampler(&graph, sampler, &mut found);
    Ok(found)
}

/// The sampler whose result reaches the image output: the nearest one walking back from the
/// first `SaveImage` (else `PreviewImage`, else any node that saves images).
fn find_final_sampler<'a>(graph: &'a Graph, found: &mut Recovered) -> Result<Node<'a>, String> {
    let mut ids: Vec<&String> = graph.keys().collect();
    // Numeric ids in numeric order: "9" before "10".
    ids.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.as_str()));
    let nodes: Vec<Node<'a>> = ids.iter().filter_map(|id| node(graph, id)).collect();
    let outputs: Vec<Node<'a>> = ["SaveImage", "PreviewImage"]
        .iter()
        .map(|class| nodes.iter().filter(|n| n.class == *class).copied().collect::<Vec<_>>())
        .find(|list| !list.is_empty())
        .unwrap_or_else(|| {
            nodes
                .iter()
                .filter(|n| n.class.contains("Save") && n.inputs.contains_key("images"))
                .copied()
                .collect()
        });
    let samplers: Vec<Node<'a>> =
        nodes.iter().filter(|n| SAMPLER_CLASSES.contains(&n.class)).copied().collect();
    if samplers.is_empty() {
        let unknown: Vec<&str> =
            nodes.iter().filter(|n| n.class.contains("Sampler")).map(|n| n.class).collect();
        return Err(if unknown.is_empty() {
            "no sampler node (KSampler, KSamplerAdvanced, SamplerCustom…) in the graph".to_owned()
        } else {
            format!("sampler nodes of unsupported kinds: {}", unknown.join(", "))
        });
    }
    if outputs.len() > 1 {
        found.warn(format!(
            "{} image outputs; settings of the one saved by node {} ({})",
            outputs.len(),
            outputs[0].id,
            outputs[0].class
        ));
    }
    if let Some(output) = outputs.first()
        && let Some(sampler) =
            nearest_upstream(graph, *output, |n| SAMPLER_CLASSES.contains(&n.class))
    {
        if samplers.len() > 1 {
            found.warn(format!(
                "{} samplers in the graph; settings of node {} ({}), the one whose result is \
                 saved",
                samplers.len(),
                sampler.id,
                sampler.class
            ));
        }
        return Ok(sampler);
    }
    if outputs.is_empty() {
        found.warn("no SaveImage node; settings of the last sampler in the graph");
    } else {
        found.warn("the saved image is not connected to a sampler; settings of the last sampler");
    }
    // The last sampler that no other sampler consumes.
    let consumed: HashSet<&str> = samplers
        .iter()
        .flat_map(|s| s.inputs.values().filter_map(link_target))
        .filter_map(|id| graph.get_key_value(&id).map(|(k, _)| k.as_str()))
        .collect();
    samplers
        .iter()
        .rev()
        .find(|s| !consumed.contains(s.id))
        .or(samplers.last())
        .copied()
        .ok_or_else(|| "no sampler".to_owned())
}

/// Breadth-first walk over every link input, nearest first; each node once.
fn nearest_upstream<'a>(
    graph: &'a Graph,
    start: Node<'a>,
    wanted: impl Fn(&Node<'a>) -> bool,
) -> Option<Node<'a>> {
    let mut seen: HashSet<&str> = HashSet::from([start.id]);
    let mut queue = VecDeque::from([start]);
    while let Some(current) = queue.pop_front() {
        for value in current.inputs.values() {
            let Some(next) = linked(graph, Some(value)) else { continue };
            if !seen.insert(next.id) {
                continue;
            }
            if wanted(&next) {
                return Some(next);
            }
            queue.push_back(next);
        }
    }
    None
}

/// The inputs of the four sampler kinds, in one shape.
struct SamplerInputs<'a> {
    seed: Option<&'a Value>,
    steps: Option<&'a Value>,
    cfg: Option<&'a Value>,
    sampler_name: Option<&'a Value>,
    scheduler: Option<&'a Value>,
    denoise: Option<&'a Value>,
    positive: Option<&'a Value>,
    negative: Option<&'a Value>,
    latent: Option<&'a Value>,
    model: Option<&'a Value>,
    /// Set when the node kind implies the schedule (KarrasScheduler).
    scheduler_implied: Option<&'static str>,
    /// Set when the node kind implies the CFG scale (BasicGuider: no guidance).
    cfg_implied: Option<f32>,
}

fn sampler_inputs<'a>(
    graph: &'a Graph,
    sampler: Node<'a>,
    found: &mut Recovered,
) -> SamplerInputs<'a> {
    let get = |name: &str| sampler.input(name);
    let mut inputs = SamplerInputs {
        steps: get("steps"),
        cfg: get("cfg"),
        sampler_name: get("sampler_name"),
        scheduler: get("scheduler"),
        denoise: get("denoise"),
        positive: get("positive"),
        negative: get("negative"),
        latent: get("latent_image"),
        model: get("model"),
        seed: get("seed").or_else(|| get("noise_seed")),
        scheduler_implied: None,
        cfg_implied: None,
    };
    match sampler.class {
        "KSamplerAdvanced" => {
            let start = get("start_at_step").and_then(|v| resolve_number(graph, v));
            let end = get("end_at_step").and_then(|v| resolve_number(graph, v));
            let steps = inputs.steps.and_then(|v| resolve_number(graph, v));
            if start.is_some_and(|s| s > 0.0) || matches!((end, steps), (Some(e), Some(s)) if e < s)
            {
                found.warn(format!(
                    "KSamplerAdvanced runs only steps {} to {} of the schedule; a re-run here runs \
                     them all",
                    start.unwrap_or(0.0),
                    end.unwrap_or(f64::INFINITY)
                ));
            }
        }
        "SamplerCustom" | "SamplerCustomAdvanced" => {
            if let Some(select) = linked(graph, get("sampler")) {
                inputs.sampler_name = select.input("sampler_name");
            }
            if let Some(sigmas) = linked(graph, get("sigmas")) {
                inputs.steps = sigmas.input("steps");
                inputs.denoise = sigmas.input("denoise");
                inputs.scheduler = sigmas.input("scheduler");
                if sigmas.class == "KarrasScheduler" {
                    inputs.scheduler_implied = Some("karras");
                }
                if inputs.model.is_none() {
                    inputs.model = sigmas.input("model");
                }
            }
            if let Some(noise) = linked(graph, get("noise")) {
                inputs.seed = noise.input("noise_seed");
            }
            if let Some(guider) = linked(graph, get("guider")) {
                inputs.cfg = guider.input("cfg");
                inputs.positive = guider.input("positive").or_else(|| guider.input("conditioning"));
                inputs.negative = guider.input("negative");
                inputs.model = guider.input("model").or(inputs.model);
                if guider.class == "BasicGuider" {
                    inputs.cfg_implied = Some(1.0);
                }
            }
        }
        _ => {}
    }
    inputs
}

fn read_sampler(graph: &Graph, sampler: Node<'_>, found: &mut Recovered) {
    let inputs = sampler_inputs(graph, sampler, found);
    found.seed = inputs.seed.and_then(|v| resolve(graph, v)).and_then(as_u64);
    found.steps = inputs.steps.and_then(|v| resolve(graph, v)).and_then(as_u32);
    found.cfg =
        inputs.cfg_implied.or_else(|| inputs.cfg.and_then(|v| resolve(graph, v)).and_then(as_f32));
    let sampler_name =
        inputs.sampler_name.and_then(|v| resolve(graph, v)).and_then(as_text).unwrap_or_default();
    let scheduler = match inputs.scheduler_implied {
        Some(implied) => implied.to_owned(),
        None => {
            inputs.scheduler.and_then(|v| resolve(graph, v)).and_then(as_text).unwrap_or_default()
        }
    };
    if sampler_name.is_empty() {
        found.warn(format!("sampler node {} names no sampler", sampler.id));
    } else {
        let matched = foreign_samplers::from_comfy(&sampler_name, &scheduler);
        found.sampler = matched.kind;
        if let Some(warning) = matched.warning {
            found.warn(warning);
        }
    }
    found.sampler_name = sampler_name;
    found.scheduler = scheduler;
    for (role, value) in [("positive", inputs.positive), ("negative", inputs.negative)] {
        let mut walk = TextWalk { graph, seen: HashSet::new(), notes: Vec::new() };
        let text = value.and_then(|v| walk.conditioning_text(v, role, 0));
        match (role, text) {
            ("positive", Some(text)) => found.prompt = text,
            ("negative", Some(text)) => found.negative = text,
            (_, None) if value.is_some() => {
                found.warn(format!("the {role} prompt could not be traced to a text encoder"));
            }
            _ => {}
        }
        for note in walk.notes {
            found.warn(note);
        }
    }
    let denoise = inputs.denoise.and_then(|v| resolve(graph, v)).and_then(as_f32);
    read_latent(graph, inputs.latent, denoise, found);
    read_model(graph, inputs.model, found);
    found.extra.insert("sampler node".to_owned(), format!("{} ({})", sampler.id, sampler.class));
}

/// Follows the latent input back to its origin: an empty latent (txt2img size), an encoded image
/// (img2img, strength = denoise), or an earlier sampler (a multi-pass workflow).
fn read_latent(graph: &Graph, latent: Option<&Value>, denoise: Option<f32>, found: &mut Recovered) {
    let mut current = linked(graph, latent);
    let mut seen = HashSet::new();
    let mut earlier_pass = None;
    let mut upscaled = false;
    while let Some(step) = current {
        if !seen.insert(step.id) || seen.len() > MAX_DEPTH {
            found.warn("the latent input loops or is too deep; size unknown");
            return;
        }
        if step.class.contains("EmptyLatent")
            || step.class.starts_with("Empty") && step.inputs.contains_key("width")
        {
            found.width = step.input("width").and_then(|v| resolve(graph, v)).and_then(as_u32);
            found.height = step.input("height").and_then(|v| resolve(graph, v)).and_then(as_u32);
            let batch = step.input("batch_size").and_then(|v| resolve(graph, v)).and_then(as_u32);
            if batch.is_some_and(|b| b > 1) {
                found.warn(
                    "ComfyUI drew the whole batch's noise from one seed; only its first image is \
                     reproduced with that seed",
                );
            }
            if let Some(pass) = earlier_pass {
                found.warn(format!(
                    "multi-pass workflow: the earlier sampler (node {pass}) is not reproduced; this \
                     runs the final pass from noise at the first pass's size"
                ));
            } else if denoise.is_some_and(|d| d < 1.0) {
                found.warn("denoise below 1 on an empty latent; a re-run uses full denoising");
            }
            if upscaled {
                found.warn("the latent is upscaled between passes; not reproduced");
            }
            return;
        }
        if step.class.starts_with("VAEEncode") {
            if earlier_pass.is_none() {
                found.strength = denoise.or(Some(1.0));
                found
                    .warn("img2img: the source image is not stored in the metadata; give it again");
            } else {
                found.warn("multi-pass img2img workflow; only the final pass is recovered");
            }
            return;
        }
        if SAMPLER_CLASSES.contains(&step.class) {
            earlier_pass.get_or_insert_with(|| step.id.to_owned());
            current = linked(graph, step.input("latent_image"));
            continue;
        }
        if step.class.contains("Upscale") {
            upscaled = true;
        }
        current = ["samples", "latent", "latent_image", "latents", "samples1", "source"]
            .iter()
            .find_map(|name| linked(graph, step.input(name)));
    }
    found.warn("the latent's origin is not an empty latent or an encoded image; size unknown");
}

/// Follows the model input back to a checkpoint loader, collecting LoRA loaders on the way.
fn read_model(graph: &Graph, model: Option<&Value>, found: &mut Recovered) {
    let mut current = linked(graph, model);
    let mut seen = HashSet::new();
    while let Some(step) = current {
        if !seen.insert(step.id) || seen.len() > MAX_DEPTH {
            break;
        }
        for key in ["ckpt_name", "unet_name", "model_name"] {
            if let Some(name) = step.input(key).and_then(|v| resolve(graph, v)).and_then(as_text) {
                found.model = name;
                return;
            }
        }
        if let Some(lora) =
            step.input("lora_name").and_then(|v| resolve(graph, v)).and_then(as_text)
        {
            let weight = step
                .input("strength_model")
                .and_then(|v| resolve(graph, v))
                .and_then(as_f32)
                .unwrap_or(1.0);
            // Nearest loader first; the checkpoint side applies them in the reverse order.
            found.loras.insert(0, LoraSpec { source: lora, weight });
        }
        current = linked(graph, step.input("model"));
    }
    found.warn("the model input does not lead to a checkpoint loader; model unknown");
}

/// A literal, or the value a primitive-like node feeds through a link.
fn resolve<'a>(graph: &'a Graph, value: &'a Value) -> Option<&'a Value> {
    let mut current = value;
    for _ in 0..MAX_DEPTH {
        let Some(source) = linked(graph, Some(current)) else {
            return (!current.is_array() && !current.is_null()).then_some(current);
        };
        current =
            ["value", "seed", "noise_seed", "int", "float", "number", "text", "string", "String"]
                .iter()
                .find_map(|name| source.input(name))
                .or_else(|| {
                    (source.inputs.len() == 1).then(|| source.inputs.values().next()).flatten()
                })?;
    }
    None
}

fn resolve_number(graph: &Graph, value: &Value) -> Option<f64> {
    resolve(graph, value).and_then(|v| as_f32(v).map(f64::from))
}

/// Walks conditioning back to prompt text; each node is read once per prompt.
struct TextWalk<'a> {
    graph: &'a Graph,
    seen: HashSet<&'a str>,
    notes: Vec<String>,
}

impl<'a> TextWalk<'a> {
    fn conditioning_text(&mut self, value: &'a Value, role: &str, depth: usize) -> Option<String> {
        let node = linked(self.graph, Some(value))?;
        if depth > MAX_DEPTH || !self.seen.insert(node.id) {
            return None;
        }
        match node.class {
            "CLIPTextEncode" | "CLIPTextEncodeSDXLRefiner" => {
                self.text(node.input("text")?, depth + 1)
            }
            "CLIPTextEncodeSDXL" => {
                let text_g = node.input("text_g").and_then(|v| self.text(v, depth + 1));
                let text_l = node.input("text_l").and_then(|v| self.text(v, depth + 1));
                if let (Some(g), Some(l)) = (&text_g, &text_l)
                    && g != l
                    && !l.is_empty()
                {
                    self.notes.push(format!(
                        "the {role} prompt has different text_g and text_l; this lab encodes \
                         text_g with both encoders"
                    ));
                }
                text_g.or(text_l)
            }
            "ConditioningZeroOut" => Some(String::new()),
            "ConditioningCombine" | "ConditioningConcat" | "ConditioningAverage" => {
                let parts: Vec<String> =
                    ["conditioning_1", "conditioning_2", "conditioning_to", "conditioning_from"]
                        .iter()
                        .filter_map(|name| node.input(name))
                        .filter_map(|v| self.conditioning_text(v, role, depth + 1))
                        .filter(|t| !t.is_empty())
                        .collect();
                if parts.len() > 1 {
                    self.notes.push(format!(
                        "the {role} prompt combines several encodings ({}); joined with \", \" \
                         into one prompt here",
                        node.class
                    ));
                }
                (!parts.is_empty()).then(|| parts.join(", ").chars().take(MAX_TEXT_CHARS).collect())
            }
            _ => {
                // Pass-through nodes (ControlNet apply, area, timestep range…).
                let next =
                    node.input("conditioning").or_else(|| node.input(role)).or_else(|| {
                        node.inputs
                            .iter()
                            .find(|(name, v)| {
                                name.contains("conditioning") && link_target(v).is_some()
                            })
                            .map(|(_, v)| v)
                    })?;
                self.conditioning_text(next, role, depth + 1)
            }
        }
    }

    /// Text from a literal or from string / primitive nodes.
    fn text(&mut self, value: &'a Value, depth: usize) -> Option<String> {
        if let Some(text) = value.as_str() {
            return Some(text.chars().take(MAX_TEXT_CHARS).collect());
        }
        let node = linked(self.graph, Some(value))?;
        if depth > MAX_DEPTH || !self.seen.insert(node.id) {
            return None;
        }
        if let (Some(a), Some(b)) = (node.input("string_a"), node.input("string_b")) {
            let delimiter =
                node.input("delimiter").and_then(Value::as_str).unwrap_or_default().to_owned();
            let a = self.text(a, depth + 1).unwrap_or_default();
            let b = self.text(b, depth + 1).unwrap_or_default();
            let joined = format!("{a}{delimiter}{b}");
            return Some(joined.chars().take(MAX_TEXT_CHARS).collect());
        }
        let inner = ["text", "value", "string", "String", "prompt", "text_g"]
            .iter()
            .find_map(|name| node.input(name))
            .or_else(|| (node.inputs.len() == 1).then(|| node.inputs.values().next()).flatten())?;
        let text = self.text(inner, depth + 1);
        if text.is_none() {
            self.notes
                .push(format!("text from node {} ({}) could not be read", node.id, node.class));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SamplerKind;

    /// ComfyUI's default workflow, as its API format writes it.
    pub(crate) const DEFAULT_WORKFLOW: &str = r#"{
        "3": {"inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
              "negative": ["7", 0], "latent_image": ["5", 0]}, "class_type": "KSampler",
              "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
              "class_type": "CheckpointLoaderSimple"},
        "5": {"inputs": {"width": 1024, "height": 1024, "batch_size": 1},
              "class_type": "EmptyLatentImage"},
        "6": {"inputs": {"text": "beautiful scenery nature glass bottle landscape",
              "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
        "7": {"inputs": {"text": "text, watermark", "clip": ["4", 1]},
              "class_type": "CLIPTextEncode"},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
              "class_type": "SaveImage"}
    }"#;

    #[test]
    fn reads_the_default_workflow() {
        let found = recover_from_prompt(DEFAULT_WORKFLOW).expect("reads");
        assert_eq!(found.source, Source::Comfyui);
        assert_eq!(found.prompt, "beautiful scenery nature glass bottle landscape");
        assert_eq!(found.negative, "text, watermark");
        assert_eq!(found.seed, Some(156_680_208_700_286));
        assert_eq!((found.steps, found.cfg), (Some(20), Some(8.0)));
        assert_eq!((found.width, found.height), (Some(1024), Some(1024)));
        assert_eq!(found.sampler, Some(SamplerKind::Euler));
        assert_eq!(found.model, "sd_xl_base_1.0.safetensors");
        assert_eq!(found.strength, None);
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }

    #[test]
    fn base_plus_refiner_with_lora_primitives_and_sdxl_encoders() {
        let graph = r#"{
            "10": {"class_type": "KSamplerAdvanced", "inputs": {"add_noise": "enable",
                   "noise_seed": ["30", 0], "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                   "scheduler": "karras", "start_at_step": 0, "end_at_step": 24,
                   "return_with_leftover_noise": "enable", "model": ["41", 0],
                   "positive": ["20", 0], "negative": ["21", 0], "latent_image": ["5", 0]}},
            "11": {"class_type": "KSamplerAdvanced", "inputs": {"add_noise": "disable",
                   "noise_seed": ["30", 0], "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                   "scheduler": "karras", "start_at_step": 24, "end_at_step": 10000,
                   "return_with_leftover_noise": "disable", "model": ["42", 0],
                   "positive": ["22", 0], "negative": ["23", 0], "latent_image": ["10", 0]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 896, "height": 1152,
                  "batch_size": 1}},
            "20": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"width": 4096, "height": 4096,
                   "crop_w": 0, "crop_h": 0, "target_width": 896, "target_height": 1152,
                   "text_g": ["31", 0], "text_l": ["31", 0], "clip": ["41", 1]}},
            "21": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "blurry",
                   "text_l": "blurry", "clip": ["41", 1]}},
            "22": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 6,
                   "width": 896, "height": 1152, "text": ["31", 0], "clip": ["42", 1]}},
            "23": {"class_type": "ConditioningCombine", "inputs": {
                   "conditioning_1": ["24", 0], "conditioning_2": ["25", 0]}},
            "24": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["42", 1]}},
            "25": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres", "clip": ["42", 1]}},
            "30": {"class_type": "PrimitiveInt", "inputs": {"value": 987654321}},
            "31": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a red fox,\nsnow"}},
            "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl_base.safetensors"}},
            "41": {"class_type": "LoraLoader", "inputs": {"lora_name": "pixel-art-xl.safetensors",
                   "strength_model": 0.8, "strength_clip": 1.0, "model": ["40", 0], "clip": ["40", 1]}},
            "42": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl_refiner.safetensors"}},
            "50": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["42", 2]}},
            "51": {"class_type": "SaveImage", "inputs": {"images": ["50", 0], "filename_prefix": "x"}},
            "52": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["40", 2]}},
            "53": {"class_type": "PreviewImage", "inputs": {"images": ["52", 0]}}
        }"#;
        let found = recover_from_prompt(graph).expect("reads");
        // The sampler reaching SaveImage is the refiner pass (node 11).
        assert_eq!(
            found.extra.get("sampler node").map(String::as_str),
            Some("11 (KSamplerAdvanced)")
        );
        assert_eq!(found.seed, Some(987_654_321));
        assert_eq!(found.prompt, "a red fox,\nsnow");
        assert_eq!(found.negative, "blurry, lowres");
        assert_eq!(found.model, "sdxl_refiner.safetensors");
        assert_eq!(found.sampler, Some(SamplerKind::Dpmpp2mKarras));
        assert_eq!((found.width, found.height), (Some(896), Some(1152)));
        let joined = found.warnings.join("\n");
        assert!(joined.contains("2 samplers") && joined.contains("multi-pass"), "{joined}");
        assert!(joined.contains("steps 24"), "{joined}");
        // The base pass, read on its own, has the LoRA on its model path.
        let base_only = graph.replace(r#""images": ["50", 0]"#, r#""images": ["52", 0]"#);
        let base = recover_from_prompt(&base_only).expect("reads");
        assert_eq!(base.model, "sdxl_base.safetensors");
        assert_eq!(
            base.loras,
            vec![LoraSpec { source: "pixel-art-xl.safetensors".into(), weight: 0.8 }]
        );
    }

    #[test]
    fn img2img_and_sampler_custom_advanced() {
        let graph = r#"{
            "1": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["2", 0],
                  "guider": ["3", 0], "sampler": ["4", 0], "sigmas": ["5", 0],
                  "latent_image": ["6", 0]}},
            "2": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
            "3": {"class_type": "CFGGuider", "inputs": {"cfg": 5.5, "model": ["9", 0],
                  "positive": ["7", 0], "negative": ["8", 0]}},
            "4": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
            "5": {"class_type": "BasicScheduler", "inputs": {"scheduler": "normal", "steps": 12,
                  "denoise": 0.6, "model": ["9", 0]}},
            "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["9", 2]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "oil painting", "clip": ["9", 1]}},
            "8": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["7", 0]}},
            "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper.safetensors"}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "11": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["9", 2]}},
            "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0]}}
        }"#;
        let found = recover_from_prompt(graph).expect("reads");
        assert_eq!(found.seed, Some(42));
        assert_eq!((found.steps, found.cfg), (Some(12), Some(5.5)));
        assert_eq!(found.sampler, Some(SamplerKind::EulerA));
        assert_eq!(found.strength, Some(0.6));
        assert_eq!(found.prompt, "oil painting");
        assert_eq!(found.negative, "");
        assert_eq!(found.model, "dreamshaper.safetensors");
    }

    #[test]
    fn cycles_and_dangling_links_end_with_warnings() {
        let graph = r#"{
            "1": {"class_type": "KSampler", "inputs": {"seed": ["9", 0], "steps": 20, "cfg": 7,
                  "sampler_name": "heun", "scheduler": "normal", "model": ["2", 0],
                  "positive": ["3", 0], "negative": ["404", 0], "latent_image": ["4", 0]}},
            "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "x", "model": ["2", 0]}},
            "3": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["3", 0]}},
            "4": {"class_type": "LatentUpscale", "inputs": {"samples": ["5", 0]}},
            "5": {"class_type": "LatentBlend", "inputs": {"samples1": ["4", 0]}},
            "9": {"class_type": "Seed", "inputs": {"seed": ["9", 0]}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["6", 0]}},
            "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0]}}
        }"#;
        let found = recover_from_prompt(graph).expect("still a result");
        assert_eq!(found.sampler, Some(SamplerKind::Heun));
        assert_eq!(found.seed, None);
        assert_eq!(found.prompt, "");
        let joined = found.warnings.join("\n");
        assert!(joined.contains("positive prompt could not be traced"), "{joined}");
        assert!(joined.contains("loops"), "{joined}");
        assert!(joined.contains("model unknown"), "{joined}");
    }

    #[test]
    fn non_graphs_are_errors() {
        for text in [
            "",
            "[]",
            "{}",
            "{\"1\": 5}",
            "{\"1\": {\"class_type\": \"CheckpointLoaderSimple\"}}",
            "{\"a\":",
        ] {
            assert!(recover_from_prompt(text).is_err(), "{text:?}");
        }
    }
}
