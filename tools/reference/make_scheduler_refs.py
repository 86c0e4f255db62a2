#!/usr/bin/env python3
"""Records diffusers' scheduler behaviour for imagelab's sampler tests.

Writes tests/fixtures/schedulers/:
  configs/*.json          the scheduler configs used (SDXL base, SDXL-Turbo, a v-prediction one)
  schedules.json          timesteps, sigmas and init_noise_sigma for steps 1..50,
                          per config and sampler
  trajectories.json       per trajectory: steps, seed, start index, file keys
  trajectories.safetensors  model outputs fed in, scaled inputs, step outputs (txt2img and
                          img2img, every UNet call), add_noise results
  rng.json                torch.randn(n, generator=manual_seed(seed)) for the noise tests

Run with the pinned versions of tools/reference/requirements.txt (CPU torch):
  python tools/reference/make_scheduler_refs.py
"""

import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "schedulers"

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (public).
SDXL = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
# stabilityai/sdxl-turbo scheduler/scheduler_config.json (public).
TURBO = dict(SDXL, **{
    "_class_name": "EulerAncestralDiscreteScheduler",
    "_diffusers_version": "0.24.0.dev0",
    "timestep_spacing": "trailing",
})
# A v-prediction SDXL fine-tune with zero-terminal-SNR betas and linspace spacing.
VPRED = dict(SDXL, **{
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "linspace",
})
# Edge cases of the config keys the fine-tunes use: EDM-style continuous timesteps,
# log-linear interpolation, sigma_min final sigma, v-prediction.
EDGE_VPRED = dict(SDXL, **{
    "prediction_type": "v_prediction",
    "interpolation_type": "log_linear",
    "final_sigmas_type": "sigma_min",
    "timestep_type": "continuous",
    "timestep_spacing": "trailing",
})
# Cosine betas, sample prediction, DDIM's clipping and alpha-to-one, a log-SNR clip.
EDGE_COSINE = {
    "_class_name": "DDIMScheduler",
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "sample",
    "timestep_spacing": "linspace",
    "clip_sample": True,
    "set_alpha_to_one": True,
    "lambda_min_clipped": -5.1,
}
CONFIGS = {"sdxl": SDXL, "turbo": TURBO, "vpred": VPRED, "edge_vpred": EDGE_VPRED,
           "edge_cosine": EDGE_COSINE}

# CLI name -> (class, overrides), as imagelab's `build` maps them.
SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "euler_exponential": (EulerDiscreteScheduler, {"use_exponential_sigmas": True}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler,
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "solver_order": 2,
                         "use_karras_sigmas": True}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler,
                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "dpmpp_sde_karras": (DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "unipc_3": (UniPCMultistepScheduler, {"solver_order": 3}),
    "unipc_karras": (UniPCMultistepScheduler, {"use_karras_sigmas": True}),
    "lms_karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
}
# Which samplers each config exercises (schedules, trajectories) and at which step counts.
MAIN = ["euler", "euler_karras", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_karras",
        "dpmpp_sde_karras", "lms", "ddim", "unipc"]
PLAN = {
    "sdxl": (MAIN, range(1, 51), list(SAMPLERS)),
    "turbo": (MAIN, range(1, 51), list(SAMPLERS)),
    "vpred": (MAIN, range(1, 51), list(SAMPLERS)),
    "edge_vpred": (["euler", "dpmpp_2m", "unipc", "heun", "lms"], [1, 2, 3, 7, 20],
                   ["euler", "dpmpp_2m", "unipc", "heun", "lms"]),
    "edge_cosine": (["ddim", "dpmpp_2m_karras", "euler_exponential", "unipc_karras",
                     "lms_karras", "dpmpp_3m"], [1, 2, 3, 7, 20],
                    ["ddim", "dpmpp_2m_karras", "euler_exponential", "unipc_karras",
                     "lms_karras", "dpmpp_3m"]),
}

SHAPE = (1, 4, 5, 5)  # 100 values: exercises torch's n % 16 != 0 tail in randn.


def make(config, sampler, steps):
    cls, overrides = SAMPLERS[sampler]
    scheduler = cls.from_config(config, **overrides)
    scheduler.set_timesteps(steps)
    return scheduler


def f32_list(tensor_or_array):
    values = np.asarray(tensor_or_array, dtype=np.float64).ravel()
    return [float(v) for v in values]


def schedules():
    out = {}
    for name, config in CONFIGS.items():
        out[name] = {}
        samplers, step_counts, _ = PLAN[name]
        for sampler in samplers:
            entries = []
            for steps in step_counts:
                s = make(config, sampler, steps)
                sigmas = getattr(s, "sigmas", None)
                entries.append({
                    "steps": steps,
                    "timesteps": f32_list(s.timesteps.double()),
                    "sigmas": [] if sampler == "ddim" else
                    [float(np.float32(v)) for v in sigmas.numpy().ravel()],
                    "init_noise_sigma": float(s.init_noise_sigma),
                    "order": int(s.order),
                })
            out[name][sampler] = entries
    return out


def accepts_generator(scheduler):
    return "generator" in inspect.signature(scheduler.step).parameters


def patch_sde_noise(scheduler, generator):
    """DPMSolverSDE draws Brownian-tree noise; feed it the generator's noise in imagelab's
    order instead, so the deterministic part of the step is compared exactly."""
    if isinstance(scheduler, DPMSolverSDEScheduler):
        scheduler.noise_sampler = lambda sigma, sigma_next: torch.randn(
            SHAPE, generator=generator, dtype=torch.float32)


def trajectories():
    tensors = {}
    meta = []
    data_gen = torch.Generator().manual_seed(1234)
    for name, config in CONFIGS.items():
        for sampler in PLAN[name][2]:
            for mode, steps, strength in (("txt2img", 7, None), ("img2img", 8, 0.6),
                                           ("turbo1", 1, None)):
                if mode == "turbo1" and name != "turbo":
                    continue
                key = f"{name}.{sampler}.{mode}"
                s = make(config, sampler, steps)
                seed = 2**32 + 77 if mode == "img2img" else 42
                gen = torch.Generator().manual_seed(seed)
                patch_sde_noise(s, gen)
                noise = torch.randn(SHAPE, generator=data_gen)
                if mode == "img2img":
                    init_timestep = min(int(steps * strength), steps)
                    t_start = max(steps - init_timestep, 0)
                    start = t_start * s.order
                    if hasattr(s, "set_begin_index"):
                        s.set_begin_index(start)
                    original = torch.randn(SHAPE, generator=data_gen) * 0.8
                    latent_timestep = s.timesteps[start:start + 1]
                    x = s.add_noise(original, noise, latent_timestep)
                    tensors[f"{key}.original"] = original
                    tensors[f"{key}.noise"] = noise
                    tensors[f"{key}.noised"] = x.clone()
                else:
                    start = 0
                    # Index-based stepping, as imagelab's API does; diffusers' timestep lookup
                    # would pick the second of repeated timesteps (cosine + Karras repeats 998).
                    if hasattr(s, "set_begin_index"):
                        s.set_begin_index(0)
                    tensors[f"{key}.noise"] = noise
                    x = noise * s.init_noise_sigma
                timesteps = s.timesteps[start:]
                for i, t in enumerate(timesteps):
                    index = start + i
                    scaled = s.scale_model_input(x, t)
                    model_output = torch.randn(SHAPE, generator=data_gen)
                    kwargs = {"generator": gen} if accepts_generator(s) else {}
                    x = s.step(model_output, t, x, **kwargs).prev_sample
                    tensors[f"{key}.scaled.{index}"] = scaled.float().clone().contiguous()
                    tensors[f"{key}.model_output.{index}"] = model_output
                    tensors[f"{key}.out.{index}"] = x.float().clone().contiguous()
                meta.append({"key": key, "config": name, "sampler": sampler, "mode": mode,
                             "steps": steps, "strength": strength, "seed": seed,
                             "start_index": start, "calls": len(timesteps)})
    return tensors, meta


def rng():
    out = []
    for seed in (0, 1, 42, 123456789, 2**32 + 5, 2**63 - 25):
        for n in list(range(1, 41)) + [100, 4 * 128 * 128]:
            values = torch.randn(n, generator=torch.Generator().manual_seed(seed)).double()
            entry = {"seed": seed, "n": n}
            if n <= 100:
                entry["values"] = f32_list(values)
            else:
                entry["sample_every"] = 997
                entry["values"] = f32_list(values[::997])
                entry["tail"] = f32_list(values[-40:])
                entry["sum"] = float(values.sum())
            out.append(entry)
    # Consecutive small draws share torch's cached second Box-Muller value.
    g = torch.Generator().manual_seed(7)
    consecutive = [f32_list(torch.randn(n, generator=g)) for n in (3, 3, 1, 20, 5)]
    return {"single": out, "consecutive": {"seed": 7, "lengths": [3, 3, 1, 20, 5],
                                           "values": consecutive}}


def main():
    (OUT / "configs").mkdir(parents=True, exist_ok=True)
    for name, config in CONFIGS.items():
        (OUT / "configs" / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    (OUT / "schedules.json").write_text(json.dumps(schedules(), separators=(",", ":")))
    tensors, meta = trajectories()
    save_file(tensors, str(OUT / "trajectories.safetensors"))
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    import diffusers
    versions["diffusers"] = diffusers.__version__
    (OUT / "trajectories.json").write_text(json.dumps({"versions": versions, "shape": SHAPE,
                                                       "trajectories": meta}, indent=1))
    (OUT / "rng.json").write_text(json.dumps(rng(), separators=(",", ":")))


if __name__ == "__main__":
    main()
