"""The recorder's overhead on the engine benchmark's MLP training step (784-1024-1024-10, batch 256):
no recorder, recording summaries only, recording full values; side by side in one run.
Targets: summaries at most +10%, full values at most +30%.

Run: python bench/bench_recorder.py [--repeat N]
"""
import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import mlp_step  # noqa: E402


def median_time(step, repeat, recorder_factory):
    """Median time of one step, with one recorder (if any) listening to all the steps of a round."""
    rec = recorder_factory()
    if rec is not None:
        rec.start()
    times = []
    try:
        for i in range(repeat + 2):
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    finally:
        if rec is not None:
            rec.stop()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
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
    for _ in range(3):
        for name, factory, _ in modes:
            results[name].append(median_time(step, args.repeat, factory))
    base = statistics.median(results["no recorder"])
    print(f"{'MLP training step':<20} {'ms':>8} {'overhead':>9} {'target':>8}")
    for name, _, target in modes:
        t = statistics.median(results[name])
        over = t / base - 1
        verdict = "" if target is None else ("ok" if over <= target else "MISS")
        print(f"{name:<20} {t * 1e3:>8.2f} {over * 100:>8.1f}% {'' if target is None else f'<= {target:.0%}':>8} {verdict}")


if __name__ == "__main__":
    main()
