//! CLIP text encoders as transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`, read
//! from the component's own `config.json`. Unlike candle's own CLIP, every hidden state is kept:
//! SDXL conditions on the penultimate layer (no final norm) and pools `text_encoder_2`'s projected
//! EOS token; SD 1.x uses the last layer with the final norm.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::error::{DiffusionError, Result, read_json};
use super::weights::{component_weights, mmap_var_builder};

/// `text_encoder*/config.json` (transformers' `CLIPTextConfig`), the fields the model uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Positions (77).
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (CLIP ViT-L) or `gelu` (OpenCLIP bigG).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Width of `text_projection` (with-projection models).
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// EOS id; the legacy value 2 means "the token with the highest id" (argmax).
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
}

fn default_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".to_owned()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> i64 {
    2
}

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What one encoder pass yields.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Hidden states after layer N−1 (`hidden_states[-2]`), (B, 77, hidden).
    pub penultimate: Tensor,
    /// Last layer after `final_layer_norm` (`last_hidden_state`), (B, 77, hidden).
    pub last_normed: Tensor,
    /// `text_embeds`: projected EOS token (with-projection models only), (B, projection).
    pub text_embeds: Option<Tensor>,
}

/// A CLIP text encoder.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    config: ClipTextConfig,
    activation: Activation,
}

impl ClipTextModel {
    /// Loads a `text_encoder*` folder (`config.json` + `model.safetensors`).
    ///
    /// # Errors
    /// Missing files, unknown activation, missing weights.
    pub fn load(folder: &Path, dtype: DType, device: &Device, prefer_fp16: bool) -> Result<Self> {
        let config_path = folder.join("config.json");
        let config: ClipTextConfig = read_json("text encoder config", &config_path)?;
        let weights = component_weights(folder, "model", prefer_fp16)?;
        let vb = mmap_var_builder(&weights, dtype, device)?;
        Self::new(config, vb, &config_path)
    }

    /// Builds the model from its config and weights.
    ///
    /// # Errors
    /// Unknown activation, missing weights.
    pub fn new(config: ClipTextConfig, vb: VarBuilder, config_path: &Path) -> Result<Self> {
        let activation = match config.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(DiffusionError::config(
                    "hidden_act",
                    format!("{other:?} is not quick_gelu or gelu"),
                    config_path,
                ));
            }
        };
        let hidden = config.hidden_size;
        // Hub checkpoints nest the model under `text_model.`; transformers 5 saves a bare
        // CLIPTextModel without it. Both load.
        let text = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        let embeddings = text.pp("embeddings");
        let ln = |vb: VarBuilder| candle_nn::layer_norm(hidden, config.layer_norm_eps, vb);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let layer = text.pp(format!("encoder.layers.{index}"));
            let attn = layer.pp("self_attn");
            layers.push(EncoderLayer {
                layer_norm1: ln(layer.pp("layer_norm1"))?,
                q_proj: candle_nn::linear(hidden, hidden, attn.pp("q_proj"))?,
                k_proj: candle_nn::linear(hidden, hidden, attn.pp("k_proj"))?,
                v_proj: candle_nn::linear(hidden, hidden, attn.pp("v_proj"))?,
                out_proj: candle_nn::linear(hidden, hidden, attn.pp("out_proj"))?,
                layer_norm2: ln(layer.pp("layer_norm2"))?,
                fc1: candle_nn::linear(hidden, config.intermediate_size, layer.pp("mlp.fc1"))?,
                fc2: candle_nn::linear(config.intermediate_size, hidden, layer.pp("mlp.fc2"))?,
            });
        }
        let text_projection = match config.projection_dim {
            Some(dim) if vb.contains_tensor("text_projection.weight") => {
                Some(candle_nn::linear_no_bias(hidden, dim, vb.pp("text_projection"))?)
            }
            _ => None,
        };
        Ok(Self {
            token_embedding: candle_nn::embedding(
                config.vocab_size,
                hidden,
                embeddings.pp("token_embedding"),
            )?,
            position_embedding: embeddings
                .get((config.max_position_embeddings, hidden), "position_embedding.weight")?,
            layers,
            final_layer_norm: ln(text.pp("final_layer_norm"))?,
            text_projection,
            activation,
            config,
        })
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Width of `text_embeds`, when the model has a projection.
    pub fn projection_dim(&self) -> Option<usize> {
        self.text_projection.as_ref().and(self.config.projection_dim)
    }

    /// Encodes token windows (each `max_position_embeddings` long).
    ///
    /// # Errors
    /// Tensor errors; ids outside the vocabulary.
    pub fn forward(&self, windows: &[Vec<u32>]) -> Result<ClipOutput> {
        let device = self.position_embedding.device();
        let seq_len = windows.first().map_or(0, Vec::len);
        let flat: Vec<u32> = windows.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (windows.len(), seq_len), device)?;
        let positions = self.position_embedding.narrow(0, 0, seq_len)?;
        let mut hidden = self.token_embedding.forward(&ids)?.broadcast_add(&positions)?;
        let mask = causal_mask(seq_len, hidden.dtype(), device)?;
        let mut penultimate = hidden.clone();
        let layer_count = self.layers.len();
        for (index, layer) in self.layers.iter().enumerate() {
            if index + 1 == layer_count {
                penultimate = hidden.clone();
            }
            hidden = self.layer_forward(layer, &hidden, &mask)?;
        }
        let last_normed = self.final_layer_norm.forward(&hidden)?;
        let text_embeds = match &self.text_projection {
            Some(projection) => {
                let mut rows = Vec::with_capacity(windows.len());
                for (row, window) in windows.iter().enumerate() {
                    let position = self.pooled_position(window);
                    rows.push(last_normed.i((row, position))?);
                }
                Some(projection.forward(&Tensor::stack(&rows, 0)?)?)
            }
            None => None,
        };
        Ok(ClipOutput { penultimate, last_normed, text_embeds })
    }

    /// transformers' pooled position: argmax of the ids for the legacy `eos_token_id == 2`,
    /// else the first EOS.
    fn pooled_position(&self, window: &[u32]) -> usize {
        if self.config.eos_token_id == 2 {
            let mut best = 0;
            for (index, &id) in window.iter().enumerate() {
                if id > window[best] {
                    best = index;
                }
            }
            best
        } else {
            let eos = u32::try_from(self.config.eos_token_id).unwrap_or(u32::MAX);
            window.iter().position(|&id| id == eos).unwrap_or(window.len().saturating_sub(1))
        }
    }

    fn layer_forward(&self, layer: &EncoderLayer, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq_len, hidden) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let head_dim = hidden / heads;
        let normed = layer.layer_norm1.forward(x)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, seq_len, heads, head_dim))?.transpose(1, 2)?.contiguous()
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let query = split(layer.q_proj.forward(&normed)?)?;
        let key = split(layer.k_proj.forward(&normed)?)?;
        let value = split(layer.v_proj.forward(&normed)?)?;
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = probs.matmul(&value)?.transpose(1, 2)?.reshape((batch, seq_len, hidden))?;
        let x = (x + layer.out_proj.forward(&attended)?)?;
        let normed = layer.layer_norm2.forward(&x)?;
        let inner = layer.fc1.forward(&normed)?;
        let inner = match self.activation {
            Activation::QuickGelu => (&inner * candle_nn::ops::sigmoid(&(&inner * 1.702)?)?)?,
            Activation::Gelu => inner.gelu_erf()?,
        };
        Ok((x + layer.fc2.forward(&inner)?)?)
    }
}

fn causal_mask(seq_len: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = (0..seq_len)
        .flat_map(|row| {
            (0..seq_len).map(move |col| if col > row { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(data, (seq_len, seq_len), device)?.to_dtype(dtype)
}
