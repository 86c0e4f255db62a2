#!/usr/bin/env python3
"""LoRA fixtures (issue 11, item 3): two LoRAs made with peft on the tiny SDXL pipeline, saved in
the names diffusers/peft write and in kohya's names, and the latents diffusers computes with them
fused (`load_lora_weights` + `fuse_lora(lora_scale=w)`), on the diffusers folder and on the
single-file checkpoint. tests/it compares ours against these files.

Run from the repository root with the pinned environment (tools/reference/requirements.txt),
after make_fixtures.py and make_single_file_refs.py:

    python tools/reference/make_lora_refs.py

The LoRAs are random (peft `init_lora_weights=False`, then each up matrix scaled so that
|w·ΔW| is about a quarter of |W|): a test of loading and merging, not of training.

  lora_a   rank 4, alpha 4. UNet: attention (to_q/k/v/out.0), feed-forward, proj_in/proj_out and,
           as LoCon, every ResnetBlock2D layer (conv1, conv2, conv_shortcut, time_emb_proj) and the
           down/upsampler convs; both text encoders (q/k/v/out_proj, fc1, fc2).
  lora_b   rank 2, alpha 1 (scale 0.5). UNet attention only; text encoder 1 only.

Files (tests/fixtures/diffusion/lora/), all f16:
  lora_a.peft.safetensors         StableDiffusionXLPipeline.save_lora_weights: `unet.<module>.lora_A.weight`,
                                  `text_encoder.text_model.…`, `text_encoder_2.text_model.…`
  lora_a.kohya_sgm.safetensors    kohya sd-scripts' SDXL names: `lora_unet_input_blocks_4_1_…`
                                  (the original UNet's module paths), `lora_te1_…`, `lora_te2_…`,
                                  `.lora_down/.lora_up/.alpha`
  lora_b.peft.safetensors         as lora_a, with the LoRA configs in the `lora_adapter_metadata`
                                  header entry (alpha ≠ rank needs them)
  lora_b.kohya.safetensors        diffusers' convert_state_dict_to_kohya (diffusers block names:
                                  `lora_unet_down_blocks_1_attentions_0_…`), `.alpha` = 1
and tests/fixtures/diffusion/refs/lora/{reference.safetensors,runs.json}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import diffusers
import peft
import transformers
from diffusers import StableDiffusionXLPipeline
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures  # noqa: E402
import make_single_file_refs as single_file  # noqa: E402

FIXTURES = Path("tests/fixtures/diffusion")
OUT = FIXTURES / "lora"
REFS = FIXTURES / "refs" / "lora"
FOLDER = FIXTURES / "sdxl_tiny_3lvl"
SINGLE_FILE = FIXTURES / "single_file" / "sdxl_tiny.f16.safetensors"
SINGLE_FILE_CONFIG = FIXTURES / "single_file" / "configs" / "sdxl_tiny"
PROMPT = "a photo of an astronaut riding a horse on mars"

UNET_A = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
          "conv_shortcut", "time_emb_proj", "conv"]
UNET_B = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def folder_pipe() -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(FOLDER, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def single_file_pipe() -> StableDiffusionXLPipeline:
    return single_file.sdxl_from_single_file(SINGLE_FILE, SINGLE_FILE_CONFIG)


def scale_up_matrices(model, adapter: str, fraction: float) -> None:
    """Scale each lora_B so |(alpha/r)·B·A| ≈ fraction·|W| (random init is far larger)."""
    for module in model.modules():
        if not hasattr(module, "lora_A") or adapter not in module.lora_A:
            continue
        a = module.lora_A[adapter].weight
        b = module.lora_B[adapter].weight
        delta = (b.flatten(1) @ a.flatten(1)) * module.scaling[adapter]
        base = module.get_base_layer().weight
        with torch.no_grad():
            b.mul_(fraction * base.norm() / delta.norm().clamp_min(1e-12))


def make_lora(seed: int, adapter: str, rank: int, alpha: int, unet_targets: list[str], te2: bool):
    torch.manual_seed(seed)
    pipe = folder_pipe()
    unet_cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=unet_targets, init_lora_weights=False)
    te_cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TEXT, init_lora_weights=False)
    pipe.unet.add_adapter(unet_cfg, adapter_name=adapter)
    pipe.text_encoder.add_adapter(te_cfg, adapter_name=adapter)
    encoders = [pipe.unet, pipe.text_encoder]
    if te2:
        pipe.text_encoder_2.add_adapter(te_cfg, adapter_name=adapter)
        encoders.append(pipe.text_encoder_2)
    for model in encoders:
        scale_up_matrices(model, adapter, 0.25)

    def state(model) -> dict[str, torch.Tensor]:
        found = get_peft_model_state_dict(model, adapter_name=adapter)
        # transformers 5 saves CLIPTextModel without its `text_model.` level; LoRAs in the wild
        # (and CLIPTextModelWithProjection) have it.
        return {k if k.startswith("text_model.") else "text_model." + k: v.half() for k, v in found.items()}

    unet = {k: v.half() for k, v in get_peft_model_state_dict(pipe.unet, adapter_name=adapter).items()}
    te1 = state(pipe.text_encoder)
    te2_state = state(pipe.text_encoder_2) if te2 else None
    return unet, te1, te2_state, unet_cfg, te_cfg


def adapter_metadata(cfg: LoraConfig) -> dict:
    """LoraConfig.to_dict with its sets as sorted lists (a set's order changes between runs)."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in cfg.to_dict().items()}


def save_peft(path: Path, unet, te1, te2, unet_cfg, te_cfg, with_metadata: bool) -> None:
    kwargs = {}
    if with_metadata:
        kwargs = dict(unet_lora_adapter_metadata=adapter_metadata(unet_cfg),
                      text_encoder_lora_adapter_metadata=adapter_metadata(te_cfg))
        if te2 is not None:
            kwargs["text_encoder_2_lora_adapter_metadata"] = adapter_metadata(te_cfg)
    StableDiffusionXLPipeline.save_lora_weights(path.parent, unet_lora_layers=unet, text_encoder_lora_layers=te1,
                                                text_encoder_2_lora_layers=te2, weight_name=path.name, **kwargs)


def sgm_module_names(diffusers_modules: list[str]) -> dict[str, str]:
    """Module paths of the original (sgm) SDXL UNet, by diffusers' own conversion script's table."""
    script = single_file.import_script(Path(SCRIPTS), "convert_diffusers_to_original_sdxl.py")
    probe = {m + ".weight": torch.empty(0) for m in diffusers_modules}
    probe.update({hf: torch.empty(0) for _, hf in script.unet_conversion_map if hf not in probe})  # it expects them
    converted = script.convert_unet_state_dict(probe)
    by_tensor = {id(v): k for k, v in converted.items()}
    return {m: by_tensor[id(probe[m + ".weight"])].removesuffix(".weight") for m in diffusers_modules}


def save_kohya_sgm(path: Path, unet, te1, te2, alpha: float) -> None:
    """kohya sd-scripts' SDXL LoRA names: `lora_unet_` + the sgm module path with `.`→`_`;
    `lora_te1_`/`lora_te2_` + the transformers module path; lora_down = A, lora_up = B."""
    out: dict[str, torch.Tensor] = {}
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in unet})
    sgm = sgm_module_names(modules)

    def put(name: str, module: str, source: dict) -> None:
        out[f"{name}.lora_down.weight"] = source[f"{module}.lora_A.weight"]
        out[f"{name}.lora_up.weight"] = source[f"{module}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)

    for module in modules:
        put("lora_unet_" + sgm[module].replace(".", "_"), module, unet)
    for prefix, source in (("lora_te1_", te1), ("lora_te2_", te2 or {})):
        for module in sorted({k.rsplit(".lora_", 1)[0] for k in source}):
            put(prefix + module.replace(".", "_"), module, source)
    save_file(out, path)


def save_kohya_diffusers_names(path: Path, unet, te1, alpha: float) -> None:
    full = {**{"unet." + k: v for k, v in unet.items()}, **{"text_encoder." + k: v for k, v in te1.items()}}
    kohya = convert_state_dict_to_kohya(full)
    for key in kohya:
        if key.endswith(".alpha"):
            kohya[key] = torch.tensor(alpha, dtype=torch.float16)  # it writes the rank there
    save_file(kohya, path)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@torch.no_grad()
def run(pipe, record: dict | None, key: str) -> torch.Tensor:
    out: dict[str, torch.Tensor] = {}
    make_fixtures.run_pipe(pipe, out, key, prompt=PROMPT, num_inference_steps=4, guidance_scale=5.0, height=64,
                           width=64, generator=torch.Generator("cpu").manual_seed(42))
    if record is not None:  # the VAE is untouched by a LoRA: latents (and how many steps) are enough
        record.update({k: v for k, v in out.items() if k.endswith("latents")})
    return out[f"{key}.latents"]


def with_loras(make_pipe, loras: list[tuple[Path, float]]):
    """Each LoRA fused into the weights at its own scale, then its layers unloaded (the fused
    weights stay): loading a second adapter would otherwise unmerge the first."""
    pipe = make_pipe()
    for index, (path, weight) in enumerate(loras):
        name = f"l{index}"
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.fuse_lora(lora_scale=weight, adapter_names=[name])
        pipe.unload_lora_weights()
    return pipe


def check_fused_deltas(make_pipe, path: Path, unet, te1, te2, scaling: float, weight: float) -> None:
    """Every module of the LoRA moved by exactly weight·(alpha/r)·B·A (diffusers really loaded it)."""
    plain = make_pipe()
    fused = with_loras(make_pipe, [(path, weight)])
    for model_name, source in (("unet", unet), ("text_encoder", te1), ("text_encoder_2", te2 or {})):
        before = getattr(plain, model_name).state_dict()
        after = getattr(fused, model_name).state_dict()
        for module in sorted({k.rsplit(".lora_", 1)[0] for k in source}):
            w = module + ".weight"
            if w not in before:  # transformers 5's CLIPTextModel has no `text_model.` level
                w = module.removeprefix("text_model.") + ".weight"
            a = source[f"{module}.lora_A.weight"].float()
            b = source[f"{module}.lora_B.weight"].float()
            expected = (weight * scaling * (b.flatten(1) @ a.flatten(1))).reshape(before[w].shape)
            got = after[w] - before[w]
            assert rel_l2(got, expected) < 1e-5, (path.name, model_name, w, rel_l2(got, expected))


SCRIPTS = ""


def main() -> None:
    global SCRIPTS
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--diffusers-scripts", type=Path, required=True,
                        help="folder with diffusers' scripts/convert_diffusers_to_original_sdxl.py (v0.40.0)")
    args = parser.parse_args()
    single_file.check_scripts(args.diffusers_scripts)
    SCRIPTS = str(args.diffusers_scripts)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    REFS.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}

    a_unet, a_te1, a_te2, a_ucfg, a_tcfg = make_lora(21, "a", 4, 4, UNET_A, te2=True)
    save_peft(OUT / "lora_a.peft.safetensors", a_unet, a_te1, a_te2, a_ucfg, a_tcfg, with_metadata=False)
    save_kohya_sgm(OUT / "lora_a.kohya_sgm.safetensors", a_unet, a_te1, a_te2, alpha=4.0)
    b_unet, b_te1, _, b_ucfg, b_tcfg = make_lora(22, "b", 2, 1, UNET_B, te2=False)
    save_peft(OUT / "lora_b.peft.safetensors", b_unet, b_te1, None, b_ucfg, b_tcfg, with_metadata=True)
    save_kohya_diffusers_names(OUT / "lora_b.kohya.safetensors", b_unet, b_te1, alpha=1.0)

    # diffusers loads every file completely: each module moves by w·(alpha/r)·B·A.
    for path, unet, te1, te2, scaling in (
        (OUT / "lora_a.peft.safetensors", a_unet, a_te1, a_te2, 1.0),
        (OUT / "lora_a.kohya_sgm.safetensors", a_unet, a_te1, a_te2, 1.0),
        (OUT / "lora_b.peft.safetensors", b_unet, b_te1, None, 0.5),
        (OUT / "lora_b.kohya.safetensors", b_unet, b_te1, None, 0.5),
    ):
        check_fused_deltas(folder_pipe, path, unet, te1, te2, scaling, 0.8)

    record: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    base_run = dict(mode="txt2img", prompt=PROMPT, negative="", steps=4, cfg=5.0, seed=42, width=64, height=64,
                    sampler="default")
    cases = {
        "a_0.8": [("lora_a", 0.8)],
        "a_0.8_b_-0.5": [("lora_a", 0.8), ("lora_b", -0.5)],
    }
    files = {"peft": {"lora_a": "lora_a.peft.safetensors", "lora_b": "lora_b.peft.safetensors"},
             "kohya": {"lora_a": "lora_a.kohya_sgm.safetensors", "lora_b": "lora_b.kohya.safetensors"}}
    for base_name, make_pipe, model in (("folder", folder_pipe, "sdxl_tiny_3lvl"),
                                        ("single_file", single_file_pipe, "single_file/sdxl_tiny.f16.safetensors")):
        plain = run(make_pipe(), record, f"{base_name}/none")
        runs[f"{base_name}/none"] = dict(base_run, model=model, loras=[])
        for case, loras in cases.items():
            key = f"{base_name}/{case}"
            peft_pipe = with_loras(make_pipe, [(OUT / files["peft"][n], w) for n, w in loras])
            latents = run(peft_pipe, record, key)
            kohya = run(with_loras(make_pipe, [(OUT / files["kohya"][n], w) for n, w in loras]), None, key)
            assert rel_l2(kohya, latents) < 1e-5, (key, rel_l2(kohya, latents))
            assert rel_l2(latents, plain) > 0.05, (key, "the LoRA barely changes the result")
            if base_name == "folder" and case == "a_0.8":
                pe, _, pooled, _ = peft_pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=True)
                record[f"{key}.prompt_embeds"], record[f"{key}.pooled"] = pe, pooled
            runs[key] = dict(base_run, model=model, loras=[
                {"name": n, "weight": w, "files": {fmt: files[fmt][n] for fmt in files}} for n, w in loras])
        # Unfused, weighted adapters give the same as fusing one by one.
        pipe = make_pipe()
        for name, _ in cases["a_0.8_b_-0.5"]:
            pipe.load_lora_weights(str(OUT / files["peft"][name]), adapter_name=name)
        pipe.set_adapters(["lora_a", "lora_b"], adapter_weights=[0.8, -0.5])
        unfused = run(pipe, None, "x")
        fused = record[f"{base_name}/a_0.8_b_-0.5.latents"]
        assert rel_l2(unfused, fused) < 1e-4, rel_l2(unfused, fused)

    save_file({k: v.contiguous() for k, v in record.items()}, REFS / "reference.safetensors")
    (REFS / "runs.json").write_text(json.dumps({"runs": runs, **meta}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
