#!/usr/bin/env python3
"""Tokenizer folders as transformers 5 saves them (issue 11, item 6): `save_pretrained` writes only
`tokenizer.json` + `tokenizer_config.json` (no vocab.json/merges.txt), and the token ids
transformers gives with them for make_fixtures.py's tricky prompts.

Run from the repository root with the pinned environment (tools/reference/requirements.txt),
after make_fixtures.py:

    python tools/reference/make_tokenizer_json_refs.py

Output (tests/fixtures/diffusion/tokenizer_json/):
  tokenizer/, tokenizer_2/   sdxl_tiny's two tokenizers (pad `<|endoftext|>` and `!`), loaded from
                             their vocab.json/merges.txt and saved again by transformers 5
  tokens.json                ids from the saved folders (padded to 77 and untruncated), and
                             whether they equal the ids of the vocab.json/merges.txt folders
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import transformers
from transformers import AutoTokenizer, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import TRICKY_PROMPTS, token_record  # noqa: E402

FIXTURES = Path("tests/fixtures/diffusion")
OUT = FIXTURES / "tokenizer_json"


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    record: dict = {"prompts": TRICKY_PROMPTS, "transformers": transformers.__version__}
    for name in ("tokenizer", "tokenizer_2"):
        slow_folder = FIXTURES / "sdxl_tiny" / name
        CLIPTokenizer.from_pretrained(slow_folder).save_pretrained(OUT / name)
        written = sorted(p.name for p in (OUT / name).iterdir())
        assert written == ["tokenizer.json", "tokenizer_config.json"], written
        # As a pipeline loads it (CLIPTokenizer), and as AutoTokenizer does.
        ours = token_record(CLIPTokenizer.from_pretrained(OUT / name))
        auto = token_record(AutoTokenizer.from_pretrained(OUT / name))
        assert ours == auto, name
        before = token_record(CLIPTokenizer.from_pretrained(slow_folder))
        record[name] = {**ours, "same_as_vocab_json_folder": ours == before, "files": written}
    (OUT / "tokens.json").write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
