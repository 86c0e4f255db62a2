#!/usr/bin/env python3
"""An outside client against `imagelab serve`: the `webuiapi` package (the Python client of
AUTOMATIC1111's API), unmodified, doing what issue 17 asks of an A1111-compatible server —
list models and samplers, txt2img, img2img, read progress (with a live preview) and interrupt.

    imagelab serve --backend mock --port 7860 &      # IMAGELAB_MOCK_STEP_MS=20 makes progress visible
    python tools/webuiapi/check_a1111.py --port 7860

Prints one line per check and exits non-zero at the first failure. Pinned in requirements.txt
beside this file (`scripts/webuiapi-env` makes a venv with them).
"""

import argparse
import base64
import io
import sys
import threading
import time

import webuiapi
from PIL import Image

checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


def wait_for_sampling(api, timeout_s=30.0):
    """Polls /progress until a job is sampling; returns that progress answer."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] > 0:
            return progress
        time.sleep(0.02)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--long-steps", type=int, default=60,
                        help="steps of the runs that progress and interrupt watch")
    args = parser.parse_args()

    api = webuiapi.WebUIApi(host=args.host, port=args.port, username=args.username,
                            password=args.password)

    models = api.util_get_model_names()
    check("SDXL Base 1.0" in models and "SDXL Turbo" in models,
          f"sd-models lists the catalog ({len(models)} models)")
    samplers = api.util_get_sampler_names()
    check({"Euler a", "Euler", "DPM++ 2M", "UniPC"} <= set(samplers),
          f"samplers: {', '.join(samplers)}")
    schedulers = api.util_get_scheduler_names()
    check({"automatic", "karras"} <= set(schedulers), f"schedulers: {', '.join(schedulers)}")
    check(api.util_get_current_model() == "SDXL Base 1.0", "options name the current model")
    api.util_set_model("SDXL Turbo", find_closest=False)
    check(api.util_get_current_model() == "SDXL Turbo", "set_options switches the model")

    size = args.size
    result = api.txt2img(prompt="a lighthouse at dawn", negative_prompt="blurry", seed=42,
                         steps=args.steps, cfg_scale=5.0, width=size, height=size,
                         sampler_name="DPM++ 2M", scheduler="Karras", batch_size=2)
    check(len(result.images) == 2 and result.images[0].size == (size, size),
          f"txt2img returns 2 images of {size}x{size}")
    check(result.info["all_seeds"] == [42, 43], f"info all_seeds {result.info['all_seeds']}")
    check(result.info["sd_model_name"] == "SDXL Turbo", "the set model ran")
    check(result.info["sampler_name"] == "DPM++ 2M"
          and result.info["extra_generation_params"].get("Schedule type") == "Karras",
          "sampler and schedule type reported as A1111 does")
    infotext = result.images[0].info.get("parameters", "")
    check("Seed: 42" in infotext and "Sampler: DPM++ 2M" in infotext,
          "the PNG carries A1111 infotext: " + infotext.splitlines()[-1][:80])
    check(result.parameters["prompt"] == "a lighthouse at dawn"
          and result.parameters["steps"] == args.steps, "parameters echo the request")

    img2img = api.img2img(images=[result.image], prompt="the same lighthouse at night",
                          denoising_strength=0.5, seed=7, steps=args.steps, width=size,
                          height=size, sampler_name="Euler a")
    check(len(img2img.images) == 1 and img2img.images[0].size == (size, size),
          "img2img returns an image")
    check(img2img.info["denoising_strength"] == 0.5 and "Denoising strength: 0.5"
          in img2img.images[0].info.get("parameters", ""), "img2img strength recorded")

    idle = api.get_progress()
    check(idle["progress"] == 0 and idle["state"]["job_count"] == 0, "progress is idle")

    outcome = {}

    def long_run(key, batch):
        outcome[key] = api.txt2img(prompt=f"a long {key} run", seed=1, steps=args.long_steps,
                                   width=size, height=size, batch_size=batch)

    runner = threading.Thread(target=long_run, args=("progress", 1))
    runner.start()
    progress = wait_for_sampling(api)
    check(progress is not None and 0 < progress["progress"] < 1,
          f"progress while sampling: {progress and round(progress['progress'], 3)}, "
          f"step {progress and progress['state']['sampling_step']}"
          f"/{progress and progress['state']['sampling_steps']}")
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    check(preview.size[0] > 0, f"current_image is a {preview.size[0]}x{preview.size[1]} PNG")
    runner.join(timeout=120)
    check(len(outcome["progress"].images) == 1, "the watched run finished")

    runner = threading.Thread(target=long_run, args=("interrupted", 3))
    runner.start()
    check(wait_for_sampling(api) is not None, "a 3-image run is sampling")
    check(api.interrupt() == {}, "interrupt answers {}")
    runner.join(timeout=60)
    check(not runner.is_alive(), "the interrupted request returned")
    got = len(outcome["interrupted"].images)
    check(got < 3, f"the interrupted run stopped early ({got} of 3 images)")
    check(outcome["interrupted"].info["imagelab"]["state"] == "cancelled",
          "info says the job was cancelled")

    print(f"webuiapi {getattr(webuiapi, '__version__', '')} against imagelab: "
          f"{checks} checks passed", flush=True)


if __name__ == "__main__":
    main()
