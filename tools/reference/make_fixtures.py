#!/usr/bin/env python3
"""Writes the diffusion test fixtures: tiny pipelines saved by diffusers itself and the outputs
diffusers/transformers compute for them. The cargo tests (tests/it/diffusion.rs) compare ours
against these files.

Run from the repository root with the pinned environment (tools/reference/requirements.txt):

    python tools/reference/make_fixtures.py --clip-bpe PATH/bpe_simple_vocab_16e6.txt.gz

The CLIP BPE file ships in the PyPI wheel of open-clip-torch (`pip download open-clip-torch
--no-deps`, then unzip `open_clip/bpe_simple_vocab_16e6.txt.gz`). No network access to the
Hugging Face hub is needed: every model is built from a config with random weights.

Output (tests/fixtures/diffusion/):
  tokenizer_clip/          the real CLIP vocabulary (49 408 entries) as hub repos ship it
  sdxl_tiny/               SDXL, 2 UNet levels   (diffusers folder layout)
  sdxl_tiny_3lvl/          SDXL, 3 UNet levels, transformer_layers_per_block > 1
  sd15_tiny/               SD 1.5 layout
  init.png                 64x64 img2img source
  tokens.json              token ids for tricky prompts (real vocab + each tiny tokenizer)
  refs/<pipeline>/*.safetensors + meta.json   recorded outputs
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

OUT = Path("tests/fixtures/diffusion")

# Prompts whose tokenisation is easy to get wrong.
TRICKY_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "Hello, World!!! (masterpiece:1.2), [best] {quality} -- 8k/uhd; 3.14159 & 42%",
    "Café naïve résumé façade Ångström ÉCOLE",
    "Cafe\u0301 with a decomposed accent",
    "日本語のテキスト 🐱🚀 emoji ✨",
    "  multiple   spaces\tand\nnew\r\nlines  ",
    "don't it's we'll they're I'm you've she'd DON'T",
    "a<|endoftext|>b <|startoftext|> c",
    "snake_case CamelCase hyphen-ated under__score x86-64 H.R. Giger",
    " ".join(f"word{i} alpha, beta" for i in range(40)),  # > 77 tokens
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(bpe_path: Path, merge_count: int | None) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary built exactly as openai/CLIP's SimpleTokenizer builds it; with
    `merge_count`, only the first merges (a smaller but self-consistent tokenizer)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    if merge_count is not None:
        merges = merges[:merge_count]
    pairs = [tuple(m.split()) for m in merges]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(p) for p in pairs]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, [" ".join(p) for p in pairs]


def added_token(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def write_tokenizer_folder(folder: Path, vocab: dict[str, int], merges: list[str], pad: str) -> None:
    """A tokenizer folder as the SDXL hub repos ship it: no tokenizer.json."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "add_prefix_space": False,
        "bos_token": added_token("<|startoftext|>"),
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": added_token("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad if pad == "!" else added_token(pad),
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added_token("<|endoftext|>"),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {
        "bos_token": added_token("<|startoftext|>"),
        "eos_token": added_token("<|endoftext|>"),
        "pad_token": pad,
        "unk_token": added_token("<|endoftext|>"),
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def token_record(tokenizer: CLIPTokenizer) -> dict:
    padded = [tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids for p in TRICKY_PROMPTS]
    full = [tokenizer(p, truncation=False).input_ids for p in TRICKY_PROMPTS]
    return {"padded_77": padded, "untruncated": full, "pad_token_id": tokenizer.pad_token_id}


def text_config(vocab_size: int, hidden: int, layers: int, heads: int, act: str, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        # As the SDXL repos ship them: legacy ids, so the pooled token is found by argmax(ids).
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def tiny_vae(blocks: tuple[int, ...], scaling: float, force_upcast: bool) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling,
        force_upcast=force_upcast,
    )


def sdxl_scheduler_config() -> dict:
    # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    return dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def build_sdxl(name: str, vocab: dict, merges: list[str], three_levels: bool) -> Path:
    folder = OUT / name
    torch.manual_seed(1 if three_levels else 0)
    te1_cfg = text_config(len(vocab), 16, 3, 2, "quick_gelu", 16)
    te2_cfg = text_config(len(vocab), 24, 3, 2, "gelu", 16)
    text_encoder = CLIPTextModel(te1_cfg)
    text_encoder_2 = CLIPTextModelWithProjection(te2_cfg)
    cross = te1_cfg.hidden_size + te2_cfg.hidden_size
    if three_levels:
        unet_cfg = dict(
            block_out_channels=(8, 16, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2),
            attention_head_dim=(1, 2, 4),
        )
        vae_blocks = (8, 16, 16)
    else:
        unet_cfg = dict(
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(1, 2),
        )
        vae_blocks = (8, 16)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        norm_num_groups=4,
        cross_attention_dim=cross,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + te2_cfg.projection_dim,
        **unet_cfg,
    )
    vae = tiny_vae(vae_blocks, 0.13025, True)
    scheduler = EulerDiscreteScheduler(**sdxl_scheduler_config())
    tmp_tok = OUT / "_tmp_tok"
    write_tokenizer_folder(tmp_tok / "1", vocab, merges, "<|endoftext|>")
    write_tokenizer_folder(tmp_tok / "2", vocab, merges, "!")
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(tmp_tok / "1"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tmp_tok / "2"),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Tokenizer folders exactly as the hub repos ship them (save_pretrained adds tokenizer.json).
    write_tokenizer_folder(folder / "tokenizer", vocab, merges, "<|endoftext|>")
    write_tokenizer_folder(folder / "tokenizer_2", vocab, merges, "!")
    shutil.rmtree(tmp_tok)
    return folder


def build_sd15(vocab: dict, merges: list[str]) -> Path:
    folder = OUT / "sd15_tiny"
    torch.manual_seed(2)
    te_cfg = text_config(len(vocab), 16, 3, 2, "quick_gelu", 16)
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
        attention_head_dim=4,
        use_linear_projection=False,
    )
    vae = tiny_vae((8, 16), 0.18215, False)
    # runwayml/stable-diffusion-v1-5 ships PNDM; the references run Euler built from it.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    )
    tmp_tok = OUT / "_tmp_tok"
    write_tokenizer_folder(tmp_tok, vocab, merges, "<|endoftext|>")
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tmp_tok),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer_folder(folder / "tokenizer", vocab, merges, "<|endoftext|>")
    shutil.rmtree(tmp_tok)
    return folder


def init_image() -> Image.Image:
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    rgb = np.stack(
        [xs * 4.0, ys * 4.0, 128.0 + 100.0 * np.sin(xs / 5.0) * np.cos(ys / 7.0)], axis=-1
    )
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    img.save(OUT / "init.png")
    return img


def decode_like_pipeline(pipe, latents: torch.Tensor) -> torch.Tensor:
    """What the pipelines do after the loop: latents / scaling_factor -> VAE -> [0, 1]."""
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return (decoded / 2 + 0.5).clamp(0, 1)


def run_pipe(pipe, record: dict, key: str, **kwargs) -> None:
    steps: list[torch.Tensor] = []

    def on_step_end(_pipe, _i, _t, tensors):
        steps.append(tensors["latents"].clone())
        return tensors

    latents = pipe(output_type="latent", callback_on_step_end=on_step_end, **kwargs).images
    image = decode_like_pipeline(pipe, latents)
    record[f"{key}.latents"] = latents
    record[f"{key}.step_latents"] = torch.stack(steps)
    record[f"{key}.image"] = image
    u8 = (image[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    record[f"{key}.image_u8"] = torch.from_numpy(u8.copy())


@torch.no_grad()
def record_sdxl(folder: Path, meta: dict) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}

    # Text encoders alone, one prompt each.
    prompt = "a photo of an astronaut riding a horse on mars"
    ids1 = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids2 = pipe.tokenizer_2(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    o1 = pipe.text_encoder(ids1, output_hidden_states=True)
    o2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
    out["te1.ids"] = ids1
    out["te1.penultimate"] = o1.hidden_states[-2]
    out["te1.last_normed"] = o1.last_hidden_state
    out["te2.ids"] = ids2
    out["te2.penultimate"] = o2.hidden_states[-2]
    out["te2.text_embeds"] = o2.text_embeds

    # encode_prompt: empty negative -> zeros; explicit negative -> encoded.
    pe, npe, ppe, nppe = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True)
    out["encode.prompt_embeds"], out["encode.negative_embeds_zero"] = pe, npe
    out["encode.pooled"], out["encode.negative_pooled_zero"] = ppe, nppe
    _, npe, _, nppe = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True, negative_prompt="blurry, low quality")
    out["encode.negative_embeds"], out["encode.negative_pooled"] = npe, nppe

    # One UNet forward with random inputs (batch 2, as CFG calls it).
    g = torch.Generator("cpu").manual_seed(7)
    cfg = pipe.unet.config
    proj = pipe.text_encoder_2.config.projection_dim
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
    text_embeds = torch.randn(2, proj, generator=g)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [48.0, 40.0, 4.0, 8.0, 64.0, 56.0]])
    timestep = torch.tensor(637.0)
    unet_out = pipe.unet(sample, timestep, ehs, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    out.update({"unet.sample": sample, "unet.encoder_hidden_states": ehs, "unet.text_embeds": text_embeds,
                "unet.time_ids": time_ids, "unet.timestep": timestep.reshape(1), "unet.out": unet_out})
    record_vae(pipe, out)

    img = Image.open(OUT / "init.png").convert("RGB")
    run_pipe(pipe, out, "txt2img_cfg5_zero_neg", prompt=prompt, num_inference_steps=5, guidance_scale=5.0,
             height=64, width=64, generator=torch.Generator("cpu").manual_seed(42))
    runs["txt2img_cfg5_zero_neg"] = dict(mode="txt2img", prompt=prompt, negative="", steps=5, cfg=5.0, seed=42,
                                         width=64, height=64, sampler="default")
    run_pipe(pipe, out, "txt2img_cfg7_neg", prompt=prompt, negative_prompt="blurry, low quality", num_inference_steps=4,
             guidance_scale=7.0, height=64, width=48, generator=torch.Generator("cpu").manual_seed(1234))
    runs["txt2img_cfg7_neg"] = dict(mode="txt2img", prompt=prompt, negative="blurry, low quality", steps=4, cfg=7.0,
                                    seed=1234, width=48, height=64, sampler="default")
    run_pipe(pipe, out, "txt2img_cfg1", prompt="a red cube", num_inference_steps=3, guidance_scale=1.0,
             height=64, width=64, generator=torch.Generator("cpu").manual_seed(3))
    runs["txt2img_cfg1"] = dict(mode="txt2img", prompt="a red cube", negative="", steps=3, cfg=1.0, seed=3,
                                width=64, height=64, sampler="default")

    default_scheduler = pipe.scheduler
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(default_scheduler.config)
    run_pipe(pipe, out, "txt2img_euler_a", prompt=prompt, num_inference_steps=4, guidance_scale=5.0,
             height=64, width=64, generator=torch.Generator("cpu").manual_seed(5))
    runs["txt2img_euler_a"] = dict(mode="txt2img", prompt=prompt, negative="", steps=4, cfg=5.0, seed=5,
                                   width=64, height=64, sampler="euler_a")
    pipe.scheduler = default_scheduler

    i2i = StableDiffusionXLImg2ImgPipeline(**pipe.components, requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    i2i.set_progress_bar_config(disable=True)
    run_pipe(i2i, out, "img2img", prompt=prompt, image=img, strength=0.6, num_inference_steps=5, guidance_scale=5.0,
             generator=torch.Generator("cpu").manual_seed(11))
    runs["img2img"] = dict(mode="img2img", prompt=prompt, negative="", steps=5, cfg=5.0, seed=11, width=64,
                           height=64, strength=0.6, sampler="default")

    save(folder.name, out, runs, meta)


def record_vae(pipe, out: dict) -> None:
    g = torch.Generator("cpu").manual_seed(9)
    z = torch.randn(1, 4, 8, 8, generator=g)
    out["vae.z"] = z
    out["vae.decoded"] = pipe.vae.decode(z, return_dict=False)[0]
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    dist = pipe.vae.encode(x).latent_dist
    out["vae.x"] = x
    out["vae.mean"] = dist.mean
    out["vae.std"] = dist.std


@torch.no_grad()
def record_sd15(folder: Path, meta: dict) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    prompt = "a watercolor fox in the snow"
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out["te1.ids"] = ids
    out["te1.last_normed"] = pipe.text_encoder(ids)[0]
    pe, npe = pipe.encode_prompt(prompt, "cpu", 1, True)
    out["encode.prompt_embeds"], out["encode.negative_embeds_empty"] = pe, npe

    g = torch.Generator("cpu").manual_seed(7)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    timestep = torch.tensor(421.0)
    out.update({"unet.sample": sample, "unet.encoder_hidden_states": ehs, "unet.timestep": timestep.reshape(1),
                "unet.out": pipe.unet(sample, timestep, ehs).sample})
    record_vae(pipe, out)

    run_pipe(pipe, out, "txt2img_euler", prompt=prompt, num_inference_steps=4, guidance_scale=6.0, height=64,
             width=64, generator=torch.Generator("cpu").manual_seed(99))
    runs["txt2img_euler"] = dict(mode="txt2img", prompt=prompt, negative="", steps=4, cfg=6.0, seed=99, width=64,
                                 height=64, sampler="euler")
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    img = Image.open(OUT / "init.png").convert("RGB")
    run_pipe(i2i, out, "img2img_euler", prompt=prompt, image=img, strength=0.75, num_inference_steps=4,
             guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(12))
    runs["img2img_euler"] = dict(mode="img2img", prompt=prompt, negative="", steps=4, cfg=6.0, seed=12, width=64,
                                 height=64, strength=0.75, sampler="euler")
    save(folder.name, out, runs, meta)


def save(name: str, tensors: dict[str, torch.Tensor], runs: dict, meta: dict) -> None:
    folder = OUT / "refs" / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "reference.safetensors")
    (folder / "runs.json").write_text(json.dumps({"runs": runs, **meta}, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip-bpe", type=Path, required=True, help="bpe_simple_vocab_16e6.txt.gz from open-clip-torch")
    parser.add_argument("--tiny-merges", type=int, default=1000, help="merges kept for the tiny pipelines' tokenizers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}

    full_vocab, full_merges = clip_vocab_and_merges(args.clip_bpe, None)
    assert len(full_vocab) == 49408, len(full_vocab)
    write_tokenizer_folder(OUT / "tokenizer_clip", full_vocab, full_merges, "<|endoftext|>")
    tiny_vocab, tiny_merges = clip_vocab_and_merges(args.clip_bpe, args.tiny_merges)

    init_image()
    sdxl2 = build_sdxl("sdxl_tiny", tiny_vocab, tiny_merges, three_levels=False)
    sdxl3 = build_sdxl("sdxl_tiny_3lvl", tiny_vocab, tiny_merges, three_levels=True)
    sd15 = build_sd15(tiny_vocab, tiny_merges)

    tokens = {
        "prompts": TRICKY_PROMPTS,
        "tokenizer_clip": token_record(CLIPTokenizer.from_pretrained(OUT / "tokenizer_clip")),
        "sdxl_tiny/tokenizer": token_record(CLIPTokenizer.from_pretrained(sdxl2 / "tokenizer")),
        "sdxl_tiny/tokenizer_2": token_record(CLIPTokenizer.from_pretrained(sdxl2 / "tokenizer_2")),
        **meta,
    }
    (OUT / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False, indent=1), encoding="utf-8")

    record_sdxl(sdxl2, meta)
    record_sdxl(sdxl3, meta)
    record_sd15(sd15, meta)


if __name__ == "__main__":
    main()
