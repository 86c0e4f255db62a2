#!/usr/bin/env python3
"""Single-file checkpoint fixtures (issue 11): tiny pipelines written as original-layout
`.safetensors` files by diffusers' own conversion scripts, the outputs diffusers'
`from_single_file` computes for them, files that must be refused, and the tensor manifests of the
real architectures. tests/it compares ours against these files.

Run from the repository root with the pinned environment (tools/reference/requirements.txt),
after make_fixtures.py (it reads tests/fixtures/diffusion/{sdxl_tiny_3lvl,sd15_tiny,init.png}):

    python tools/reference/make_single_file_refs.py --diffusers-scripts DIR

DIR holds diffusers' `scripts/convert_diffusers_to_original_sdxl.py` and
`scripts/convert_diffusers_to_original_stable_diffusion.py` (tag v0.40.0 of
huggingface/diffusers; unchanged since; their git blob ids are checked below). They are run as
the command-line programs they are; only the real-architecture manifests and the refiner-like
file call their conversion functions directly (those need no weights, or no CLIP-L).

Offline, `from_single_file` accepts `config=<local diffusers folder>` (the configs, tokenizers
and scheduler of a diffusers layout, no weights): `original_config=<LDM yaml>` cannot describe a
tiny SDXL (diffusers hard-codes `addition_time_embed_dim=256` for SDXL yamls) and would otherwise
fetch the text-encoder configs from the hub. So every reference here is
`Pipeline.from_single_file(file, config=configs/<name>, torch_dtype=float32, local_files_only=True)`.

Output (tests/fixtures/diffusion/single_file/):
  configs/<name>/          the diffusers config folder each tiny file was written from (no weights)
  sdxl_tiny.f16.safetensors, sd15_tiny.safetensors (f32), sd2v_tiny.f16.safetensors
                           written by diffusers' conversion scripts (--half for f16)
  sd15_tiny.ema_bf16.safetensors   sd15 with EMA + LDM buffers + position_ids, weights in bf16
  vae/                     a replacement VAE: tiny_vae.safetensors (original names) and
                           tiny_vae_diffusers/ (a diffusers folder), the same tensors
  refuse/*.safetensors     Flux-like, SD3-like, 9-channel inpainting, SDXL-refiner-like, truncated
  manifests/<arch>.json.zz names/shapes/dtypes of the real architectures' files (zlib JSON) and
                           the diffusers configs that `from_single_file` uses for each
and tests/fixtures/diffusion/refs/single_file/<name>/{reference.safetensors,runs.json}.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
    infer_diffusers_model_type,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures  # noqa: E402  (same folder: run_pipe, record_vae, text_config)

FIXTURES = Path("tests/fixtures/diffusion")
OUT = FIXTURES / "single_file"
REFS = FIXTURES / "refs" / "single_file"
HERE = Path(__file__).resolve().parent

# git blob ids of the two conversion scripts at diffusers v0.40.0 (identical on main in 2026).
SCRIPT_BLOBS = {
    "convert_diffusers_to_original_sdxl.py": "1aa792b3f06ac7db88078024da241e0aa97b7925",
    "convert_diffusers_to_original_stable_diffusion.py": "049dda7d42a748d487f708f9595e196b49d39840",
}

PROMPT = "a photo of an astronaut riding a horse on mars"


# ----------------------------------------------------------------------------- scripts


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_scripts(folder: Path) -> None:
    for name, blob in SCRIPT_BLOBS.items():
        found = git_blob_id(folder / name)
        if found != blob:
            sys.exit(f"{folder / name}: git blob {found}, expected {blob} (diffusers v0.40.0)")


def import_script(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), folder / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(folder: Path, name: str, model: Path, out: Path, half: bool) -> None:
    cmd = [sys.executable, str(folder / name), "--model_path", str(model), "--checkpoint_path", str(out),
           "--use_safetensors"]
    if half:
        cmd.append("--half")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- tiny models


def vae_4_levels(seed: int, scaling: float, force_upcast: bool, channels=(4, 4, 8, 8), groups=2,
                 layers=2) -> AutoencoderKL:
    """Four levels and two resnets per level, as every SD VAE (the conversion scripts hard-code that)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=64,
        scaling_factor=scaling,
        force_upcast=force_upcast,
    )


def copy_tokenizer(src: Path, dst: Path) -> None:
    """The tokenizer files as the hub repos ship them (vocab.json + merges.txt, no tokenizer.json)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)


def hub_clip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel's tensor names as the hub repos (and the conversion scripts) have them:
    transformers 5 saves CLIPTextModel without the `text_model.` level; it loads both."""
    return {k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k: v for k, v in state.items()}


def save_folder(pipe, folder: Path, tokenizers: dict[str, Path]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    for sub, src in tokenizers.items():
        shutil.rmtree(folder / sub)
        copy_tokenizer(src, folder / sub)
    for sub in ("text_encoder", "text_encoder_2"):
        weights = folder / sub / "model.safetensors"
        if weights.exists():
            save_file(hub_clip_names(load_file(weights)), weights, metadata={"format": "pt"})


def config_copy(folder: Path, dst: Path) -> None:
    """A diffusers folder without its weights: what `from_single_file(config=...)` reads."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))


def sdxl_tiny_pipeline(tmp: Path) -> Path:
    """sdxl_tiny_3lvl's UNet and text encoders (SDXL's three-level topology) + a four-level VAE."""
    src = FIXTURES / "sdxl_tiny_3lvl"
    base = StableDiffusionXLPipeline.from_pretrained(src, add_watermarker=False)
    vae = vae_4_levels(101, 0.13025, True)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                                     tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2, unet=base.unet,
                                     scheduler=base.scheduler, force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    folder = tmp / "sdxl_tiny"
    save_folder(pipe, folder, {"tokenizer": src / "tokenizer", "tokenizer_2": src / "tokenizer_2"})
    return folder


def sd15_tiny_pipeline(tmp: Path) -> Path:
    """sd15_tiny's UNet and text encoder + a four-level VAE; SD 1.5's PNDM scheduler config."""
    src = FIXTURES / "sd15_tiny"
    base = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    vae = vae_4_levels(102, 0.18215, False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=base.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    folder = tmp / "sd15_tiny"
    save_folder(pipe, folder, {"tokenizer": src / "tokenizer"})
    return folder


def sd21_scheduler() -> DDIMScheduler:
    # stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json (transcribed; the repo that
    # from_single_file fetches for every "v2" checkpoint)
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        set_alpha_to_one=False,
        steps_offset=1,
    )


def sd2v_tiny_pipeline(tmp: Path) -> Path:
    """SD 2.x (768-v) layout: OpenCLIP-H-like text encoder kept at 23 layers (the penultimate of 24,
    as stabilityai/stable-diffusion-2-1 ships it; the conversion script recognises 2.x by layer 22),
    linear transformer projections, upcast attention, v-prediction DDIM."""
    torch.manual_seed(3)
    vocab = CLIPTokenizer.from_pretrained(FIXTURES / "sdxl_tiny" / "tokenizer_2").vocab_size
    te_cfg = make_fixtures.text_config(vocab, 16, 23, 2, "gelu", 16)
    text_encoder = CLIPTextModel(te_cfg)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        norm_num_groups=4,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=te_cfg.hidden_size,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        upcast_attention=True,
    )
    vae = vae_4_levels(103, 0.18215, False)
    # stabilityai/stable-diffusion-2-1 pads with "!" (as SDXL's tokenizer_2).
    tok_src = FIXTURES / "sdxl_tiny" / "tokenizer_2"
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder,
                                   tokenizer=CLIPTokenizer.from_pretrained(tok_src), unet=unet,
                                   scheduler=sd21_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    folder = tmp / "sd2v_tiny"
    save_folder(pipe, folder, {"tokenizer": tok_src})
    return folder


# ----------------------------------------------------------------------------- references


def sdxl_from_single_file(path: Path, config: Path):
    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), torch_dtype=torch.float32,
                                                      local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_from_single_file(path: Path, config: Path):
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), torch_dtype=torch.float32,
                                                    local_files_only=True, safety_checker=None,
                                                    requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def same_weights(pipe_a, pipe_b, components: list[str], exact: bool) -> None:
    """The single-file pipeline holds exactly the folder's tensors (or their f16 rounding)."""
    for name in components:
        sa = getattr(pipe_a, name).state_dict()
        sb = getattr(pipe_b, name).state_dict()
        assert sa.keys() == sb.keys(), f"{name}: keys differ {set(sa) ^ set(sb)}"
        for key in sa:
            if exact:
                assert torch.equal(sa[key], sb[key]), f"{name}.{key} differs"
            else:
                assert torch.allclose(sa[key], sb[key], rtol=1e-3, atol=1e-3), f"{name}.{key} differs"


@torch.no_grad()
def record_sdxl(name: str, pipe, runs_wanted: list[str], meta: dict, source: dict) -> None:
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    ids1 = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids2 = pipe.tokenizer_2(PROMPT, padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
    out["te1.ids"], out["te2.ids"] = ids1, ids2
    out["te1.penultimate"] = pipe.text_encoder(ids1, output_hidden_states=True).hidden_states[-2]
    o2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
    out["te2.penultimate"], out["te2.text_embeds"] = o2.hidden_states[-2], o2.text_embeds
    record_vae(pipe, out)
    all_runs = {
        "txt2img_cfg5_zero_neg": (dict(prompt=PROMPT, num_inference_steps=5, guidance_scale=5.0, height=64, width=64,
                                       seed=42), dict(mode="txt2img", negative="", sampler="default")),
        "txt2img_cfg7_neg": (dict(prompt=PROMPT, negative_prompt="blurry, low quality", num_inference_steps=4,
                                  guidance_scale=7.0, height=64, width=96, seed=1234),
                             dict(mode="txt2img", negative="blurry, low quality", sampler="default")),
    }
    for key in runs_wanted:
        if key == "img2img":
            i2i = StableDiffusionXLImg2ImgPipeline(**pipe.components, requires_aesthetics_score=False,
                                                   force_zeros_for_empty_prompt=True)
            i2i.set_progress_bar_config(disable=True)
            img = Image.open(FIXTURES / "init.png").convert("RGB")
            make_fixtures.run_pipe(i2i, out, key, prompt=PROMPT, image=img, strength=0.6, num_inference_steps=5,
                                   guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(11))
            runs[key] = dict(mode="img2img", prompt=PROMPT, negative="", steps=5, cfg=5.0, seed=11, width=64,
                             height=64, strength=0.6, sampler="default")
            continue
        kwargs, extra = all_runs[key]
        kwargs = dict(kwargs)
        seed = kwargs.pop("seed")
        make_fixtures.run_pipe(pipe, out, key, generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
        runs[key] = dict(prompt=kwargs["prompt"], steps=kwargs["num_inference_steps"], cfg=kwargs["guidance_scale"],
                         seed=seed, width=kwargs["width"], height=kwargs["height"], **extra)
    save_refs(name, out, runs, meta, source)


@torch.no_grad()
def record_sd(name: str, pipe, runs_wanted: dict[str, dict], meta: dict, source: dict) -> None:
    """runs_wanted: key -> {"sampler": "euler"|"default", "mode": ..., ...}."""
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    prompt = "a watercolor fox in the snow"
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out["te1.ids"] = ids
    out["te1.last_normed"] = pipe.text_encoder(ids)[0]
    record_vae(pipe, out)
    default_scheduler = pipe.scheduler
    for key, run in runs_wanted.items():
        pipe.scheduler = (EulerDiscreteScheduler.from_config(default_scheduler.config) if run["sampler"] == "euler"
                          else default_scheduler)
        if run["mode"] == "img2img":
            i2i = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
            i2i.set_progress_bar_config(disable=True)
            img = Image.open(FIXTURES / "init.png").convert("RGB")
            make_fixtures.run_pipe(i2i, out, key, prompt=prompt, image=img, strength=run["strength"],
                                   num_inference_steps=run["steps"], guidance_scale=run["cfg"],
                                   generator=torch.Generator("cpu").manual_seed(run["seed"]))
        else:
            make_fixtures.run_pipe(pipe, out, key, prompt=prompt, num_inference_steps=run["steps"],
                                   guidance_scale=run["cfg"], height=run["height"], width=run["width"],
                                   generator=torch.Generator("cpu").manual_seed(run["seed"]))
        runs[key] = dict(prompt=prompt, negative="", **run)
    pipe.scheduler = default_scheduler
    save_refs(name, out, runs, meta, source)


def record_vae(pipe, out: dict) -> None:
    """make_fixtures.record_vae at a quarter of the pixels (the VAE here scales by 8)."""
    g = torch.Generator("cpu").manual_seed(9)
    z = torch.randn(1, 4, 4, 4, generator=g)
    out["vae.z"] = z
    out["vae.decoded"] = pipe.vae.decode(z, return_dict=False)[0]
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    dist = pipe.vae.encode(x).latent_dist
    out["vae.x"], out["vae.mean"], out["vae.std"] = x, dist.mean, dist.std


def save_refs(name: str, tensors: dict, runs: dict, meta: dict, source: dict) -> None:
    folder = REFS / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "reference.safetensors")
    (folder / "runs.json").write_text(json.dumps({"runs": runs, **source, **meta}, indent=2), encoding="utf-8")


# ----------------------------------------------------------------------------- variants


def ldm_schedule_buffers() -> dict[str, torch.Tensor]:
    """The buffers ldm's DDPM.register_schedule stores in every SD 1.x training checkpoint
    (linear_start 0.00085, linear_end 0.012, 1000 steps, "linear" = sqrt-space schedule, v_posterior 0)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cum = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cum[:-1]])
    post_var = betas * (1.0 - prev) / (1.0 - cum)
    bufs = {
        "betas": betas,
        "alphas_cumprod": cum,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cum.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cum).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cum).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cum).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cum - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": torch.log(torch.clamp(post_var, min=1e-20)),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cum),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cum),
    }
    return {k: v.to(torch.float32) for k, v in bufs.items()}


def ema_variant(src: Path, dst: Path) -> None:
    """An SD 1.x training checkpoint as CompVis/runwayml published them (v1-5-pruned): the model,
    its EMA copy under `model_ema.<name without dots>` (ldm's LitEma), `model_ema.decay` and
    `model_ema.num_updates`, the DDPM schedule buffers and CLIP's int64 `position_ids`. The EMA
    copy differs from the model, so a loader that takes it is caught. Floating weights in bf16."""
    state = load_file(src)
    g = torch.Generator("cpu").manual_seed(5)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out[key] = value.to(torch.bfloat16)
        if key.startswith("model.diffusion_model."):
            flat = "model_ema." + "".join(key.split(".")[1:])
            noise = torch.randn(value.shape, generator=g) * 0.05 * value.abs().mean().clamp_min(1e-3)
            out[flat] = (value + noise).to(torch.bfloat16)
    out["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    out["model_ema.num_updates"] = torch.tensor(470000, dtype=torch.int32)
    out.update(ldm_schedule_buffers())
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    save_file(out, dst)


# ----------------------------------------------------------------------------- VAE override


def override_vae(scripts: Path, out: Path) -> AutoencoderKL:
    """A replacement VAE as users swap one in (issue 11, item 4), in its two published forms: a
    diffusers folder (config.json + weights at the root, as madebyollin/sdxl-vae-fp16-fix) and
    a lone file with the original names and no prefix (A1111's models/VAE, ComfyUI's models/vae;
    the SDXL script's own VAE conversion). SDXL's scaling factor, `force_upcast` false (an
    fp16-safe VAE needs no f32 decode). Both hold the same f32 tensors."""
    sdxl = import_script(scripts, "convert_diffusers_to_original_sdxl.py")
    vae = vae_4_levels(104, 0.13025, False, layers=1)
    vae.save_pretrained(out / "tiny_vae_diffusers", safe_serialization=True)
    save_file({k: v.contiguous() for k, v in sdxl.convert_vae_state_dict(vae.state_dict()).items()},
              out / "tiny_vae.safetensors", metadata={"format": "pt"})
    loaded = AutoencoderKL.from_single_file(str(out / "tiny_vae.safetensors"), config=str(out / "tiny_vae_diffusers"),
                                            torch_dtype=torch.float32, local_files_only=True)
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    return AutoencoderKL.from_pretrained(out / "tiny_vae_diffusers")


@torch.no_grad()
def record_vae_override(vae: AutoencoderKL, meta: dict) -> None:
    """The same generation with the override VAE: the single file (txt2img: only the decode
    changes) and sdxl_tiny_3lvl's folder (img2img: the encode too; the new VAE scales by 8)."""
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    single = StableDiffusionXLPipeline.from_single_file(
        str(OUT / "sdxl_tiny.f16.safetensors"), config=str(OUT / "configs" / "sdxl_tiny"), vae=vae,
        torch_dtype=torch.float32, local_files_only=True, add_watermarker=False)
    single.set_progress_bar_config(disable=True)
    make_fixtures.run_pipe(single, out, "single_file_txt2img", prompt=PROMPT, num_inference_steps=4,
                           guidance_scale=5.0, height=64, width=64, generator=torch.Generator("cpu").manual_seed(42))
    runs["single_file_txt2img"] = dict(model="single_file/sdxl_tiny.f16.safetensors",
                                       config="single_file/configs/sdxl_tiny", mode="txt2img", prompt=PROMPT,
                                       negative="", steps=4, cfg=5.0, seed=42, width=64, height=64, sampler="default")
    folder = StableDiffusionXLPipeline.from_pretrained(FIXTURES / "sdxl_tiny_3lvl", vae=vae, add_watermarker=False)
    i2i = StableDiffusionXLImg2ImgPipeline(**folder.components, requires_aesthetics_score=False,
                                           force_zeros_for_empty_prompt=True)
    i2i.set_progress_bar_config(disable=True)
    img = Image.open(FIXTURES / "init.png").convert("RGB")
    make_fixtures.run_pipe(i2i, out, "folder_img2img", prompt=PROMPT, image=img, strength=0.6, num_inference_steps=5,
                           guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(11))
    runs["folder_img2img"] = dict(model="sdxl_tiny_3lvl", mode="img2img", prompt=PROMPT, negative="", steps=5,
                                  cfg=5.0, seed=11, width=64, height=64, strength=0.6, sampler="default")
    save_refs("vae_override", out, runs, meta, {"vae": ["single_file/vae/tiny_vae.safetensors",
                                                       "single_file/vae/tiny_vae_diffusers"]})


# ----------------------------------------------------------------------------- refusals


def tiny_tensor(*shape: int) -> torch.Tensor:
    return (torch.arange(int(torch.tensor(shape).prod()), dtype=torch.float32).reshape(shape) % 7 / 7).half()


def flux_like(dst: Path) -> None:
    """Black Forest Labs' Flux.1 layout (flux1-dev.safetensors): double and single stream blocks,
    no UNet. Checked against diffusers' own detection below."""
    h, mlp, ctx, vec, ch = 8, 16, 12, 6, 4
    t: dict[str, torch.Tensor] = {
        "img_in.weight": tiny_tensor(h, ch * 4), "img_in.bias": tiny_tensor(h),
        "txt_in.weight": tiny_tensor(h, ctx), "txt_in.bias": tiny_tensor(h),
        "time_in.in_layer.weight": tiny_tensor(h, 256), "time_in.in_layer.bias": tiny_tensor(h),
        "time_in.out_layer.weight": tiny_tensor(h, h), "time_in.out_layer.bias": tiny_tensor(h),
        "vector_in.in_layer.weight": tiny_tensor(h, vec), "vector_in.in_layer.bias": tiny_tensor(h),
        "vector_in.out_layer.weight": tiny_tensor(h, h), "vector_in.out_layer.bias": tiny_tensor(h),
        "guidance_in.in_layer.weight": tiny_tensor(h, 256), "guidance_in.in_layer.bias": tiny_tensor(h),
        "guidance_in.out_layer.weight": tiny_tensor(h, h), "guidance_in.out_layer.bias": tiny_tensor(h),
        "final_layer.linear.weight": tiny_tensor(ch * 4, h), "final_layer.linear.bias": tiny_tensor(ch * 4),
        "final_layer.adaLN_modulation.1.weight": tiny_tensor(2 * h, h),
        "final_layer.adaLN_modulation.1.bias": tiny_tensor(2 * h),
    }
    for s in ("img", "txt"):
        p = f"double_blocks.0.{s}_"
        t.update({
            p + "mod.lin.weight": tiny_tensor(6 * h, h), p + "mod.lin.bias": tiny_tensor(6 * h),
            p + "attn.qkv.weight": tiny_tensor(3 * h, h), p + "attn.qkv.bias": tiny_tensor(3 * h),
            p + "attn.norm.query_norm.scale": tiny_tensor(4), p + "attn.norm.key_norm.scale": tiny_tensor(4),
            p + "attn.proj.weight": tiny_tensor(h, h), p + "attn.proj.bias": tiny_tensor(h),
            p + "mlp.0.weight": tiny_tensor(mlp, h), p + "mlp.0.bias": tiny_tensor(mlp),
            p + "mlp.2.weight": tiny_tensor(h, mlp), p + "mlp.2.bias": tiny_tensor(h),
        })
    p = "single_blocks.0."
    t.update({
        p + "linear1.weight": tiny_tensor(3 * h + mlp, h), p + "linear1.bias": tiny_tensor(3 * h + mlp),
        p + "linear2.weight": tiny_tensor(h, h + mlp), p + "linear2.bias": tiny_tensor(h),
        p + "norm.query_norm.scale": tiny_tensor(4), p + "norm.key_norm.scale": tiny_tensor(4),
        p + "modulation.lin.weight": tiny_tensor(3 * h, h), p + "modulation.lin.bias": tiny_tensor(3 * h),
    })
    kind = infer_diffusers_model_type(t)
    assert kind.startswith("flux"), kind
    save_file(t, dst, metadata={"format": "pt"})


def sd3_like(dst: Path) -> None:
    """Stability's SD3 / SD3.5 all-in-one layout: an MMDiT (`joint_blocks`) under
    model.diffusion_model, CLIP-L/CLIP-G/T5 under text_encoders.*, a 16-channel VAE."""
    h = 8
    t: dict[str, torch.Tensor] = {
        "model.diffusion_model.pos_embed": tiny_tensor(1, 16, h),
        "model.diffusion_model.x_embedder.proj.weight": tiny_tensor(h, 16, 2, 2),
        "model.diffusion_model.x_embedder.proj.bias": tiny_tensor(h),
        "model.diffusion_model.context_embedder.weight": tiny_tensor(h, 12),
        "model.diffusion_model.t_embedder.mlp.0.weight": tiny_tensor(h, 256),
        "model.diffusion_model.y_embedder.mlp.0.weight": tiny_tensor(h, 20),
        "model.diffusion_model.final_layer.linear.weight": tiny_tensor(64, h),
        "first_stage_model.decoder.conv_in.weight": tiny_tensor(4, 16, 3, 3),
        "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight": tiny_tensor(77, 8),
        "text_encoders.clip_g.transformer.text_model.embeddings.position_embedding.weight": tiny_tensor(77, 8),
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": tiny_tensor(8, 8),
    }
    for block in ("context_block", "x_block"):
        p = f"model.diffusion_model.joint_blocks.0.{block}."
        t.update({
            p + "adaLN_modulation.1.weight": tiny_tensor(6 * h, h), p + "adaLN_modulation.1.bias": tiny_tensor(6 * h),
            p + "attn.qkv.weight": tiny_tensor(3 * h, h), p + "attn.proj.weight": tiny_tensor(h, h),
            p + "mlp.fc1.weight": tiny_tensor(4 * h, h), p + "mlp.fc2.weight": tiny_tensor(h, 4 * h),
        })
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES

    assert any(k in t for k in CHECKPOINT_KEY_NAMES["sd3"])
    save_file(t, dst, metadata={"format": "pt"})


def micro_sd15_folder(tmp: Path, name: str, in_channels: int) -> Path:
    """The smallest SD 1.x-layout pipeline (for refusals: its shapes matter, not its numbers)."""
    torch.manual_seed(9)
    vocab = CLIPTokenizer.from_pretrained(FIXTURES / "sdxl_tiny" / "tokenizer").vocab_size
    te = CLIPTextModel(make_fixtures.text_config(vocab, 4, 1, 1, "quick_gelu", 4))
    unet = UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                norm_num_groups=2, block_out_channels=(4, 4),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=4,
                                attention_head_dim=2)
    vae = vae_4_levels(9, 0.18215, False, channels=(4, 4, 4, 4), groups=2, layers=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(
        FIXTURES / "sdxl_tiny" / "tokenizer"), unet=unet, scheduler=EulerDiscreteScheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    folder = tmp / name
    save_folder(pipe, folder, {"tokenizer": FIXTURES / "sdxl_tiny" / "tokenizer"})
    return folder


def refiner_like(scripts: Path, dst: Path) -> None:
    """SDXL refiner layout (sd_xl_refiner_1.0.safetensors): only OpenCLIP bigG, as
    conditioner.embedders.0.model.*; a UNet whose added-conditioning input is 5 time ids (aesthetic
    score) + pooled. The SDXL script needs CLIP-L, so its conversion functions are called here."""
    sdxl = import_script(scripts, "convert_diffusers_to_original_sdxl.py")
    torch.manual_seed(10)
    vocab = CLIPTokenizer.from_pretrained(FIXTURES / "sdxl_tiny" / "tokenizer").vocab_size
    te2 = CLIPTextModelWithProjection(make_fixtures.text_config(vocab, 4, 10, 1, "gelu", 4))
    t = 2
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=2,
                                block_out_channels=(4, 4, 4),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=4, attention_head_dim=2, use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=t,
                                projection_class_embeddings_input_dim=5 * t + 4)
    vae = vae_4_levels(10, 0.13025, True, channels=(4, 4, 4, 4), groups=2, layers=1)
    state = {"model.diffusion_model." + k: v for k, v in sdxl.convert_unet_state_dict(unet.state_dict()).items()}
    state.update({"first_stage_model." + k: v for k, v in sdxl.convert_vae_state_dict(vae.state_dict()).items()})
    te_state = sdxl.convert_openclip_text_enc_state_dict(te2.state_dict())
    te_state["text_projection"] = te_state.pop("text_projection.weight").T.contiguous()
    state.update({"conditioner.embedders.0.model." + k: v for k, v in te_state.items()})
    state = {k: v.half().contiguous() for k, v in state.items()}
    kind = infer_diffusers_model_type(state)
    assert kind == "xl_refiner", kind
    save_file(state, dst)


def truncate(src: Path, dst: Path, keep_fraction: float) -> None:
    """A download that stopped early: the header is whole, the data is not."""
    data = src.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    keep = header + int((len(data) - header) * keep_fraction)
    dst.write_bytes(data[:keep])


# ----------------------------------------------------------------------------- manifests


def ldm_yaml(kind: str) -> dict:
    import yaml

    return yaml.safe_load((HERE / "ldm_configs" / f"{kind}.yaml").read_text(encoding="utf-8"))


def clip_config(kind: str) -> CLIPTextConfig:
    # The text-encoder configs from_single_file reads from the architecture's hub repo
    # (text_encoder*/config.json of stable-diffusion-v1-5, stable-diffusion-xl-base-1.0,
    # stable-diffusion-2-1; transcribed).
    common = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0,
                  eos_token_id=2, pad_token_id=1)
    return {
        "clip_l": CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768, **common),
        "bigg": CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                               num_attention_heads=20, hidden_act="gelu", projection_dim=1280, **common),
        "openclip_h": CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                     num_attention_heads=16, hidden_act="gelu", projection_dim=512, **common),
    }[kind]


SCHEDULERS = {
    # scheduler/scheduler_config.json of the repo from_single_file fetches for the architecture
    "xl_base": dict(make_fixtures.sdxl_scheduler_config(), _class_name="EulerDiscreteScheduler",
                    sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False,
                    trained_betas=None),
    "v1": dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
               trained_betas=None, clip_sample=False),
    "v2": dict(_class_name="DDIMScheduler", **{k: v for k, v in sd21_scheduler().config.items()
                                                 if not k.startswith("_")}),
}


def meta_state(module) -> dict[str, torch.Tensor]:
    state = dict(module.state_dict())
    return hub_clip_names(state) if isinstance(module, CLIPTextModel) else state


def manifest(scripts: Path, kind: str, dst: Path) -> None:
    """Names, shapes and dtypes of the real architecture's single file, as diffusers' conversion
    script writes it from the real-size model (built on the meta device: no weights), plus the
    diffusers configs from_single_file uses for it (UNet/VAE from the original LDM yaml through
    diffusers' own create_*_diffusers_config_from_ldm; text encoders and scheduler from the hub repo)."""
    original = ldm_yaml(kind)
    fake = {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, 4, 3, 3, device="meta")}
    if kind == "xl_base":
        fake["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"] = torch.empty(1, device="meta")
    elif kind == "v2":
        fake["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] = torch.empty(
            640, 1024, device="meta")
    assert infer_diffusers_model_type(fake) == kind
    unet_cfg = create_unet_diffusers_config_from_ldm(original, fake)
    vae_cfg = create_vae_diffusers_config_from_ldm(original, fake)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
    if kind == "xl_base":
        script = import_script(scripts, "convert_diffusers_to_original_sdxl.py")
        with torch.device("meta"):
            te1 = CLIPTextModel(clip_config("clip_l"))
            te2 = CLIPTextModelWithProjection(clip_config("bigg"))
        state = {"model.diffusion_model." + k: v for k, v in script.convert_unet_state_dict(meta_state(unet)).items()}
        state.update({"first_stage_model." + k: v for k, v in script.convert_vae_state_dict(meta_state(vae)).items()})
        state.update({"conditioner.embedders.0.transformer." + k: v for k, v in meta_state(te1).items()})
        te2_state = script.convert_openclip_text_enc_state_dict(meta_state(te2))
        te2_state["text_projection"] = te2_state.pop("text_projection.weight").T
        state.update({"conditioner.embedders.1.model." + k: v for k, v in te2_state.items()})
        te_cfgs = {"text_encoder": clip_config("clip_l"), "text_encoder_2": clip_config("bigg")}
        te_models = {"text_encoder": te1, "text_encoder_2": te2}
    else:
        script = import_script(scripts, "convert_diffusers_to_original_stable_diffusion.py")
        te_kind = "openclip_h" if kind == "v2" else "clip_l"
        with torch.device("meta"):
            te = CLIPTextModel(clip_config(te_kind))
        state = {"model.diffusion_model." + k: v for k, v in script.convert_unet_state_dict(meta_state(unet)).items()}
        state.update({"first_stage_model." + k: v for k, v in script.convert_vae_state_dict(meta_state(vae)).items()})
        te_state = meta_state(te)
        if kind == "v2":
            te_state = {"transformer." + k: v for k, v in te_state.items()}
            te_state = script.convert_text_enc_state_dict_v20(te_state)
            state.update({"cond_stage_model.model." + k: v for k, v in te_state.items()})
        else:
            state.update({"cond_stage_model.transformer." + k: v for k, v in te_state.items()})
        te_cfgs = {"text_encoder": clip_config(te_kind)}
        te_models = {"text_encoder": te}
    assert infer_diffusers_model_type(state) == kind, infer_diffusers_model_type(state)
    # The files ship in half precision (sd_xl_base_1.0, v1-5-pruned-emaonly.safetensors' fp16
    # siblings, v2-1_768-ema-pruned): the loaders must not care, so the manifest says F16.
    tensors = {k: {"dtype": "F16", "shape": list(v.shape)} for k, v in sorted(state.items())}
    te_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act",
               "projection_dim", "vocab_size", "max_position_embeddings", "layer_norm_eps", "bos_token_id",
               "eos_token_id", "pad_token_id")
    payload = {
        "architecture": kind,
        "source": "diffusers conversion script on the real-size model (meta device); configs as from_single_file",
        "tensors": tensors,
        # The tensors each diffusers/transformers model has (names and shapes): what a
        # conversion must produce. Transformers 5 names CLIPTextModel's without `text_model.`.
        "diffusers": {
            name: {k: list(v.shape) for k, v in sorted(model.state_dict().items())}
            for name, model in {"unet": unet, "vae": vae, **te_models}.items()
        },
        "configs": {
            "unet": unet_full_config(unet_cfg),
            "vae": vae_full_config(vae_cfg),
            **{name: {k: getattr(cfg, k) for k in te_keys} for name, cfg in te_cfgs.items()},
            "scheduler": SCHEDULERS[kind],
        },
    }
    dst.write_bytes(zlib.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), 9))


def unet_full_config(cfg: dict) -> dict:
    with torch.device("meta"):
        model = UNet2DConditionModel(**cfg)
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def vae_full_config(cfg: dict) -> dict:
    with torch.device("meta"):
        model = AutoencoderKL(**cfg)
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--diffusers-scripts", type=Path, required=True,
                        help="folder with diffusers' scripts/convert_diffusers_to_original_*.py (v0.40.0)")
    args = parser.parse_args()
    check_scripts(args.diffusers_scripts)
    torch.set_num_threads(1)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    for folder in (OUT, REFS):
        if folder.exists():
            shutil.rmtree(folder)
    (OUT / "configs").mkdir(parents=True)
    (OUT / "refuse").mkdir()
    (OUT / "manifests").mkdir()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sdxl_script = "convert_diffusers_to_original_sdxl.py"
        sd_script = "convert_diffusers_to_original_stable_diffusion.py"

        # SDXL, in f16 as SDXL checkpoints are published. The f32 file from the same folder is
        # checked here (not committed): from_single_file(config=) gives the folder's latents.
        folder = sdxl_tiny_pipeline(tmp)
        config_copy(folder, OUT / "configs" / "sdxl_tiny")
        run_script(args.diffusers_scripts, sdxl_script, folder, tmp / "sdxl_tiny.safetensors", half=False)
        run_script(args.diffusers_scripts, sdxl_script, folder, OUT / "sdxl_tiny.f16.safetensors", half=True)
        reference_folder = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
        reference_folder.set_progress_bar_config(disable=True)
        components = ["unet", "vae", "text_encoder", "text_encoder_2"]
        pipe = sdxl_from_single_file(tmp / "sdxl_tiny.safetensors", OUT / "configs" / "sdxl_tiny")
        same_weights(pipe, reference_folder, components, exact=True)
        with torch.no_grad():
            kwargs = dict(prompt=PROMPT, num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
                          output_type="latent")
            a = reference_folder(generator=torch.Generator("cpu").manual_seed(42), **kwargs).images
            b = pipe(generator=torch.Generator("cpu").manual_seed(42), **kwargs).images
        assert rel_l2(b, a) < 1e-6, rel_l2(b, a)
        pipe = sdxl_from_single_file(OUT / "sdxl_tiny.f16.safetensors", OUT / "configs" / "sdxl_tiny")
        same_weights(pipe, reference_folder, components, exact=False)
        record_sdxl("sdxl_tiny.f16", pipe, ["txt2img_cfg5_zero_neg", "txt2img_cfg7_neg", "img2img"], meta,
                    {"file": "single_file/sdxl_tiny.f16.safetensors", "config": "single_file/configs/sdxl_tiny"})

        # SD 1.5: f32 from the script, and the EMA/extra-keys variant in bf16.
        folder = sd15_tiny_pipeline(tmp)
        config_copy(folder, OUT / "configs" / "sd15_tiny")
        run_script(args.diffusers_scripts, sd_script, folder, OUT / "sd15_tiny.safetensors", half=False)
        ema_variant(OUT / "sd15_tiny.safetensors", OUT / "sd15_tiny.ema_bf16.safetensors")
        reference_folder = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                                   requires_safety_checker=False)
        sd_runs = {
            "txt2img_euler": dict(mode="txt2img", steps=4, cfg=6.0, seed=99, width=64, height=64, sampler="euler"),
            "img2img_euler": dict(mode="img2img", steps=4, cfg=6.0, seed=12, width=64, height=64, strength=0.75,
                                  sampler="euler"),
        }
        for file, exact, runs in (("sd15_tiny.safetensors", True, sd_runs),
                                  ("sd15_tiny.ema_bf16.safetensors", False,
                                   {"txt2img_euler": sd_runs["txt2img_euler"]})):
            pipe = sd_from_single_file(OUT / file, OUT / "configs" / "sd15_tiny")
            if exact:
                same_weights(pipe, reference_folder, ["unet", "vae", "text_encoder"], True)
            record_sd(file.removesuffix(".safetensors"), pipe, runs, meta,
                      {"file": f"single_file/{file}", "config": "single_file/configs/sd15_tiny"})
        # The bf16 file loads the non-EMA weights: its UNet is the bf16 rounding of the folder's.
        pipe = sd_from_single_file(OUT / "sd15_tiny.ema_bf16.safetensors", OUT / "configs" / "sd15_tiny")
        for key, value in reference_folder.unet.state_dict().items():
            assert torch.equal(pipe.unet.state_dict()[key], value.to(torch.bfloat16).float()), key

        # SD 2.x 768-v: v-prediction, written in f16 by the script.
        folder = sd2v_tiny_pipeline(tmp)
        config_copy(folder, OUT / "configs" / "sd2v_tiny")
        run_script(args.diffusers_scripts, sd_script, folder, OUT / "sd2v_tiny.f16.safetensors", half=True)
        pipe = sd_from_single_file(OUT / "sd2v_tiny.f16.safetensors", OUT / "configs" / "sd2v_tiny")
        assert pipe.scheduler.config.prediction_type == "v_prediction"
        same_weights(pipe, StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                                   requires_safety_checker=False),
                     ["unet", "vae", "text_encoder"], False)
        record_sd("sd2v_tiny.f16", pipe, {
            "txt2img_default": dict(mode="txt2img", steps=4, cfg=6.0, seed=7, width=64, height=64, sampler="default"),
            "txt2img_euler": dict(mode="txt2img", steps=4, cfg=6.0, seed=99, width=64, height=64, sampler="euler"),
        }, meta, {"file": "single_file/sd2v_tiny.f16.safetensors", "config": "single_file/configs/sd2v_tiny"})

        # A VAE to swap in.
        (OUT / "vae").mkdir()
        record_vae_override(override_vae(args.diffusers_scripts, OUT / "vae"), meta)

        # Files that must be refused before any work.
        refuse = OUT / "refuse"
        flux_like(refuse / "flux_like.safetensors")
        sd3_like(refuse / "sd3_like.safetensors")
        micro = micro_sd15_folder(tmp, "micro_inpaint", 9)
        run_script(args.diffusers_scripts, sd_script, micro, refuse / "sd15_inpainting_9ch.safetensors", half=True)
        assert infer_diffusers_model_type(load_file(refuse / "sd15_inpainting_9ch.safetensors")) == "inpainting"
        refiner_like(args.diffusers_scripts, refuse / "sdxl_refiner_like.safetensors")
        micro = micro_sd15_folder(tmp, "micro_sd15", 4)
        run_script(args.diffusers_scripts, sd_script, micro, tmp / "micro_sd15.safetensors", half=True)
        truncate(tmp / "micro_sd15.safetensors", refuse / "sd15_truncated.safetensors", 0.6)

    for kind, name in (("xl_base", "sdxl_base"), ("v1", "sd15"), ("v2", "sd21_768_v")):
        manifest(args.diffusers_scripts, kind, OUT / "manifests" / f"{name}.json.zz")
    (OUT / "versions.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
