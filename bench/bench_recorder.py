"""The recorder's overhead on the engine benchmark's MLP training step (784-1024-1024-10, batch 256):
no recorder, recording summaries only, recording full values; side by side in one run.
Targets: summaries at most +10%, full values at most +30%, per step of a training run.

A training run is long: the overhead that matters is per step once the recording is under way.
Each mode therefore runs ``--warmup`` steps under its recorder first (with full values, the default
512 MiB budget fills in about 17 steps; until then every kept array is fresh memory), then times
``--repeat`` steps. The warm-up steps' own mean is printed too, as the cost of filling the budget.

Run: python bench/bench_recorder.py [--repeat N] [--warmup N] [--rounds N] (each mode: its best round)
"""
import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import mlp_step  # noqa: E402


def run_mode(step, factory, warmup, repeat):
    """(mean time of the warm-up steps, median time of the timed steps), one recorder throughout."""
    rec = factory()
    if rec is not None:
        rec.start()
    try:
        warm = []
        for _ in range(warmup):
            t0 = time.perf_counter()
            step()
            warm.append(time.perf_counter() - t0)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    finally:
        if rec is not None:
            rec.stop()
    return statistics.mean(warm[2:]), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each mode's best is kept")
    args = parser.parse_args()
    import gradviz
    import gradviz.engine as gt
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    step = mlp_step(gt)
    modes = [("no recorder", lambda: None, None),
             ("summaries only", lambda: gradviz.record(values="summaries"), 0.10),
             ("full values", lambda: gradviz.record(values="full"), 0.30)]
    # Interleave the modes, round after round, so that drift in the machine hits all alike.
    results = {name: [] for name, _, _ in modes}
    for _ in range(args.rounds):
        for name, factory, _ in modes:
            results[name].append(run_mode(step, factory, args.warmup, args.repeat))
    # Each mode's best round: on a shared machine other work only ever adds time, so the
    # fastest round is the closest to the code's own cost (the median moved 15-38% run to run).
    base = min(r[1] for r in results["no recorder"])
    print(f"{'MLP training step':<18} {'warm-up ms':>11} {'step ms':>8} {'overhead':>9} {'target':>8}")
    for name, _, target in modes:
        warm = statistics.median(r[0] for r in results[name])
        t = min(r[1] for r in results[name])
        over = t / base - 1
        verdict = "" if target is None else ("ok" if over <= target else "MISS")
        print(f"{name:<18} {warm * 1e3:>11.2f} {t * 1e3:>8.2f} {over * 100:>8.1f}% "
              f"{'' if target is None else f'<= {target:.0%}':>8} {verdict}")


if __name__ == "__main__":
    main()
