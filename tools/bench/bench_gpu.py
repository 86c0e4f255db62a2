#!/usr/bin/env python3
"""imagelab against diffusers on the same random SDXL weights, in one run (scripts/bench-gpu).

Creates an SDXL pipeline folder with random weights (`--arch sdxl`: the real SDXL base 1.0
architecture, 2.6 B UNet parameters; `--arch tiny`: the test fixtures' tiny architecture), then
times, one after the other in this process, diffusers (StableDiffusionXLPipeline, PyTorch SDPA)
and the imagelab binary on it: same prompt, size, steps, CFG, sampler (Euler) and seeds. For
every batch size it records the denoising loop's it/s, seconds per image including the VAE
decode, model load time and peak memory, and the relative L2 distance between imagelab's and
diffusers' final latents (same weights, same seeds). Writes bench.json and bench.md to --out.

Memory: on CUDA the device's used memory (NVML) is sampled every 20 ms while each side runs,
minus what was in use before it started; on the CPU the peak resident set (VmHWM) of the process
that did the work: this process for diffusers (its high-water mark reset before loading), the
imagelab process sampled every 20 ms (rusage is useless here: a child forked from this large
process inherits its high-water mark).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "diffusion"
SCHEMA = "imagelab-bench-gpu/1"
PROMPT = "a photograph of an astronaut riding a horse, detailed, golden hour"
NEGATIVE = "blurry, low quality"

# stabilityai/stable-diffusion-xl-base-1.0, architecture fields of each component's config.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    norm_num_groups=32, sample_size=1024, scaling_factor=0.13025,
    # As madebyollin/sdxl-vae-fp16-fix ships it: the VAE runs in the pipeline's dtype.
    force_upcast=False,
)
SDXL_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
SDXL_TEXT_2 = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
    num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
)


def log(message: str) -> None:
    print(f"bench-gpu: {message}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- the model folder --------------------------------------------------------------------------

def component_configs(arch: str) -> dict:
    if arch == "sdxl":
        return {"unet": SDXL_UNET, "vae": SDXL_VAE, "text_encoder": SDXL_TEXT, "text_encoder_2": SDXL_TEXT_2}
    # The committed tiny fixture's architecture (its configs as diffusers/transformers wrote them).
    tiny = FIXTURES / "sdxl_tiny"
    out = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        config = json.loads((tiny / name / "config.json").read_text())
        out[name] = {k: v for k, v in config.items() if not k.startswith("_")}
    return out


def write_tokenizer(src: Path, dst: Path, pad: str) -> None:
    dst.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["pad_token"] = pad
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


@torch.no_grad()
def create_model(folder: Path, arch: str, dtype: torch.dtype, device: str) -> dict:
    """Random weights (torch's default initialisation, seed 0) in `dtype`, saved with
    save_pretrained in the diffusers folder layout imagelab and diffusers both read."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    started = time.perf_counter()
    configs = component_configs(arch)
    torch.manual_seed(0)
    build = {
        "unet": lambda c: UNet2DConditionModel(**c),
        "vae": lambda c: AutoencoderKL(**c),
        "text_encoder": lambda c: CLIPTextModel(CLIPTextConfig(**c)),
        "text_encoder_2": lambda c: CLIPTextModelWithProjection(CLIPTextConfig(**c)),
    }
    for name, config in configs.items():
        with torch.device(device):
            model = build[name](config)
        model.to(dtype).save_pretrained(folder / name, safe_serialization=True)
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if arch == "sdxl":
        write_tokenizer(FIXTURES / "tokenizer_clip", folder / "tokenizer", "<|endoftext|>")
        write_tokenizer(FIXTURES / "tokenizer_clip", folder / "tokenizer_2", "!")
    else:
        for name in ("tokenizer", "tokenizer_2"):
            shutil.copytree(FIXTURES / "sdxl_tiny" / name, folder / name)
    shutil.copytree(FIXTURES / "sdxl_tiny" / "scheduler", folder / "scheduler")
    shutil.copy(FIXTURES / "sdxl_tiny" / "model_index.json", folder / "model_index.json")
    size = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    return {"arch": arch, "create_s": round(time.perf_counter() - started, 2), "weights_bytes": size}


# --- memory --------------------------------------------------------------------------------------

class GpuMemory:
    """Peak device memory in use while a block runs, minus what was in use before (NVML)."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.peak = 0
        self.base = 0
        self.running = False
        self.thread: threading.Thread | None = None

    def used(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def __enter__(self) -> "GpuMemory":
        self.base = self.used()
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.used())
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join()
        self.peak = max(self.peak, self.used())

    def mib(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def vm_hwm_mib(pid: int | str = "self") -> float | None:
    """The peak resident set of a process (VmHWM), None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def reset_self_hwm() -> None:
    """Resets this process's VmHWM (Linux ≥ 4.0), so diffusers' peak excludes model creation."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class ChildPeak:
    """Samples a child's VmHWM every 20 ms until it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while True:
            value = vm_hwm_mib(self.pid)
            if value is None:
                return
            self.peak = max(self.peak, value)
            time.sleep(0.02)


# --- diffusers ------------------------------------------------------------------------------------

@torch.no_grad()
def run_diffusers(folder: Path, args, dtype: torch.dtype) -> tuple[dict, dict]:
    from diffusers import StableDiffusionXLPipeline

    cuda = args.device.startswith("cuda")
    memory = GpuMemory(args.gpu_index) if cuda else None
    if memory:
        memory.__enter__()
    gc.collect()
    reset_self_hwm()
    started = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, dtype=dtype)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    sync(args.device)
    load_s = time.perf_counter() - started

    def generate(batch: int, steps: int):
        marks: list[float] = []
        final: dict = {}

        def on_step_end(_pipe, _index, _timestep, tensors):
            sync(args.device)
            marks.append(time.perf_counter())
            final["latents"] = tensors["latents"]
            return tensors

        generators = [torch.Generator("cpu").manual_seed(args.seed + i) for i in range(batch)]
        sync(args.device)
        begin = time.perf_counter()
        pipe(
            prompt=[PROMPT] * batch, negative_prompt=[NEGATIVE] * batch,
            height=args.size, width=args.size, num_inference_steps=steps,
            guidance_scale=args.cfg, generator=generators, output_type="np",
            callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
        )
        sync(args.device)
        end = time.perf_counter()
        return begin, marks, end, final["latents"].float().cpu()

    # Warm-up (kernel selection, allocator): two steps, not recorded.
    generate(1, 2)
    runs = []
    latents = {}
    for batch in args.batches:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        begin, marks, end, final = generate(batch, args.steps)
        loop_s = marks[-1] - marks[0]
        run = {
            "batch": batch,
            "it_per_s": round((len(marks) - 1) / loop_s, 3) if loop_s > 0 else None,
            "s_per_image": round((end - begin) / batch, 3),
            "decode_s": round(end - marks[-1], 3),
        }
        if cuda:
            run["torch_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        runs.append(run)
        latents[batch] = final.numpy() / pipe.vae.config.scaling_factor
        log(f"diffusers batch {batch}: {run}")
    del pipe
    gc.collect()
    if memory:
        torch.cuda.empty_cache()
        memory.__exit__()
        peak, kind = memory.mib(), "gpu_nvml_used_delta"
    else:
        peak, kind = vm_hwm_mib(), "host_peak_rss"
    for run in runs:
        run["peak_mem_mib"], run["mem_kind"] = peak, kind
    result = {
        "version": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "attention": "PyTorch SDPA (scaled_dot_product_attention)",
        "load_s": round(load_s, 3),
        "runs": runs,
    }
    return result, latents


# --- imagelab -------------------------------------------------------------------------------------

def read_latent(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path))["latent_tensor"].astype(np.float32)


def run_imagelab(folder: Path, args, work: Path, attention: str, batch: int) -> tuple[dict, list[np.ndarray]]:
    out_dir = work / f"imagelab-{attention}-{batch}"
    command = [
        str(args.binary), "generate", "--model", str(folder), "--prompt", PROMPT, "--negative", NEGATIVE,
        "--width", str(args.size), "--height", str(args.size), "--steps", str(args.steps),
        "--cfg", str(args.cfg), "--seed", str(args.seed), "--batch", str(batch), "--scheduler", "euler",
        "--device", args.device, "--dtype", args.dtype, "--out", str(out_dir), "--save-latent", "--json",
    ]
    env = dict(os.environ, IMAGELAB_BACKEND="candle")
    if attention != "auto":
        env["IMAGELAB_ATTENTION"] = attention
    memory = GpuMemory(args.gpu_index) if args.device.startswith("cuda") else None
    if memory:
        memory.__enter__()
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    host_peak = ChildPeak(child.pid)
    stdout, stderr = child.communicate()
    wall_s = time.perf_counter() - started
    host_peak.thread.join()
    if memory:
        memory.__exit__()
    if child.returncode != 0:
        raise SystemExit(f"imagelab failed ({child.returncode}): {' '.join(command)}\n{stderr[-4000:]}")
    summary = json.loads(stdout)
    files = summary["files"]
    if len(files) != batch:
        raise SystemExit(f"imagelab wrote {len(files)} images, expected {batch}: {stdout}")
    steps = [s for f in files for s in f["timings"]["steps_s"][1:]]
    load_s = sum(f["timings"]["load_s"] for f in files)
    per_image = [f["timings"]["total_s"] - f["timings"]["load_s"] for f in files]
    run = {
        "attention": attention,
        "batch": batch,
        "load_s": round(load_s, 3),
        "it_per_s": round(len(steps) / sum(steps), 3) if steps and sum(steps) > 0 else None,
        "s_per_image": round(sum(per_image) / batch, 3),
        "decode_s": round(sum(f["timings"]["decode_s"] for f in files) / batch, 3),
        "process_wall_s": round(wall_s, 3),
    }
    run["host_peak_rss_mib"] = host_peak.peak
    if memory:
        run["peak_mem_mib"], run["mem_kind"] = memory.mib(), "gpu_nvml_used_delta"
    else:
        run["peak_mem_mib"], run["mem_kind"] = host_peak.peak, "host_peak_rss"
    # What the engine did differently (e.g. the VAE's f32 fallback) and the device it ran on,
    # from the jobs log the run wrote.
    notes, devices = [], set()
    for log_file in sorted(out_dir.glob("jobs*.log")):
        for line in log_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            devices.add(record.get("device", ""))
            notes += [n for n in record.get("notes", []) if n not in notes]
    run["device"] = ", ".join(sorted(d for d in devices if d))
    if notes:
        run["notes"] = notes
    warnings = [line for line in stderr.splitlines() if "WARN" in line or "warning" in line.lower()]
    if warnings:
        run["stderr_warnings"] = warnings[-10:]
    latents = [read_latent(Path(f["latent"])) for f in files]
    log(f"imagelab {attention} batch {batch}: {run}")
    return run, latents


def rel_l2(ours: np.ndarray, reference: np.ndarray) -> float:
    ours = ours.astype(np.float64).reshape(-1)
    reference = reference.astype(np.float64).reshape(-1)
    norm = np.linalg.norm(reference)
    return float(np.linalg.norm(ours - reference) / norm) if norm > 0 else float("nan")


# --- report ------------------------------------------------------------------------------------------

def device_info(device: str) -> dict:
    info = {"kind": "cuda" if device.startswith("cuda") else "cpu", "host": platform.node(), "cpus": os.cpu_count()}
    if info["kind"] == "cuda":
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info.update(name=props.name, memory_mib=round(props.total_memory / 2**20), capability=f"{props.major}.{props.minor}",
                    cuda_runtime=torch.version.cuda)
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as err:  # noqa: BLE001 - informative only
            info["driver"] = f"unknown ({err})"
    else:
        model = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        info.update(name=model or platform.processor(), torch_threads=torch.get_num_threads())
    return info


def table(report: dict) -> str:
    lines = [
        f"# imagelab vs diffusers — {report['config']['arch']} {report['config']['size']}², "
        f"{report['config']['steps']} steps, CFG {report['config']['cfg']}, {report['config']['dtype']}, "
        f"{report['device'].get('name', '')}",
        "",
        "| implementation | batch | load s | it/s | s/image (with decode) | decode s | peak MiB | latent rel L2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    d = report["diffusers"]
    for run in d["runs"]:
        lines.append(f"| diffusers {d['version']} | {run['batch']} | {d['load_s']} | {run['it_per_s']} | "
                     f"{run['s_per_image']} | {run['decode_s']} | {run['peak_mem_mib']} | — |")
    for run in report["imagelab"]["runs"]:
        l2 = report["latent_rel_l2"].get(f"{run['attention']}/batch{run['batch']}")
        lines.append(f"| imagelab ({run['attention']} attention) | {run['batch']} | {run['load_s']} | {run['it_per_s']} | "
                     f"{run['s_per_image']} | {run['decode_s']} | {run['peak_mem_mib']} | {l2:.2e} |")
    lines += ["", f"Memory: {report['diffusers']['runs'][0]['mem_kind']}. imagelab's batch runs images one after "
              "another (CFG batch 2 each); diffusers batches them in one UNet call.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", type=Path, required=True, help="the imagelab executable")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.json and bench.md")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--arch", choices=["sdxl", "tiny"], default=None, help="default: sdxl on cuda, tiny on cpu")
    parser.add_argument("--size", type=int, default=None, help="pixels (default 1024 on cuda, 64 on cpu)")
    parser.add_argument("--steps", type=int, default=None, help="default 30 on cuda, 4 on cpu")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,4 on cuda, 1,2 on cpu)")
    parser.add_argument("--dtype", choices=["f16", "bf16", "f32"], default=None, help="default f16 on cuda, f32 on cpu")
    parser.add_argument("--attention", default="auto", help="comma-separated imagelab variants: auto, flash, chunked, naive")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench-gpu: --device cuda but torch sees no GPU")
    args.arch = args.arch or ("sdxl" if cuda else "tiny")
    args.size = args.size or (1024 if cuda else 64)
    args.steps = args.steps or (30 if cuda else 4)
    args.dtype = args.dtype or ("f16" if cuda else "f32")
    args.batches = [int(b) for b in (args.batches or ("1,4" if cuda else "1,2")).split(",")]
    args.gpu_index = (torch.device(args.device).index or 0) if cuda else 0
    if args.size % 8 or args.steps < 2 or min(args.batches) < 1:
        raise SystemExit("bench-gpu: --size must be a multiple of 8, --steps >= 2, batches >= 1")
    if not args.binary.is_file():
        raise SystemExit(f"bench-gpu: no imagelab binary at {args.binary}")
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    if not cuda:
        # The dry run's models are tiny: one thread avoids OpenMP spin-waiting on a busy machine.
        torch.set_num_threads(1)

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="imagelab-bench-"))
    folder = work / "model"
    try:
        if folder.exists():
            shutil.rmtree(folder)
        log(f"creating the {args.arch} model with random {args.dtype} weights in {folder}")
        model = create_model(folder, args.arch, dtype, args.device)
        log(f"model: {model}")
        diffusers_result, reference = run_diffusers(folder, args, dtype)
        imagelab_runs, rel = [], {}
        for attention in [a.strip() for a in args.attention.split(",") if a.strip()]:
            for batch in args.batches:
                run, latents = run_imagelab(folder, args, work, attention, batch)
                imagelab_runs.append(run)
                rel[f"{attention}/batch{batch}"] = max(
                    rel_l2(ours, reference[batch][i : i + 1]) for i, ours in enumerate(latents)
                )
        report = {
            "schema": SCHEMA,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_info(args.device),
            "config": {
                "arch": args.arch, "size": args.size, "steps": args.steps, "cfg": args.cfg, "seed": args.seed,
                "dtype": args.dtype, "batches": args.batches, "sampler": "euler", "prompt": PROMPT, "negative": NEGATIVE,
            },
            "model": model,
            "diffusers": diffusers_result,
            "imagelab": {"binary": str(args.binary), "runs": imagelab_runs},
            "latent_rel_l2": rel,
        }
        (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        text = table(report)
        (args.out / "bench.md").write_text(text)
        print(text)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
