"""The recorder's overhead on the engine benchmark's MLP training step (784-1024-1024-10, batch 256):
no recorder, recording summaries only, recording full values; side by side in one run.
Targets: summaries at most +10%, full values at most +30%, per step of a training run.

A training run is long: the overhead that matters is per step once the recording is under way.
Each mode's recorder therefore runs ``--warmup`` steps first (with full values, the default
512 MiB budget fills in about 17 steps; until then every kept array is fresh memory), then steps
alternate between that recorder's hooks off and on (bench/_paired.py: this machine drifts too much
for one side to be timed after the other). The overhead is the median of the pairs' ratios; "all
steps" is that of the totals, which also counts the garbage collector's rare full passes.

Run: python bench/bench_recorder.py [--pairs N] [--warmup N]
"""
import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paired import paired, summary  # noqa: E402
from bench_engine import mlp_step  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=25)
    args = parser.parse_args()
    import gradviz
    import gradviz.engine as gt
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    step = mlp_step(gt)
    print(f"{'MLP training step':<18} {'plain ms':>9} {'recorded ms':>12} {'overhead':>9} {'middle half':>15} "
          f"{'target':>7} {'':4} {'all steps':>9}")
    for name, values, target in [("summaries only", "summaries", 0.10), ("full values", "full", 0.30)]:
        p, r, ratio, (lo, hi), total = summary(*paired(step, gradviz.record(values=values), args.warmup, args.pairs))
        over = ratio - 1
        print(f"{name:<18} {p * 1e3:>9.2f} {r * 1e3:>12.2f} {over * 100:>8.1f}% {(lo - 1) * 100:>6.1f}% to"
              f"{(hi - 1) * 100:>5.1f}% {'<= ' + format(target, '.0%'):>7} {'ok' if over <= target else 'MISS':4} "
              f"{(total - 1) * 100:>8.1f}%")


if __name__ == "__main__":
    main()
