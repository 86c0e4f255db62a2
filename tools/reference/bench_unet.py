#!/usr/bin/env python3
"""Bench counterpart of `examples/bench_unet.rs`: writes a UNet with SDXL base 1.0's exact
architecture (config below, random weights — nothing is downloaded) with `save_pretrained`, then
times diffusers' batch-2 forward (one CFG step) on the CPU. Run both on the same machine, one
after the other, and record both outputs with the commands in docs/PERFORMANCE.md.

    python tools/reference/bench_unet.py --out /tmp/sdxl_unet --size 512 --calls 3
    cargo run --release --example bench_unet -- /tmp/sdxl_unet 512 3

`--tiny` writes the 2-level test UNet's architecture instead (a smoke test of the tooling).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (architecture fields).
SDXL_BASE = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
TINY = dict(
    sample_size=32, layers_per_block=2, block_out_channels=[8, 16],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2], attention_head_dim=[1, 2], cross_attention_dim=40,
    use_linear_projection=True, norm_num_groups=4, addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=64,
)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    config = TINY if args.tiny else SDXL_BASE
    if not (args.out / "config.json").exists():
        torch.manual_seed(0)
        UNet2DConditionModel(**config).save_pretrained(args.out, safe_serialization=True)
    unet = UNet2DConditionModel.from_pretrained(args.out).eval()
    latent = args.size // 8
    cross = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    sample = torch.randn(2, 4, latent, latent)
    context = torch.randn(2, 77, cross)
    cond = {"text_embeds": torch.randn(2, pooled), "time_ids": torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * 2, dtype=torch.float32)}
    step_s = []
    for _ in range(args.calls):
        started = time.perf_counter()
        unet(sample, torch.tensor(500.0), context, added_cond_kwargs=cond)
        step_s.append(time.perf_counter() - started)
    print(json.dumps({"impl": "diffusers", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "size": args.size, "batch": 2, "step_s": step_s}))


if __name__ == "__main__":
    main()
