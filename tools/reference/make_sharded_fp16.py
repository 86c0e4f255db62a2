#!/usr/bin/env python3
"""A sharded fp16 variant as diffusers and transformers write it, and what diffusers makes from it.

`save_pretrained(variant="fp16", max_shard_size=...)` on the tiny SDXL fixture's UNet (diffusers)
and second text encoder (transformers) writes `<stem>.fp16-0000N-of-0000M.safetensors` shards and
a `<stem>.safetensors.index.fp16.json` index. Those files are the fixture; the rest of the
pipeline is tests/fixtures/diffusion/sdxl_tiny. diffusers then loads the assembled folder with
`variant="fp16"` in float32 and generates one image: the reference imagelab's loader must match
(tests/it/diffusion.rs, `sharded_fp16_variant_loads_like_diffusers`).

Run from the repository root with the pinned environment (tools/reference/requirements.txt):

    python tools/reference/make_sharded_fp16.py

Output: tests/fixtures/diffusion/sdxl_tiny_sharded_fp16/{unet,text_encoder_2}/ (the weight files
and index only) and refs/sdxl_tiny_sharded_fp16.safetensors (`image_u8`, HWC).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModelWithProjection

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "tests/fixtures/diffusion/sdxl_tiny"
OUT = ROOT / "tests/fixtures/diffusion/sdxl_tiny_sharded_fp16"
REF = ROOT / "tests/fixtures/diffusion/refs/sdxl_tiny_sharded_fp16.safetensors"


def keep_weights_only(folder: Path) -> None:
    """The component's config is the base fixture's; only weights and the index are kept."""
    for file in folder.iterdir():
        if file.name == "config.json":
            file.unlink()


@torch.no_grad()
def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    unet = UNet2DConditionModel.from_pretrained(BASE / "unet").to(torch.float16)
    unet.save_pretrained(OUT / "unet", variant="fp16", max_shard_size="200KB")
    encoder = CLIPTextModelWithProjection.from_pretrained(BASE / "text_encoder_2").to(torch.float16)
    encoder.save_pretrained(OUT / "text_encoder_2", variant="fp16", max_shard_size="60KB")
    for component in ("unet", "text_encoder_2"):
        keep_weights_only(OUT / component)
        print(component, sorted(f.name for f in (OUT / component).iterdir()))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipeline"
        shutil.copytree(BASE, folder)
        (folder / "unet/diffusion_pytorch_model.safetensors").unlink()
        (folder / "text_encoder_2/model.safetensors").unlink()
        for component in ("unet", "text_encoder_2"):
            for file in (OUT / component).iterdir():
                shutil.copy(file, folder / component / file.name)
        pipe = StableDiffusionXLPipeline.from_pretrained(
            folder, variant="fp16", torch_dtype=torch.float32, add_watermarker=False
        )
        assert pipe.unet.dtype == torch.float32
        image = pipe(
            prompt="a red cube",
            num_inference_steps=3,
            guidance_scale=1.0,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(3),
            output_type="np",
        ).images[0]
    u8 = (image * 255).round().astype("uint8")
    save_file({"image_u8": torch.from_numpy(u8.copy())}, REF)
    print(f"wrote {OUT} and {REF}")


if __name__ == "__main__":
    main()
