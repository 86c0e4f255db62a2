#!/usr/bin/env python3
"""Metadata fixtures for tests/it/metadata.rs: other tools' PNGs, and what outside readers see
in ours.

Run from the repository root with the pinned environment (requirements.txt next to this file),
after `cargo test --test it write_imagelab_fixtures -- --ignored` has written our own PNGs:

    python tools/reference/metadata/make_samples.py

1. Writes tiny PNGs exactly the way each tool writes its metadata, with Pillow's
   `PngInfo.add_text` (tEXt when the value is Latin-1, iTXt otherwise), the tools' own chunk
   keywords and value shapes:
   - AUTOMATIC1111: `parameters` = infotext (`create_infotext`: prompt, `Negative prompt:` line,
     `k: v` pairs joined by ", ", values with `,` `:` or a line break JSON-quoted);
   - ComfyUI: `prompt` = json.dumps(API graph), `workflow` = json.dumps(UI graph);
   - InvokeAI: `invokeai_metadata` = json.dumps(core metadata), `invokeai_graph`;
   - Fooocus: `parameters` = json.dumps(sorted dict) + `fooocus_scheme` = "fooocus", or the A1111
     scheme text + `fooocus_scheme` = "a1111".
2. Reads every fixture with Pillow (`Image.open(...).text`) and with `parse_generation_parameters`
   below -- an independent re-implementation of A1111's reader (modules/infotext_utils.py, same
   regex and splitting rules, without its UI defaults) -- and records the results in
   outside_reader.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

OUT = Path("tests/fixtures/metadata")

# A1111's parameter pattern and size pattern (modules/infotext_utils.py).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")


def a1111_quote(text) -> str:
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def a1111_unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(text: str) -> dict[str, str]:
    """A1111's infotext reader: last line holds the parameters only with >= 3 pairs; prompt
    lines until one starts with 'Negative prompt:'; quoted values JSON-decoded; WxH split."""
    result: dict[str, str] = {}
    prompt = ""
    negative = ""
    in_negative = False
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[16:].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    result["Prompt"] = prompt
    result["Negative prompt"] = negative
    for key, value in RE_PARAM.findall(last):
        if not value:
            continue  # A1111 indexes value[0] and skips the pair
        if value[0] == '"' and value[-1] == '"':
            value = a1111_unquote(value)
        size = RE_IMAGESIZE.match(value)
        if size is not None:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)
        else:
            result[key] = value
    return result


def a1111_infotext(prompt: str, negative: str, params: dict) -> str:
    """processing.create_infotext's layout."""
    line = ", ".join(k if k == v else f"{k}: {a1111_quote(v)}" for k, v in params.items() if v is not None)
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{line}"


def save(name: str, chunks: list[tuple[str, str]], size=(8, 8)) -> None:
    info = PngInfo()
    for key, value in chunks:
        info.add_text(key, value)  # tEXt if Latin-1, else iTXt (Pillow's rule)
    image = Image.new("RGB", size, (90, 120, 200))
    image.save(OUT / name, pnginfo=info)


def write_foreign_samples() -> None:
    save(
        "a1111_sdxl_hires.png",
        [
            (
                "parameters",
                a1111_infotext(
                    "masterpiece, best quality, a castle on a hill,\n(golden hour:1.2)",
                    "lowres, bad anatomy, (worst quality:1.4)",
                    {
                        "Steps": 28,
                        "Sampler": "DPM++ 2M",
                        "Schedule type": "Karras",
                        "CFG scale": 6.5,
                        "Seed": 3141592653,
                        "Size": "832x1216",
                        "Model hash": "31e35c80fc",
                        "Model": "sd_xl_base_1.0",
                        "VAE hash": "235745af8d",
                        "VAE": "sdxl_vae.safetensors",
                        "Denoising strength": 0.45,
                        "Hires upscale": 1.5,
                        "Hires steps": 12,
                        "Hires upscaler": "4x-UltraSharp",
                        "Lora hashes": "add_detail: 7bd2ab4e3f1c",
                        "TI hashes": "easynegative: c74b4e810b03",
                        "Emphasis": "Original",
                        "Version": "v1.10.1",
                    },
                ),
            )
        ],
    )
    save(
        "a1111_unicode_itxt.png",
        [
            (
                "parameters",
                a1111_infotext(
                    "桜の木の下の猫, watercolor",
                    "",
                    {
                        "Steps": 20,
                        "Sampler": "Euler a",
                        "Schedule type": "Automatic",
                        "CFG scale": 7,
                        "Seed": 12345,
                        "Size": "1024x1024",
                        "Model": "animagine-xl-4.0",
                        "Denoising strength": 0.55,
                        "RNG": "CPU",
                        "Version": "v1.10.1",
                    },
                ),
            )
        ],
    )
    comfy_prompt = {
        "3": {"inputs": {"seed": 1122334455, "steps": 25, "cfg": 7.0, "sampler_name": "dpmpp_2m",
                         "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                         "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
              "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
              "class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"}},
        "5": {"inputs": {"width": 1024, "height": 1024, "batch_size": 1},
              "class_type": "EmptyLatentImage", "_meta": {"title": "Empty Latent Image"}},
        "6": {"inputs": {"text": "a red fox in the snow, detailed fur", "clip": ["4", 1]},
              "class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "7": {"inputs": {"text": "blurry, watermark", "clip": ["4", 1]},
              "class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
              "_meta": {"title": "VAE Decode"}},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
              "class_type": "SaveImage", "_meta": {"title": "Save Image"}},
    }
    comfy_workflow = {"last_node_id": 9, "last_link_id": 9, "nodes": [], "links": [], "version": 0.4}
    save("comfyui_sdxl.png", [("prompt", json.dumps(comfy_prompt)), ("workflow", json.dumps(comfy_workflow))])
    invoke_meta = {
        "generation_mode": "sdxl_txt2img", "positive_prompt": "a cozy cabin in the woods",
        "negative_prompt": "people", "width": 1216, "height": 832, "seed": 2024,
        "rand_device": "cpu", "cfg_scale": 6.0, "cfg_rescale_multiplier": 0.0, "steps": 30,
        "scheduler": "euler_a",
        "model": {"key": "0f0e4d7c", "hash": "blake3:1f2e", "name": "Juggernaut XL v9",
                  "base": "sdxl", "type": "main"},
        "positive_style_prompt": "a cozy cabin in the woods", "negative_style_prompt": "people",
        "app_version": "5.6.0",
    }
    save("invokeai_sdxl.png", [("invokeai_metadata", json.dumps(invoke_meta)),
                               ("invokeai_graph", json.dumps({"id": "g", "nodes": {}, "edges": []}))])
    fooocus = {
        "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion",
        "base_model_hash": "aeb7e9e689", "full_negative_prompt": ["unrealistic, saturated"],
        "full_prompt": ["a lighthouse", "cinematic still, emotional, harmonious"],
        "guidance_scale": 4.0, "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
        "metadata_scheme": "fooocus", "negative_prompt": "", "performance": "Speed",
        "prompt": "a lighthouse", "prompt_expansion": "", "refiner_model": "None",
        "refiner_switch": 0.5, "resolution": "(1152, 896)", "sampler": "dpmpp_2m",
        "scheduler": "karras", "seed": "7777777", "sharpness": 2.0, "steps": 30,
        "styles": "['Fooocus Sharp', 'SAI Cinematic']", "vae": "Default (model)",
        "version": "Fooocus v2.5.5",
    }
    save("fooocus_json_scheme.png",
         [("parameters", json.dumps(dict(sorted(fooocus.items())))), ("fooocus_scheme", "fooocus")])
    # A1111 scheme (A1111MetadataParser.to_string): sampler with " Karras" glued on, plus
    # Fooocus' own keys; the prompt is ", ".join(full_prompt).
    fooocus_a1111 = a1111_infotext(
        ", ".join(fooocus["full_prompt"]),
        ", ".join(fooocus["full_negative_prompt"]),
        {
            "Steps": 30, "Sampler": "DPM++ 2M Karras", "Seed": "7777777", "Size": "1152x896",
            "CFG scale": 4.0, "Sharpness": 2.0, "ADM Guidance": "(1.5, 0.8, 0.3)",
            "Model": "juggernautXL_v8Rundiffusion", "Model hash": "aeb7e9e689",
            "Performance": "Speed", "Scheduler": "karras", "VAE": "Default (model)",
            "Raw prompt": "a lighthouse", "Raw negative prompt": "",
            "Version": "Fooocus v2.5.5",
        },
    ).strip()
    save("fooocus_a1111_scheme.png", [("parameters", fooocus_a1111), ("fooocus_scheme", "a1111")])


def chunk_types(path: Path) -> dict[str, str]:
    """Keyword -> chunk type (tEXt/zTXt/iTXt), read from the raw chunk list."""
    data = path.read_bytes()
    pos, found = 8, {}
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("latin-1")
        body = data[pos + 8:pos + 8 + length]
        if kind in ("tEXt", "zTXt", "iTXt"):
            found[body.split(b"\0", 1)[0].decode("latin-1")] = kind
        pos += 12 + length
    return found


def record_outside_readings() -> None:
    readings = {}
    for path in sorted(OUT.glob("*.png")):
        with Image.open(path) as image:
            image.load()
            text = {k: str(v) for k, v in image.text.items()}
        params = text.get("parameters", "")
        readings[path.name] = {
            "pillow_text": text,
            "pillow_chunk_types": chunk_types(path),
            "a1111": parse_generation_parameters(params) if params and not params.lstrip().startswith("{") else {},
        }
    (OUT / "outside_reader.json").write_text(json.dumps(readings, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write_foreign_samples()
    record_outside_readings()
