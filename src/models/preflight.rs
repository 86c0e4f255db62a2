//! Planning-time checks of a model's files, so a broken model is bad input (exit 2, nothing
//! written) instead of a failure after the job started: the layout is recognised, every
//! component the pipeline loads is present with `.safetensors` weights (pickles refused), every
//! weight header is valid and matches the file's size, every config parses, and the tensors
//! that fix a component's shape agree with its config. No tensor data is read.
//!
//! Resolution is the loader's own ([`resolve_pipeline`]), so what passes here is what loads.
//! Hub models are checked from the cache when `HF_HUB_OFFLINE` is set (missing files are
//! then an error naming how to fetch them); online, whatever is missing is downloaded at load.

use std::collections::BTreeMap;
use std::path::Path;

use super::catalog::{ModelRef, ModelSource};
use super::error::ModelError;
use super::hub::{HubConfig, ResolvedComponent, ResolvedPipeline, resolve_pipeline};
use super::safetensors_header::{TensorEntry, read_header};
use super::weight_files::WeightVariant;

/// Checks that `model` can be loaded: see the module docs.
///
/// # Errors
/// The first problem, naming the file.
pub fn check_model(
    model: &ModelRef,
    hub: &HubConfig,
    prefer: WeightVariant,
) -> Result<(), ModelError> {
    let resolved = match &model.source {
        ModelSource::Hub(_) if !hub.offline => {
            // Online: a complete cached copy is checked; a partial one is completed at load.
            let cache_only = HubConfig { offline: true, ..hub.clone() };
            match resolve_pipeline(model, &cache_only, prefer, &mut |_| {}) {
                Ok(resolved) => resolved,
                Err(ModelError::MissingOffline { .. }) => return Ok(()),
                Err(other) => return Err(other),
            }
        }
        _ => resolve_pipeline(model, hub, prefer, &mut |_| {})?,
    };
    check_components(&resolved)
}

/// Every config of `resolved` parses, and the shape-defining tensors agree with it.
///
/// # Errors
/// The first problem, naming the file.
pub fn check_components(resolved: &ResolvedPipeline) -> Result<(), ModelError> {
    for component in &resolved.components {
        for file in &component.files {
            if file.extension().is_some_and(|ext| ext == "json") {
                read_config(file)?;
            }
        }
        if component.weights.is_empty() {
            continue;
        }
        let Some(config_path) = component.file("config.json") else { continue };
        let config = read_config(config_path)?;
        let mut tensors = BTreeMap::new();
        for weights in &component.weights {
            tensors.extend(read_header(weights)?.tensors);
        }
        check_shapes(component, &config, &tensors)?;
    }
    Ok(())
}

fn read_config(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| ModelError::InvalidJson {
        what: "a component file",
        source,
        path: path.to_path_buf(),
    })
}

/// What the config says a tensor's shape must be, for the tensors that fix a component's
/// size: the first convolution of a UNet or VAE (channels in and out), a text encoder's
/// embeddings (vocabulary and width).
fn expected_shapes(component: &str, config: &serde_json::Value) -> Vec<(&'static str, Vec<u64>)> {
    let number = |key: &str| config.get(key).and_then(serde_json::Value::as_u64);
    let widths: Vec<u64> = config
        .get("block_out_channels")
        .and_then(serde_json::Value::as_array)
        .map(|values| values.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    let mut expected = Vec::new();
    if component == "unet" {
        if let (Some(first), Some(channels)) = (widths.first(), number("in_channels")) {
            expected.push(("conv_in.weight", vec![*first, channels, 3, 3]));
        }
    } else if component == "vae" {
        if let (Some(first), Some(channels)) = (widths.first(), number("in_channels")) {
            expected.push(("encoder.conv_in.weight", vec![*first, channels, 3, 3]));
        }
        if let (Some(last), Some(latents)) = (widths.last(), number("latent_channels")) {
            expected.push(("decoder.conv_in.weight", vec![*last, latents, 3, 3]));
        }
    } else if component.starts_with("text_encoder")
        && let Some(hidden) = number("hidden_size")
    {
        if let Some(vocab) = number("vocab_size") {
            expected.push(("embeddings.token_embedding.weight", vec![vocab, hidden]));
        }
        if let Some(positions) = number("max_position_embeddings") {
            expected.push(("embeddings.position_embedding.weight", vec![positions, hidden]));
        }
    }
    expected
}

fn check_shapes(
    component: &ResolvedComponent,
    config: &serde_json::Value,
    tensors: &BTreeMap<String, TensorEntry>,
) -> Result<(), ModelError> {
    let weights = component.weights.first().map_or_else(|| component.folder.clone(), Clone::clone);
    for (name, shape) in expected_shapes(&component.name, config) {
        // Transformers writes text encoders with or without the `text_model.` prefix.
        let found = tensors.get(name).or_else(|| tensors.get(&format!("text_model.{name}")));
        let Some(tensor) = found else {
            return Err(ModelError::UnknownLayout {
                reason: format!(
                    "the {} weights have no {name} tensor: not {} weights",
                    component.name, component.name
                ),
                path: weights,
            });
        };
        if tensor.shape != shape {
            return Err(ModelError::UnknownLayout {
                reason: format!(
                    "{name} has shape {:?} where {}/config.json says {shape:?}",
                    tensor.shape, component.name
                ),
                path: weights,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::Catalog;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion").join(name)
    }

    fn local(path: &Path) -> ModelRef {
        Catalog::builtin().resolve(&path.display().to_string()).expect("a local model")
    }

    fn offline(dir: &Path) -> HubConfig {
        HubConfig::offline_at(dir)
    }

    /// A copy of the tiny SDXL fixture that a test may damage.
    fn copy_of_tiny(dir: &Path) -> std::path::PathBuf {
        let to = dir.join("model");
        for file in crate::models::hub::list_files(&fixture("sdxl_tiny")) {
            let target = to.join(&file);
            fs_err::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            fs_err::copy(fixture("sdxl_tiny").join(&file), &target).expect("copy");
        }
        to
    }

    #[test]
    fn diffusers_fixtures_pass() {
        let hub = offline(Path::new("/nonexistent"));
        for name in ["sdxl_tiny", "sdxl_tiny_3lvl", "sd15_tiny"] {
            check_model(&local(&fixture(name)), &hub, WeightVariant::Full)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
        // The tiny pipeline with its UNet and second text encoder as the sharded `fp16`
        // variant diffusers writes (`tools/reference/make_sharded_fp16.py`).
        let dir = tempfile::tempdir().expect("tempdir");
        let model = copy_of_tiny(dir.path());
        fs_err::remove_file(model.join("unet/diffusion_pytorch_model.safetensors")).expect("rm");
        fs_err::remove_file(model.join("text_encoder_2/model.safetensors")).expect("rm");
        let sharded = fixture("sdxl_tiny_sharded_fp16");
        for file in crate::models::hub::list_files(&sharded) {
            fs_err::copy(sharded.join(&file), model.join(&file)).expect("copy shard");
        }
        for prefer in [WeightVariant::Full, WeightVariant::Fp16] {
            check_model(&local(&model), &hub, prefer)
                .unwrap_or_else(|err| panic!("sharded fp16, {prefer:?}: {err}"));
        }
    }

    #[test]
    fn broken_folders_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = copy_of_tiny(dir.path());
        let hub = offline(dir.path());
        let check = || check_model(&local(&model), &hub, WeightVariant::Full).expect_err("bad");

        let unet_weights = model.join("unet/diffusion_pytorch_model.safetensors");
        let bytes = fs_err::read(&unet_weights).expect("read");
        fs_err::write(&unet_weights, &bytes[..bytes.len() - 10]).expect("truncate");
        assert!(check().to_string().contains("diffusion_pytorch_model.safetensors"), "{}", check());
        fs_err::write(&unet_weights, &bytes).expect("restore");

        // The VAE's weights in the UNet's place: a valid file of the wrong component.
        fs_err::copy(model.join("vae/diffusion_pytorch_model.safetensors"), &unet_weights)
            .expect("swap");
        let err = check().to_string();
        assert!(err.contains("no conv_in.weight tensor") && err.contains("unet"), "{err}");
        fs_err::write(&unet_weights, &bytes).expect("restore");

        let config = model.join("text_encoder_2/config.json");
        let text = fs_err::read_to_string(&config).expect("read");
        fs_err::write(&config, text.replace("\"hidden_size\": 24", "\"hidden_size\": 32"))
            .expect("edit");
        let err = check().to_string();
        assert!(err.contains("token_embedding") && err.contains("[1514, 32]"), "{err}");
        fs_err::write(&config, "{ not json").expect("break");
        assert!(check().to_string().contains("text_encoder_2/config.json"), "{}", check());
        fs_err::write(&config, &text).expect("restore");

        fs_err::remove_file(model.join("tokenizer_2/merges.txt")).expect("remove");
        assert!(check().to_string().contains("tokenizer_2/merges.txt"), "{}", check());
        fs_err::write(model.join("tokenizer_2/merges.txt"), "#version: 0.2\n").expect("restore");

        fs_err::rename(&unet_weights, model.join("unet/diffusion_pytorch_model.bin"))
            .expect("pickle only");
        assert!(check().to_string().contains("pickle"), "{}", check());
        check_model(&local(&fixture("sdxl_tiny")), &hub, WeightVariant::Full).expect("original");
    }

    #[test]
    fn uncached_hub_models_are_refused_offline_and_left_to_the_download_online() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = Catalog::builtin().resolve("SDXL Turbo").expect("catalog");
        let err =
            check_model(&model, &offline(dir.path()), WeightVariant::Full).expect_err("not cached");
        assert!(err.to_string().contains("imagelab models prefetch"), "{err}");
        let online = HubConfig { offline: false, ..offline(dir.path()) };
        check_model(&model, &online, WeightVariant::Full).expect("downloaded at load");
    }
}
