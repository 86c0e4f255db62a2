#!/usr/bin/env python3
"""JPEG/WebP/legacy-tool metadata fixtures for tests/it/metadata_formats.rs (issue 18).

Run from the repository root with the pinned environment (requirements.txt next to this file),
after `cargo test --test it write_imagelab_format_fixtures -- --ignored` has written our own
JPEG/WebP files:

    python tools/reference/metadata/make_formats.py

1. Writes tiny images the way each tool writes its metadata, through the tools' own libraries:
   - AUTOMATIC1111/Forge JPEG and WebP (lossy and lossless): `image.save(quality=80,
     lossless=...)`, then `piexif.insert(piexif.dump({"Exif": {UserComment:
     piexif.helper.UserComment.dump(infotext, encoding="unicode")}}))`, exactly as
     `modules/images.py` (`save_image` / `save_image_with_geninfo`) does;
   - the same infotext written by exiftool into an Intel-order (little-endian) EXIF block, where
     it stores the UNICODE comment little-endian too
     (`exiftool -ExifByteOrder=Little-endian -UserComment<=FILE`);
   - Fooocus JPEG: Pillow `Image.Exif()` with UserComment (its JSON), Software and MakerNote
     (the scheme), `save(quality=95, optimize=True, progressive=True, exif=...)`
     (`modules/meta_parser.py:get_exif`, `modules/private_logger.py`);
   - ComfyUI WebP: `exif[0x0110] = "prompt:" + json`, `exif[0x010f] = "workflow:" + json`
     (`SaveAnimatedWEBP`);
   - InvokeAI 2.x PNGs: `PngInfo.add_text('Dream', dream_prompt_str)` and `'sd-metadata'` =
     `json.dumps(metadata_dumps(...))` (`ldm/invoke/pngwriter.py`, `args.py`), CLI 2.2 and web
     2.3 variants;
   - NovelAI PNGs: Title/Description/Software/Source/Generation time/Comment text chunks plus
     the same record hidden in the alpha channel (`stealth_pngcomp`), and a copy with the text
     chunks stripped (what image sites leave);
   - A1111 "stealth" PNG info from the sd-webui-stealth-pnginfo extension's `add_data`
     (alpha/plain and RGB/gzip);
   - hostile files: an EXIF IFD loop, a huge IFD entry count, a truncated RIFF.
2. Reads our own JPEG/WebP files and the foreign ones with outside readers and records what they
   saw in formats_outside_reader.json: A1111's `read_info_from_image` (piexif; copied logic),
   Pillow's EXIF, the standard library's XML parser on our XMP, `sd-parsers`, and exiftool
   (Debian's libimage-exiftool-perl 12.57).
3. Writes the styles fixtures (A1111 styles.csv with quoting, multi-line prompts, missing
   columns, duplicate names and a BOM; a Fooocus style JSON) and records, with the tools' own
   loading and applying code (copied from `modules/styles.py` and `modules/sdxl_styles.py`,
   `async_worker.py`), the styles they load and the prompts they build: styles_reference.json.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import piexif
import piexif.helper
from PIL import Image
from PIL.PngImagePlugin import PngInfo

sys.path.insert(0, str(Path(__file__).parent))
from make_samples import a1111_infotext, parse_generation_parameters  # noqa: E402

OUT = Path("tests/fixtures/metadata/formats")
STYLES_OUT = Path("tests/fixtures/styles")

A1111_INFOTEXT = a1111_infotext(
    "a lighthouse at dusk, 灯台 😀,\n(golden hour:1.2)",
    "blurry, lowres",
    {
        "Steps": 24,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 6.5,
        "Seed": 1234567890,
        "Size": "16x16",
        "Model hash": "31e35c80fc",
        "Model": "sd_xl_base_1.0",
        "RNG": "CPU",
        "Version": "v1.10.1",
    },
)


def base_image(size=(16, 16), mode="RGB") -> Image.Image:
    image = Image.new(mode, size, (90, 120, 200) if mode == "RGB" else (90, 120, 200, 255))
    # A gradient so lossy codecs have something to code.
    pixels = image.load()
    for x in range(size[0]):
        for y in range(size[1]):
            value = (x * 16 + y * 5) % 256
            pixels[x, y] = (value, 255 - value, 128) if mode == "RGB" else (value, 255 - value, 128, 255)
    return image


def a1111_save(path: Path, fmt: str, lossless: bool = False) -> None:
    """modules/images.py: save, then piexif.insert the UNICODE UserComment."""
    base_image().save(path, format=fmt, quality=80, lossless=lossless)
    exif_bytes = piexif.dump(
        {"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(A1111_INFOTEXT or "", encoding="unicode")}}
    )
    piexif.insert(exif_bytes, str(path))


def exiftool_little_endian(path: Path) -> None:
    """A plain JPEG, then exiftool writes the infotext as UserComment in little-endian EXIF."""
    base_image().save(path, format="JPEG", quality=80)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as text:
        text.write(A1111_INFOTEXT)
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-ExifByteOrder=Little-endian", f"-UserComment<={text.name}", str(path)],
        check=True,
    )
    Path(text.name).unlink()


def exiftool_reading(path: Path):
    """UserComment and our XMP property as exiftool reads them."""
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-UserComment", "-XMP-imagelab:Generation", "-ExifByteOrder", str(path)],
        check=True, capture_output=True,
    )
    found = json.loads(out.stdout)[0]
    found.pop("SourceFile", None)
    return found


def fooocus_jpeg(path: Path) -> None:
    metadata = {
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
    exif = Image.Exif()
    exif[0x9286] = json.dumps(dict(sorted(metadata.items())))
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = "fooocus"
    base_image().save(path, quality=95, optimize=True, progressive=True, exif=exif)


def comfyui_webp(path: Path) -> None:
    prompt = {
        "3": {"inputs": {"seed": 99, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["5", 0]}, "class_type": "KSampler"},
        "4": {"inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}, "class_type": "CheckpointLoaderSimple"},
        "5": {"inputs": {"width": 1024, "height": 1024, "batch_size": 1}, "class_type": "EmptyLatentImage"},
        "6": {"inputs": {"text": "a red fox", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
        "7": {"inputs": {"text": "blurry", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveAnimatedWEBP"},
    }
    image = base_image()
    metadata = image.getexif()
    metadata[0x0110] = "prompt:{}".format(json.dumps(prompt))
    metadata[0x010F] = "workflow:{}".format(json.dumps({"nodes": [], "links": []}))
    image.save(path, save_all=True, duration=100, append_images=[], exif=metadata, lossless=False, quality=80, method=4)


def invokeai_pngs() -> None:
    # 2.2 CLI: quoted prompt with the negative in brackets; model_id; k_ sampler under 30 steps.
    prompt = "a cozy cabin in the woods [people, blurry]"
    dream = '"{:s}" -s {:d} -S {:d} -W {:d} -H {:d} -C {} -A {:s}'.format(prompt, 25, 1234, 16, 16, 7.5, "k_dpmpp_2")
    meta = {
        "model": "stable diffusion", "model_id": "stable-diffusion-1.5",
        "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
        "app_id": "invoke-ai/InvokeAI", "app_version": "2.2.5",
        "image": {"type": "txt2img", "postprocessing": None, "sampler": "k_dpmpp_2",
                  "prompt": [{"prompt": prompt, "weight": 1.0}], "seed": 1234, "variations": [],
                  "steps": 25, "cfg_scale": 7.5, "threshold": 0, "perlin": 0, "width": 16, "height": 16,
                  "seamless": False},
    }
    info = PngInfo()
    info.add_text("Dream", dream)
    info.add_text("sd-metadata", json.dumps(meta))
    base_image().save(OUT / "invokeai2_cli.png", "PNG", pnginfo=info, compress_level=6)
    # 2.3 web: bare prompt in Dream (dream_prompt_str), model_weights, img2img.
    prompt = "portrait of a knight, oil painting [lowres]"
    dream = " ".join([prompt, "-s 50", "-S 42", "-W 16", "-H 16", "-C 7.0", "-I outputs/init.png", "-A k_euler_a", "-f 0.6"])
    meta = {
        "model": "stable diffusion", "model_weights": "stable-diffusion-1.5",
        "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
        "app_id": "invoke-ai/InvokeAI", "app_version": "2.3.5",
        "image": {"prompt": [{"prompt": prompt, "weight": 1.0}], "steps": 50, "cfg_scale": 7.0,
                  "threshold": 0, "perlin": 0, "height": 16, "width": 16, "seed": 42, "seamless": False,
                  "hires_fix": False, "type": "img2img", "postprocessing": None, "sampler": "k_euler_a",
                  "variations": [], "init_image_path": "outputs/init.png", "strength": 0.6, "fit": True},
    }
    info = PngInfo()
    info.add_text("Dream", dream)
    info.add_text("sd-metadata", json.dumps(meta))
    base_image().save(OUT / "invokeai2_web.png", "PNG", pnginfo=info, compress_level=6)


def stealth_bits(signature: str, payload: bytes) -> str:
    """sd-webui-stealth-pnginfo prepare_data: signature, 32-bit bit length, payload, MSB first."""
    binary_signature = "".join(format(byte, "08b") for byte in signature.encode("utf-8"))
    binary_param = "".join(format(byte, "08b") for byte in payload)
    return binary_signature + format(len(binary_param), "032b") + binary_param


def embed_stealth(image: Image.Image, mode: str, compressed: bool, text: str) -> Image.Image:
    """add_data: column-major (x outer, y inner); alpha LSB, or R, G, B LSBs."""
    signature = f"stealth_{'png' if mode == 'alpha' else 'rgb'}{'info' if not compressed else 'comp'}"
    payload = gzip.compress(text.encode("utf-8"), mtime=0) if compressed else text.encode("utf-8")
    bits = stealth_bits(signature, payload)
    image = image.convert("RGBA")
    width, height = image.size
    pixels = image.load()
    index = 0
    end_write = False
    for x in range(width):
        for y in range(height):
            if index >= len(bits):
                end_write = True
                break
            r, g, b, a = pixels[x, y]
            if mode == "alpha":
                a = (a & ~1) | int(bits[index])
                index += 1
            else:
                r = (r & ~1) | int(bits[index])
                if index + 1 < len(bits):
                    g = (g & ~1) | int(bits[index + 1])
                if index + 2 < len(bits):
                    b = (b & ~1) | int(bits[index + 2])
                index += 3
            pixels[x, y] = (r, g, b, a)
        if end_write:
            break
    return image


NOVELAI_COMMENT = {
    "prompt": "1girl, cherry blossoms, best quality, amazing quality, very aesthetic",
    "steps": 28, "height": 96, "width": 96, "scale": 5.0, "uncond_scale": 1.0, "cfg_rescale": 0.0,
    "seed": 2940596, "n_samples": 1, "hide_debug_overlay": False, "noise_schedule": "native",
    "legacy_v3_extend": False, "reference_information_extracted_multiple": [],
    "reference_strength_multiple": [], "sampler": "k_euler_ancestral", "controlnet_strength": 1.0,
    "controlnet_model": None, "dynamic_thresholding": False, "dynamic_thresholding_percentile": 0.999,
    "dynamic_thresholding_mimic_scale": 10.0, "sm": False, "sm_dyn": False, "skip_cfg_below_sigma": 0.0,
    "lora_unet_weights": None, "lora_clip_weights": None,
    "uc": "lowres, {bad}, error, fewer, extra, missing, worst quality",
    "request_type": "PromptGenerateRequest", "signed_hash": "c2lnbmVk",
}


def novelai_pngs() -> None:
    chunks = {
        "Title": "AI generated image",
        "Description": NOVELAI_COMMENT["prompt"],
        "Software": "NovelAI",
        "Source": "Stable Diffusion XL C1E1DE52",
        "Generation time": "6.8",
        "Comment": json.dumps(NOVELAI_COMMENT),
    }
    image = embed_stealth(base_image((96, 96)), "alpha", True, json.dumps(chunks))
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    image.save(OUT / "novelai_v3.png", pnginfo=info)
    image.save(OUT / "novelai_stealth_only.png")


def a1111_stealth_pngs() -> None:
    embed_stealth(base_image((64, 64)), "alpha", False, A1111_INFOTEXT).save(OUT / "a1111_stealth_alpha.png")
    embed_stealth(base_image((64, 64)), "rgb", True, A1111_INFOTEXT).save(OUT / "a1111_stealth_rgbcomp.png")


def hostile_files() -> None:
    # An EXIF whose Exif-IFD pointer points back at IFD0 (a loop), in a JPEG.
    tiff = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 8) + struct.pack(">I", 8)
    buffer = io.BytesIO()
    base_image().save(buffer, format="JPEG", quality=80)
    jpeg = buffer.getvalue()
    segment = b"Exif\0\0" + tiff
    (OUT / "hostile_exif_loop.jpg").write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:])
    # A WebP whose EXIF IFD declares 65535 entries.
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + struct.pack("<HHII", 0x0131, 2, 4, 0x00636261)
    buffer = io.BytesIO()
    base_image().save(buffer, format="WEBP", quality=80)
    webp = buffer.getvalue()
    body = webp[12:]
    chunk = b"EXIF" + struct.pack("<I", len(tiff)) + tiff + (b"\0" if len(tiff) % 2 else b"")
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (15).to_bytes(3, "little") + (15).to_bytes(3, "little")
    riff_body = b"WEBP" + vp8x + body + chunk
    (OUT / "hostile_ifd_count.webp").write_bytes(b"RIFF" + struct.pack("<I", len(riff_body)) + riff_body)
    # An A1111 WebP cut inside its EXIF chunk.
    whole = (OUT / "a1111_lossy.webp").read_bytes()
    (OUT / "truncated_riff.webp").write_bytes(whole[: len(whole) - 20])


def write_foreign() -> None:
    a1111_save(OUT / "a1111.jpg", "JPEG")
    a1111_save(OUT / "a1111_lossy.webp", "WEBP")
    a1111_save(OUT / "a1111_lossless.webp", "WEBP", lossless=True)
    exiftool_little_endian(OUT / "exif_little_endian.jpg")
    fooocus_jpeg(OUT / "fooocus.jpg")
    comfyui_webp(OUT / "comfyui.webp")
    invokeai_pngs()
    novelai_pngs()
    a1111_stealth_pngs()
    hostile_files()


# ---- outside readers ---------------------------------------------------------------------------

def a1111_read_info_from_image(image: Image.Image):
    """modules/images.py read_info_from_image (the EXIF and NovelAI branches)."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        exif = piexif.load(items["exif"])
        exif_comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
        try:
            exif_comment = piexif.helper.UserComment.load(exif_comment)
        except ValueError:
            exif_comment = exif_comment.decode("utf8", errors="ignore")
        if exif_comment:
            geninfo = exif_comment
    if items.get("Software", None) == "NovelAI":
        json_info = json.loads(items["Comment"])
        geninfo = f"""{items["Description"]}
Negative prompt: {json_info["uc"]}
Steps: {json_info["steps"]}, Sampler: {json_info["sampler"]}, CFG scale: {json_info["scale"]}, Seed: {json_info["seed"]}, Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337"""
    return geninfo


def xmp_generation(image: Image.Image):
    """Our XMP property, read with the standard library's XML parser."""
    raw = image.info.get("xmp")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    root = ET.fromstring(raw.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
    element = root.find(".//{urn:imagelab:xmp:1.0:}generation")
    return None if element is None else json.loads(element.text)


def sd_parsers_reading(path: Path, eager: bool = False):
    from sd_parsers import ParserManager
    from sd_parsers.extractors import Eagerness

    manager = ParserManager(eagerness=Eagerness.EAGER if eager else Eagerness.DEFAULT)
    info = manager.parse(str(path))
    if info is None:
        return None
    sampler = info.samplers[0] if info.samplers else None
    return {
        "generator": info.generator.name,
        "prompts": [p.value for p in info.prompts],
        "negative_prompts": [p.value for p in info.negative_prompts],
        "sampler": None if sampler is None else sampler.name,
        "sampler_parameters": None if sampler is None else {k: str(v) for k, v in sampler.parameters.items()},
        "model": None if sampler is None or sampler.model is None else sampler.model.name,
    }


def record_outside_readings() -> None:
    readings = {}
    for path in sorted(OUT.iterdir()):
        if path.suffix not in (".jpg", ".webp", ".png") or path.name.startswith(("hostile", "truncated")):
            continue
        with Image.open(path) as image:
            image.load()
            geninfo = a1111_read_info_from_image(image)
            exif_ifd = image.getexif().get_ifd(0x8769)
            comment = exif_ifd.get(0x9286)
            generation = xmp_generation(image) if path.name.startswith("imagelab") else None
        readings[path.name] = {
            "a1111_geninfo": geninfo,
            "a1111_fields": parse_generation_parameters(geninfo) if geninfo else {},
            "pillow_user_comment_prefix": None if comment is None else comment[:8].decode("latin-1"),
            "xmp_generation": generation,
            "sd_parsers": sd_parsers_reading(path, eager="stealth" in path.name),
            "exiftool": exiftool_reading(path) if path.suffix != ".png" else None,
        }
    (OUT / "formats_outside_reader.json").write_text(json.dumps(readings, indent=1, ensure_ascii=False) + "\n")


# ---- styles ---------------------------------------------------------------------------------------

A1111_STYLES_CSV = (
    "\ufeffname,prompt,negative_prompt\n"
    'Cinematic,"cinematic still, {prompt}, film grain, bokeh","cartoon, anime"\n'
    "Sharp, sharp focus ,\n"
    '"Quoted ""Name""","line one\nline two, {prompt}",  "multi\nline negative"\n'
    "# a comment row,ignored,\n"
    "Short,only a prompt\n"
    "\n"
    'Cinematic,"{prompt}, cinematic (second definition)",blurry\n'
    ",nameless,\n"
    "Extra,a,b,c\n"
)

A1111_OLD_CSV = "name,text\nOld Style,\"{prompt}, masterpiece\"\n"

FOOOCUS_STYLES = [
    {"name": "sai-cinematic", "prompt": "cinematic film still {prompt} . shallow depth of field, vignette",
     "negative_prompt": "anime, cartoon, graphic, text, painting"},
    {"name": "mre-3d-model", "prompt": "professional 3d model {prompt}", "negative_prompt": "ugly, deformed"},
    {"name": "Fooocus Sharp", "negative_prompt": "(worst quality, low quality, normal quality, lowres, blurry)"},
    {"name": "misc (steampunk)", "prompt": "steampunk style\nbrass gears, {prompt}", "negative_prompt": ""},
    {"name": "SAI Cinematic", "prompt": "replaced {prompt} later"},
]


def a1111_load(path: Path) -> dict:
    """modules/styles.py StyleDatabase.load_from_csv."""
    styles = {}
    with open(path, "r", encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file, skipinitialspace=True)
        for row in reader:
            if not row or row["name"].startswith("#"):
                continue
            prompt = row["prompt"] if "prompt" in row else row["text"]
            negative_prompt = row.get("negative_prompt", "")
            styles[row["name"]] = (prompt, negative_prompt)
    return styles


def merge_prompts(style_prompt: str, prompt: str) -> str:
    if "{prompt}" in style_prompt:
        res = style_prompt.replace("{prompt}", prompt)
    else:
        parts = filter(None, (prompt.strip(), style_prompt.strip()))
        res = ", ".join(parts)
    return res


def normalize_key(k):
    k = k.replace("-", " ")
    words = k.split(" ")
    words = [w[:1].upper() + w[1:].lower() for w in words]
    k = " ".join(words)
    k = k.replace("3d", "3D")
    k = k.replace("Sai", "SAI")
    k = k.replace("Mre", "MRE")
    k = k.replace("(s", "(S")
    return k


def fooocus_load(path: Path) -> dict:
    styles = {}
    with open(path, encoding="utf-8") as f:
        for entry in json.load(f):
            name = normalize_key(entry["name"])
            prompt = entry["prompt"] if "prompt" in entry else ""
            negative_prompt = entry["negative_prompt"] if "negative_prompt" in entry else ""
            styles[name] = (prompt, negative_prompt)
    return styles


def fooocus_workloads(style, task_prompt, task_negative_prompt):
    """async_worker.py for one selected style, then ', '.join as its A1111 scheme writes."""
    p, n = style
    positive_basic_workloads = []
    negative_basic_workloads = []
    placeholder_replaced = False
    p_lines, n_lines, has = p.replace("{prompt}", task_prompt).splitlines(), n.splitlines(), "{prompt}" in p
    if has:
        placeholder_replaced = True
    positive_basic_workloads = positive_basic_workloads + p_lines
    negative_basic_workloads = negative_basic_workloads + n_lines
    if not placeholder_replaced:
        positive_basic_workloads = [task_prompt] + positive_basic_workloads
    negative_basic_workloads.append(task_negative_prompt)

    def remove_empty_str(items, default=None):
        items = [x for x in items if x != ""]
        if len(items) == 0 and default is not None:
            return [default]
        return items

    positive = remove_empty_str(positive_basic_workloads, default=task_prompt)
    negative = remove_empty_str(negative_basic_workloads, default=task_negative_prompt)
    return ", ".join(positive), ", ".join(negative)


SAMPLE_PROMPTS = [("a fox in the snow", "blurry"), ("  padded prompt  ", ""), ("", "")]


def write_styles() -> None:
    STYLES_OUT.mkdir(parents=True, exist_ok=True)
    (STYLES_OUT / "a1111_styles.csv").write_bytes(A1111_STYLES_CSV.encode("utf-8"))
    (STYLES_OUT / "a1111_old_text_column.csv").write_bytes(A1111_OLD_CSV.encode("utf-8"))
    (STYLES_OUT / "fooocus_styles.json").write_text(json.dumps(FOOOCUS_STYLES, indent=4) + "\n")
    reference = {}
    for name in ("a1111_styles.csv", "a1111_old_text_column.csv"):
        styles = a1111_load(STYLES_OUT / name)
        reference[name] = {
            "styles": [[k, p, n if n is not None else None] for k, (p, n) in styles.items()],
            "applied": {
                k: [[merge_prompts(p, prompt), merge_prompts(n or "", negative)] for prompt, negative in SAMPLE_PROMPTS]
                for k, (p, n) in styles.items()
            },
        }
    styles = fooocus_load(STYLES_OUT / "fooocus_styles.json")
    reference["fooocus_styles.json"] = {
        "styles": [[k, p, n] for k, (p, n) in styles.items()],
        "applied": {
            k: [list(fooocus_workloads(v, prompt, negative)) for prompt, negative in SAMPLE_PROMPTS]
            for k, v in styles.items()
        },
    }
    (STYLES_OUT / "styles_reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write_foreign()
    record_outside_readings()
    write_styles()
