#!/usr/bin/env python3
"""Bench counterpart of `examples/bench_unet.rs`: writes a UNet with SDXL base 1.0's exact
architecture (config below, random weights — nothing is downloaded) with `save_pretrained`, and
the SDXL VAE likewise when `--vae` is given, then times on the CPU, in this order: the UNet load,
diffusers' batch-2 forward (one CFG step) `--calls` times per size, the VAE load and the decode
of one image per size. Prints one JSON line with the same fields as the Rust side.
`scripts/bench-cpu` runs both alternately and prints them side by side.

    python tools/reference/bench_unet.py --out /tmp/sdxl_unet --vae /tmp/sdxl_vae --sizes 256,512 --calls 3
    cargo run --release --example bench_unet -- /tmp/sdxl_unet 256,512 3 cpu f32 /tmp/sdxl_vae

`--write-only` writes the folders (if missing) and exits. `--tiny` writes the 2-level test UNet's
architecture instead (a smoke test of the tooling). Threads: torch's default (the physical
cores), or `--threads`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_gpu import SDXL_VAE  # noqa: E402  (the SDXL VAE config the GPU bench writes too)

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


def status_mib(field: str) -> float | None:
    """A line of /proc/self/status (VmHWM, VmRSS) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def write_models(args: argparse.Namespace) -> None:
    if not (args.out / "config.json").exists():
        torch.manual_seed(0)
        UNet2DConditionModel(**(TINY if args.tiny else SDXL_BASE)).save_pretrained(args.out, safe_serialization=True)
        gc.collect()
    if args.vae is not None and not (args.vae / "config.json").exists():
        torch.manual_seed(1)
        AutoencoderKL(**SDXL_VAE).save_pretrained(args.vae, safe_serialization=True)
        gc.collect()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="UNet folder (written if missing)")
    parser.add_argument("--vae", type=Path, help="VAE folder (written if missing); times the decode")
    parser.add_argument("--sizes", default="512", help="comma-separated image sides, e.g. 256,512")
    parser.add_argument("--size", type=int, help="one size (older spelling of --sizes)")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args()
    sizes = [args.size] if args.size else [int(side) for side in args.sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    write_models(args)
    if args.write_only:
        return

    started = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(args.out).eval()
    load_s = time.perf_counter() - started
    rss = [{"after": "unet load", "mib": status_mib("VmRSS:")}]
    cross = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    per_size = []
    for size in sizes:
        latent = size // 8
        sample = torch.randn(2, 4, latent, latent)
        context = torch.randn(2, 77, cross)
        ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)
        cond = {"text_embeds": torch.randn(2, pooled), "time_ids": ids}
        step_s = []
        for _ in range(args.calls):
            started = time.perf_counter()
            unet(sample, torch.tensor(500.0), context, added_cond_kwargs=cond)
            step_s.append(time.perf_counter() - started)
        rss.append({"after": f"unet {size}", "mib": status_mib("VmRSS:")})
        per_size.append({"size": size, "step_s": step_s})
    del unet
    gc.collect()

    vae = None
    if args.vae is not None:
        started = time.perf_counter()
        model = AutoencoderKL.from_pretrained(args.vae).eval()
        vae_load_s = time.perf_counter() - started
        decodes = []
        for size in sizes:
            latents = torch.randn(1, model.config.latent_channels, size // 8, size // 8)
            started = time.perf_counter()
            model.decode(latents)
            decodes.append({"size": size, "decode_s": time.perf_counter() - started})
        rss.append({"after": "vae", "mib": status_mib("VmRSS:")})
        vae = {"load_s": vae_load_s, "decodes": decodes}

    print(json.dumps({
        "impl": "diffusers", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": "cpu", "dtype": "F32", "batch": 2, "load_s": load_s, "sizes": per_size,
        "vae": vae, "rss_mib": rss, "peak_rss_mib": status_mib("VmHWM:"),
    }))


if __name__ == "__main__":
    main()
