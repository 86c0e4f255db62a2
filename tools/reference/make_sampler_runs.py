#!/usr/bin/env python3
"""Records diffusers' final latents for every sampler (issue 4), txt2img and img2img, on the tiny
pipelines that make_fixtures.py committed. tests/it/sampler_pipeline.rs runs ours on the same
settings and compares.

Run from the repository root with the pinned environment (tools/reference/requirements.txt),
after make_fixtures.py (it reads tests/fixtures/diffusion/{sdxl_tiny,sd15_tiny,init.png}):

    python tools/reference/make_sampler_runs.py

Each sampler is built as REFERENCE §4 says: `Class.from_config(pipe.scheduler.config, **overrides)`.
DPM++ SDE Karras is left out: its Brownian-tree noise (torchsde) has no counterpart in ours.

Output (tests/fixtures/diffusion/refs/):
  sampler_runs.safetensors   "<pipeline>/<mode>/<sampler>" -> final latents (output_type="latent")
  sampler_runs.json          the settings of every run, keyed the same way, plus versions
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)

FIXTURES = Path("tests/fixtures/diffusion")

# CLI name -> (class, from_config overrides); None = the class the config names.
SAMPLERS: dict[str, tuple[type | None, dict]] = {
    "default": (None, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "lms": (LMSDiscreteScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}

STEPS = 6
CFG = 5.0
STRENGTH = 0.6


@torch.no_grad()
def record(name: str, txt_cls, i2i_cls, prompt: str, skip: set[str], out: dict, runs: dict) -> None:
    folder = FIXTURES / name
    if txt_cls is StableDiffusionXLPipeline:
        txt = txt_cls.from_pretrained(folder, add_watermarker=False)
        i2i = i2i_cls(**txt.components, requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    else:
        txt = txt_cls.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
        i2i = i2i_cls(**txt.components, requires_safety_checker=False)
    txt.set_progress_bar_config(disable=True)
    i2i.set_progress_bar_config(disable=True)
    base_config = txt.scheduler.config
    init = Image.open(FIXTURES / "init.png").convert("RGB")
    for index, (sampler, (cls, overrides)) in enumerate(SAMPLERS.items()):
        if sampler in skip:
            continue
        for mode, pipe in (("txt2img", txt), ("img2img", i2i)):
            scheduler = txt.scheduler.__class__ if cls is None else cls
            pipe.scheduler = scheduler.from_config(base_config, **overrides)
            seed = 100 + 10 * index + (mode == "img2img")
            kwargs = dict(prompt=prompt, num_inference_steps=STEPS, guidance_scale=CFG, output_type="latent",
                          generator=torch.Generator("cpu").manual_seed(seed))
            settings = dict(pipeline=name, mode=mode, sampler=sampler, prompt=prompt, negative="", steps=STEPS,
                            cfg=CFG, seed=seed, width=64, height=64,
                            scheduler_class=pipe.scheduler.__class__.__name__)
            if mode == "img2img":
                kwargs.update(image=init, strength=STRENGTH)
                settings["strength"] = STRENGTH
            else:
                kwargs.update(height=64, width=64)
            key = f"{name}/{mode}/{sampler}"
            out[key] = pipe(**kwargs).images.contiguous()
            runs[key] = settings
            print(key, settings["scheduler_class"], float(out[key].norm()))


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, torch.Tensor] = {}
    runs: dict[str, dict] = {}
    record("sdxl_tiny", StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline,
           "a photo of an astronaut riding a horse on mars", set(), out, runs)
    # sd15_tiny's config names PNDM, which we do not implement: its "default" is not recorded.
    record("sd15_tiny", StableDiffusionPipeline, StableDiffusionImg2ImgPipeline,
           "a watercolor fox in the snow", {"default"}, out, runs)
    refs = FIXTURES / "refs"
    save_file(out, refs / "sampler_runs.safetensors")
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    (refs / "sampler_runs.json").write_text(json.dumps({"runs": runs, **meta}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
