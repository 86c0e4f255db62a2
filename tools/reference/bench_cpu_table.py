#!/usr/bin/env python3
"""The side-by-side table of `scripts/bench-cpu`: reads its JSON lines (one per process run of
`examples/bench_unet.rs` or `tools/reference/bench_unet.py`) and prints, per implementation and
size, the best and the mean seconds per CFG step over all rounds and calls, the ratio of
imagelab's best to diffusers' best, the VAE decode, the load times and the peak RSS. Standard
library only (runs with any python3).

    python3 tools/reference/bench_cpu_table.py results.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def label(run: dict) -> str:
    if run["impl"] == "diffusers":
        capped = ", torch capped at AVX2" if run.get("build") == "avx2" else ""
        return f"diffusers (torch {run.get('torch', '?')}{capped}, {run.get('threads', '?')} threads)"
    return (f"imagelab IMAGELAB_CPU_ISA={run.get('build', '')} (kernels {run.get('kernels', '?')}, "
            f"{run.get('threads', '?')} threads)")


def main() -> None:
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[label(run)].append(run)
    sizes = sorted({entry["size"] for run in runs for entry in run["sizes"]})
    best: dict[tuple[str, int], float] = {}
    rows = []
    for name, group in groups.items():
        for size in sizes:
            steps = [s for run in group for entry in run["sizes"] if entry["size"] == size for s in entry["step_s"]]
            decodes = [d["decode_s"] for run in group if run.get("vae") for d in run["vae"]["decodes"] if d["size"] == size]
            if not steps:
                continue
            best[(name, size)] = min(steps)
            rows.append((name, size, steps, decodes, group))
    # Each imagelab build is compared with the diffusers run of the same --isa (its own label).
    diffusers_of = {run.get("build", ""): label(run) for run in runs if run["impl"] == "diffusers"}
    build_of = {label(run): run.get("build", "") for run in runs}
    print()
    print("| implementation | size | s/step best | s/step mean (n) | vs diffusers (best) | VAE decode s | UNet load s | VAE load s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, steps, decodes, group in rows:
        ratio = "—"
        diffusers = diffusers_of.get(build_of[name]) or diffusers_of.get("avx512") or next(iter(diffusers_of.values()), None)
        if diffusers and not name.startswith("diffusers") and (diffusers, size) in best:
            ratio = f"{best[(name, size)] / best[(diffusers, size)]:.3f}×"
        decode = f"{min(decodes):.2f}" if decodes else "—"
        unet_load = "/".join(f"{run['load_s']:.1f}" for run in group)
        vae_load = "/".join(f"{run['vae']['load_s']:.2f}" for run in group if run.get("vae"))
        peak = "/".join(f"{run['peak_rss_mib']:.0f}" for run in group if run.get("peak_rss_mib"))
        print(f"| {name} | {size}² | {min(steps):.2f} | {statistics.mean(steps):.2f} ({len(steps)}) | {ratio} | {decode} | {unet_load} | {vae_load or '—'} | {peak or '—'} |")
    print()
    print("Every call, per process (s/step):")
    for run in runs:
        calls = "; ".join(f"{e['size']}²: " + ", ".join(f"{s:.2f}" for s in e["step_s"]) for e in run["sizes"])
        print(f"  round {run.get('round', '?')} {label(run)}: {calls}")


if __name__ == "__main__":
    main()
