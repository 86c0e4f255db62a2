"""Times torch's conv2d, GroupNorm+SiLU and sgemm on the shapes of examples/bench_kernels.rs.

Run by that example (same machine, same run); prints one JSON object per line:
{"name": ..., "seconds": best-of-N seconds per call}. Threads: torch's default (the cores).

    python tools/reference/bench_kernels.py [--reps 3]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

# (name, batch, in, out, kernel, stride, padding, height, width): kept equal to CONVS in
# examples/bench_kernels.rs.
CONVS = [
    ("3x3 320->320 64x64 b2", 2, 320, 320, 3, 1, 1, 64, 64),
    ("3x3 640->640 64x64 b2", 2, 640, 640, 3, 1, 1, 64, 64),
    ("3x3 1280->1280 32x32 b2", 2, 1280, 1280, 3, 1, 1, 32, 32),
    ("3x3 1280->1280 8x8 b2", 2, 1280, 1280, 3, 1, 1, 8, 8),
    ("3x3 s2 640->640 64x64 b2", 2, 640, 640, 3, 2, 1, 64, 64),
    ("1x1 640->1280 32x32 b2", 2, 640, 1280, 1, 1, 0, 32, 32),
    ("3x3 4->320 128x128 b2", 2, 4, 320, 3, 1, 1, 128, 128),
]
NORMS = [("groupnorm+silu 640 64x64 b2", 2, 640, 32, 64, 64)]


def best(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps({"name": "threads", "seconds": torch.get_num_threads()}), flush=True)
    with torch.inference_mode():
        a = torch.randn(2048, 2048)
        b = torch.randn(2048, 2048)
        print(json.dumps({"name": "sgemm 2048^3", "seconds": best(lambda: a @ b, args.reps)}), flush=True)
        for name, batch, cin, cout, k, stride, pad, h, w in CONVS:
            x = torch.randn(batch, cin, h, w)
            weight = torch.randn(cout, cin, k, k) * 0.05
            bias = torch.randn(cout)
            seconds = best(lambda: F.conv2d(x, weight, bias, stride=stride, padding=pad), args.reps)
            print(json.dumps({"name": name, "seconds": seconds}), flush=True)
        for name, batch, channels, groups, h, w in NORMS:
            x = torch.randn(batch, channels, h, w)
            gamma = torch.randn(channels)
            beta = torch.randn(channels)
            seconds = best(lambda: F.silu(F.group_norm(x, groups, gamma, beta, 1e-5)), args.reps)
            print(json.dumps({"name": name, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
