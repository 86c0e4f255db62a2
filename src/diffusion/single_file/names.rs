//! Original (LDM/SGM/`open_clip`) tensor names → diffusers/transformers names, per component, the
//! way diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
//! `convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint` map them, with nothing
//! hard-coded about the number of levels or layers: block indices are worked out from the
//! names themselves (the first `input_blocks.N.0.op` downsampler gives the resnets per level).
//!
//! A mapping also says how a tensor changes on the way ([`Transform`]): `open_clip`'s fused
//! `in_proj` is three rows of q/k/v, its `text_projection` is the transpose of transformers',
//! and the VAE's attention 1×1 convolutions are diffusers' linear layers.

use std::collections::{BTreeMap, BTreeSet};

use crate::models::checkpoint::UNET_PREFIX;

/// How a stored tensor becomes the tensor a model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// As stored.
    Identity,
    /// Rows `[start, start + len)` of dimension 0 (one of q/k/v in a fused `in_proj`).
    Rows {
        /// First row.
        start: usize,
        /// Row count.
        len: usize,
    },
    /// The transpose of a 2-D tensor (`text_projection`).
    Transpose,
    /// A 1×1 convolution kernel as a linear weight: the trailing unit dimensions dropped.
    DropUnitDims,
}

/// Where one diffusers-named tensor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its name in the file.
    pub name: String,
    /// What happens to it on the way.
    pub transform: Transform,
}

/// One component's tensors by diffusers name.
pub type NameMap = BTreeMap<String, Source>;

fn identity(name: &str) -> Source {
    Source { name: name.to_owned(), transform: Transform::Identity }
}

/// The diffusers names of a resnet's parts.
fn resnet_part(rest: &str) -> String {
    [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"),
        ("skip_connection", "conv_shortcut"),
    ]
    .iter()
    .find_map(|(original, diffusers)| {
        rest.strip_prefix(original).map(|tail| format!("{diffusers}{tail}"))
    })
    .unwrap_or_else(|| rest.to_owned())
}

/// `(block index, rest)` of `<what>.<index>.<rest>`.
fn block(name: &str, what: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix(what)?.strip_prefix('.')?;
    let (index, tail) = rest.split_once('.')?;
    Some((index.parse().ok()?, tail.to_owned()))
}

/// The UNet's tensors under `model.diffusion_model.` mapped to diffusers names. Tensors that
/// are not part of the UNet layout are left out (the caller reports what is missing).
pub fn unet_names<'a>(names: impl IntoIterator<Item = &'a str>) -> NameMap {
    let stripped: Vec<(&str, &str)> = names
        .into_iter()
        .filter_map(|name| name.strip_prefix(UNET_PREFIX).map(|rest| (name, rest)))
        .collect();
    // The first downsampler sits after the first level's resnets: input_blocks.{L+1}.0.op.
    let input_indices: BTreeSet<usize> = stripped
        .iter()
        .filter_map(|(_, rest)| block(rest, "input_blocks").map(|(i, _)| i))
        .collect();
    let first_op = stripped
        .iter()
        .filter_map(|(_, rest)| block(rest, "input_blocks"))
        .filter(|(_, tail)| tail.starts_with("0.op."))
        .map(|(index, _)| index)
        .min();
    let per_level =
        first_op.unwrap_or_else(|| input_indices.iter().max().copied().unwrap_or(0) + 1);
    let per_level = per_level.max(1); // resnets per level + 1 (the downsampler slot)
    let mut map = NameMap::new();
    for (name, rest) in stripped {
        let top = [
            ("time_embed.0.", "time_embedding.linear_1."),
            ("time_embed.2.", "time_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."),
            ("out.0.", "conv_norm_out."),
            ("out.2.", "conv_out."),
            ("label_emb.0.0.", "add_embedding.linear_1."),
            ("label_emb.0.2.", "add_embedding.linear_2."),
        ]
        .iter()
        .find_map(|(original, diffusers)| {
            rest.strip_prefix(original).map(|t| format!("{diffusers}{t}"))
        });
        let mapped = if let Some(top) = top {
            Some(top)
        } else if let Some((index, tail)) = block(rest, "input_blocks") {
            let level = (index - 1) / per_level;
            let layer = (index - 1) % per_level;
            if let Some(op) = tail.strip_prefix("0.op.") {
                Some(format!("down_blocks.{level}.downsamplers.0.conv.{op}"))
            } else if let Some(resnet) = tail.strip_prefix("0.") {
                Some(format!("down_blocks.{level}.resnets.{layer}.{}", resnet_part(resnet)))
            } else {
                tail.strip_prefix("1.")
                    .map(|attention| format!("down_blocks.{level}.attentions.{layer}.{attention}"))
            }
        } else if let Some((index, tail)) = block(rest, "middle_block") {
            match index {
                0 | 2 => Some(format!("mid_block.resnets.{}.{}", index / 2, resnet_part(&tail))),
                1 => Some(format!("mid_block.attentions.0.{tail}")),
                _ => None,
            }
        } else if let Some((index, tail)) = block(rest, "output_blocks") {
            let level = index / per_level;
            let layer = index % per_level;
            if let Some(resnet) = tail.strip_prefix("0.") {
                Some(format!("up_blocks.{level}.resnets.{layer}.{}", resnet_part(resnet)))
            } else if let Some(conv) =
                tail.strip_prefix("1.conv.").or_else(|| tail.strip_prefix("2.conv."))
            {
                Some(format!("up_blocks.{level}.upsamplers.0.conv.{conv}"))
            } else {
                tail.strip_prefix("1.")
                    .map(|attention| format!("up_blocks.{level}.attentions.{layer}.{attention}"))
            }
        } else {
            None
        };
        if let Some(mapped) = mapped {
            map.insert(mapped, identity(name));
        }
    }
    map
}

/// A VAE's tensors mapped to diffusers names; `prefix` is `first_stage_model.` inside a
/// checkpoint, `vae.` or empty in a lone VAE file. `levels` = how many `encoder.down.N` there are.
pub fn vae_names<'a>(names: impl IntoIterator<Item = &'a str> + Clone, prefix: &str) -> NameMap {
    let levels = names
        .clone()
        .into_iter()
        .filter_map(|name| name.strip_prefix(prefix))
        .filter_map(|rest| block(rest, "encoder.down").map(|(index, _)| index + 1))
        .max()
        .unwrap_or(0);
    let mut map = NameMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        let Some((side, tail)) = rest.split_once('.') else { continue };
        if side == "quant_conv" || side == "post_quant_conv" {
            map.insert(rest.to_owned(), identity(name));
            continue;
        }
        if side != "encoder" && side != "decoder" {
            continue;
        }
        let resnet = |part: &str| part.replacen("nin_shortcut", "conv_shortcut", 1);
        let mut transform = Transform::Identity;
        let mapped = if let Some(t) = tail.strip_prefix("norm_out.") {
            Some(format!("conv_norm_out.{t}"))
        } else if tail.starts_with("conv_in.") || tail.starts_with("conv_out.") {
            Some(tail.to_owned())
        } else if let Some((index, inner)) = block(tail, "down") {
            if let Some(part) = inner.strip_prefix("downsample.conv.") {
                Some(format!("down_blocks.{index}.downsamplers.0.conv.{part}"))
            } else {
                block(&inner, "block")
                    .map(|(j, part)| format!("down_blocks.{index}.resnets.{j}.{}", resnet(&part)))
            }
        } else if let Some((index, inner)) = block(tail, "up") {
            // The decoder's levels are numbered from the bottom in the original, from the top
            // in diffusers.
            let level = levels.checked_sub(index + 1);
            match (level, inner.strip_prefix("upsample.conv.")) {
                (Some(level), Some(part)) => {
                    Some(format!("up_blocks.{level}.upsamplers.0.conv.{part}"))
                }
                (Some(level), None) => block(&inner, "block")
                    .map(|(j, part)| format!("up_blocks.{level}.resnets.{j}.{}", resnet(&part))),
                (None, _) => None,
            }
        } else if let Some(part) = tail.strip_prefix("mid.block_1.") {
            Some(format!("mid_block.resnets.0.{}", resnet(part)))
        } else if let Some(part) = tail.strip_prefix("mid.block_2.") {
            Some(format!("mid_block.resnets.1.{}", resnet(part)))
        } else if let Some(part) = tail.strip_prefix("mid.attn_1.") {
            let (layer, parameter) = part.split_once('.').unwrap_or((part, ""));
            let layer = match layer {
                "norm" => Some("group_norm"),
                "q" => Some("to_q"),
                "k" => Some("to_k"),
                "v" => Some("to_v"),
                "proj_out" => Some("to_out.0"),
                _ => None,
            };
            if layer != Some("group_norm") && parameter == "weight" {
                transform = Transform::DropUnitDims;
            }
            layer.map(|layer| format!("mid_block.attentions.0.{layer}.{parameter}"))
        } else {
            None
        };
        if let Some(mapped) = mapped {
            map.insert(format!("{side}.{mapped}"), Source { name: name.to_owned(), transform });
        }
    }
    map
}

/// A CLIP ViT-L stored with transformers' names under `prefix` (SDXL's
/// `conditioner.embedders.0.transformer.`, SD 1.x's `cond_stage_model.transformer.`).
/// `position_ids` buffers are left out.
pub fn clip_names<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> NameMap {
    names
        .into_iter()
        .filter_map(|name| name.strip_prefix(prefix).map(|rest| (name, rest)))
        .filter(|(_, rest)| !rest.ends_with("position_ids"))
        .map(|(name, rest)| (rest.to_owned(), identity(name)))
        .collect()
}

/// An `open_clip` text tower under `prefix` (SDXL's `conditioner.embedders.1.model.`, SD 2.x's
/// `cond_stage_model.model.`) as transformers' `CLIPTextModel(WithProjection)`: `layers`
/// resblocks are taken (SD 2.x uses the penultimate of OpenCLIP ViT-H's 24), each fused
/// `in_proj` split into q/k/v of `hidden` rows, and `text_projection` transposed when
/// `with_projection`.
pub fn open_clip_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    hidden: usize,
    layers: usize,
    with_projection: bool,
) -> NameMap {
    let mut map = NameMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        match rest {
            "token_embedding.weight" => {
                map.insert(
                    "text_model.embeddings.token_embedding.weight".to_owned(),
                    identity(name),
                );
            }
            "positional_embedding" => {
                map.insert(
                    "text_model.embeddings.position_embedding.weight".to_owned(),
                    identity(name),
                );
            }
            "ln_final.weight" | "ln_final.bias" => {
                let parameter = rest.trim_start_matches("ln_final.");
                map.insert(format!("text_model.final_layer_norm.{parameter}"), identity(name));
            }
            "text_projection" if with_projection => {
                map.insert(
                    "text_projection.weight".to_owned(),
                    Source { name: name.to_owned(), transform: Transform::Transpose },
                );
            }
            _ => {
                let Some((index, tail)) =
                    rest.strip_prefix("transformer.").and_then(|r| block(r, "resblocks"))
                else {
                    continue;
                };
                if index >= layers {
                    continue;
                }
                let layer = format!("text_model.encoder.layers.{index}");
                let renamed = [
                    ("ln_1.", "layer_norm1."),
                    ("ln_2.", "layer_norm2."),
                    ("attn.out_proj.", "self_attn.out_proj."),
                    ("mlp.c_fc.", "mlp.fc1."),
                    ("mlp.c_proj.", "mlp.fc2."),
                ]
                .iter()
                .find_map(|(original, ours)| {
                    tail.strip_prefix(original).map(|p| format!("{ours}{p}"))
                });
                if let Some(renamed) = renamed {
                    map.insert(format!("{layer}.{renamed}"), identity(name));
                    continue;
                }
                let parameter = match tail.as_str() {
                    "attn.in_proj_weight" => "weight",
                    "attn.in_proj_bias" => "bias",
                    _ => continue,
                };
                for (part, projection) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    map.insert(
                        format!("{layer}.self_attn.{projection}.{parameter}"),
                        Source {
                            name: name.to_owned(),
                            transform: Transform::Rows { start: part * hidden, len: hidden },
                        },
                    );
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(map: &NameMap, original: &str) -> Vec<String> {
        map.iter().filter(|(_, s)| s.name == original).map(|(k, _)| k.clone()).collect()
    }

    /// SDXL's numbering (2 resnets per level, attention from level 1) lands where diffusers'
    /// own conversion puts it.
    #[test]
    fn sdxl_unet_blocks_land_where_diffusers_puts_them() {
        let names = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "model.diffusion_model.input_blocks.2.0.in_layers.2.weight",
            "model.diffusion_model.input_blocks.3.0.op.weight",
            "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight",
            "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
            "model.diffusion_model.middle_block.2.emb_layers.1.bias",
            "model.diffusion_model.middle_block.1.proj_in.weight",
            "model.diffusion_model.output_blocks.2.2.conv.weight",
            "model.diffusion_model.output_blocks.5.1.norm.weight",
            "model.diffusion_model.output_blocks.8.0.out_layers.3.bias",
            "model.diffusion_model.label_emb.0.2.weight",
            "model.diffusion_model.out.2.bias",
        ];
        let map = unet_names(names);
        let expect = |original: &str, diffusers: &str| {
            assert_eq!(
                target(&map, &format!("model.diffusion_model.{original}")),
                vec![diffusers.to_owned()]
            );
        };
        expect("input_blocks.0.0.weight", "conv_in.weight");
        expect("input_blocks.2.0.in_layers.2.weight", "down_blocks.0.resnets.1.conv1.weight");
        expect("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight");
        expect(
            "input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight",
            "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight",
        );
        expect(
            "input_blocks.4.0.skip_connection.weight",
            "down_blocks.1.resnets.0.conv_shortcut.weight",
        );
        expect("middle_block.2.emb_layers.1.bias", "mid_block.resnets.1.time_emb_proj.bias");
        expect("middle_block.1.proj_in.weight", "mid_block.attentions.0.proj_in.weight");
        expect("output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight");
        expect("output_blocks.5.1.norm.weight", "up_blocks.1.attentions.2.norm.weight");
        expect("output_blocks.8.0.out_layers.3.bias", "up_blocks.2.resnets.2.conv2.bias");
        expect("label_emb.0.2.weight", "add_embedding.linear_2.weight");
        expect("out.2.bias", "conv_out.bias");
    }

    #[test]
    fn open_clip_in_proj_is_split_and_extra_layers_dropped() {
        let prefix = "cond_stage_model.model.";
        let names = [
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
            "cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.bias",
            "cond_stage_model.model.transformer.resblocks.2.ln_1.weight",
            "cond_stage_model.model.text_projection",
            "cond_stage_model.model.positional_embedding",
        ];
        let map = open_clip_names(names, prefix, 8, 2, false);
        assert_eq!(
            map["text_model.encoder.layers.0.self_attn.k_proj.weight"].transform,
            Transform::Rows { start: 8, len: 8 }
        );
        assert!(map.contains_key("text_model.encoder.layers.1.mlp.fc1.bias"));
        assert!(!map.keys().any(|k| k.contains("layers.2")), "layer 2 is past the layers used");
        assert!(!map.contains_key("text_projection.weight"));
        assert!(map.contains_key("text_model.embeddings.position_embedding.weight"));
    }

    #[test]
    fn vae_up_levels_are_renumbered_and_attention_convs_become_linear() {
        let names = [
            "first_stage_model.encoder.down.0.block.0.nin_shortcut.weight",
            "first_stage_model.encoder.down.3.block.1.conv1.weight",
            "first_stage_model.decoder.up.3.upsample.conv.weight",
            "first_stage_model.decoder.up.0.block.2.conv2.bias",
            "first_stage_model.decoder.mid.attn_1.proj_out.weight",
            "first_stage_model.encoder.norm_out.bias",
            "first_stage_model.post_quant_conv.weight",
        ];
        let map = vae_names(names, "first_stage_model.");
        assert!(map.contains_key("encoder.down_blocks.0.resnets.0.conv_shortcut.weight"));
        assert!(map.contains_key("decoder.up_blocks.0.upsamplers.0.conv.weight"));
        assert!(map.contains_key("decoder.up_blocks.3.resnets.2.conv2.bias"));
        assert_eq!(
            map["decoder.mid_block.attentions.0.to_out.0.weight"].transform,
            Transform::DropUnitDims
        );
        assert!(map.contains_key("encoder.conv_norm_out.bias"));
        assert!(map.contains_key("post_quant_conv.weight"));
    }
}
