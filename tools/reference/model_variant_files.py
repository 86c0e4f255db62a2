"""Which weight files diffusers loads from a repo listing, with and without variant="fp16".

Reference for imagelab's `models::hub::plan_pipeline` (tests/it/models.rs,
`weight_choice_matches_diffusers`). Pinned: diffusers==0.42.1 (tools/reference/requirements.txt).
Writes tests/fixtures/models/variant_files.json.
"""

import json
import pathlib

from diffusers.pipelines.pipeline_loading_utils import variant_compatible_siblings

WEIGHTED = ("unet", "vae", "text_encoder", "text_encoder_2")

COMMON = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer_2/vocab.json",
    "tokenizer_2/merges.txt",
] + [f"{c}/config.json" for c in WEIGHTED]

CASES = {
    # stabilityai/stable-diffusion-xl-base-1.0-like: every component in both precisions,
    # plus pickle copies.
    "both_precisions_everywhere": COMMON
    + [
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder_2/model.safetensors",
        "text_encoder_2/model.fp16.safetensors",
    ],
    # fp16 for some components only; sharded weights in both forms.
    "mixed_and_sharded": COMMON
    + [
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
        "vae/diffusion_pytorch_model.safetensors.index.json",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "text_encoder_2/model.safetensors",
    ],
    # A community repo without variants.
    "no_variants": COMMON
    + [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
    ],
}


def weight_files(chosen):
    keep = []
    for name in chosen:
        folder, _, file = name.partition("/")
        if folder in WEIGHTED and file != "config.json" and (
            file.endswith(".safetensors") or file.endswith(".json")
        ):
            keep.append(name)
    return sorted(keep)


def main():
    out = []
    for case, files in CASES.items():
        for variant in ("fp16", None):
            try:
                usable, _ = variant_compatible_siblings(files, variant=variant)
                expected, error = weight_files(usable), None
            except ValueError as err:
                # diffusers refuses a variant no file has; imagelab falls back to full
                # precision instead (the test checks that, not this message).
                expected, error = None, str(err).split(".")[0]
            out.append(
                {"case": case, "variant": variant, "files": files, "expected": expected, "error": error}
            )
    path = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/models/variant_files.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
