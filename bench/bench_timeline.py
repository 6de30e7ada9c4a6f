"""Time travel's cost: Timeline.trace_at(k) on recordings of the mlp demo, (a) at 50 random positions
and (b) at every position from the end back to 0, one step at a time, as dragging the slider back
does; each against a fresh replay of events[:k] (what trace_at would cost with no checkpoints).
Then (c) AppState.set_time over the same backward drag: trace_at plus relaying out the graph
whenever its node count changes, what the app pays per slider step.

The recordings: the mlp demo as it ships (5 iterations) and the same with --iterations more
(a few thousand events). Run: python bench/bench_timeline.py [--iterations 50] [--seed 0]
"""
import argparse
import os
import platform
import random
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gradviz  # noqa: E402
from gradviz import demos  # noqa: E402
from gradviz.appstate import AppState  # noqa: E402
from gradviz.timeline import Timeline  # noqa: E402
from gradviz.trace import Trace  # noqa: E402


def record(iterations):
    with gradviz.record() as rec:
        if iterations is None:
            demos.run("mlp")
        else:
            demos.demo_module("mlp").main(iterations=iterations)
    return rec.trace


def timed(fn, positions):
    """Milliseconds per call of fn(k) for each k: (mean, median, max)."""
    ms = []
    for k in positions:
        t0 = time.perf_counter()
        fn(k)
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.mean(ms), statistics.median(ms), max(ms)


def fresh(trace):
    def replay(k):
        t = Trace(trace.values.budget)
        t.extend(trace.events[:k])
        return t
    return replay


def row(what, figures):
    mean, median, worst = figures
    print(f"  {what:44s} mean {mean:7.3f} ms   median {median:7.3f} ms   max {worst:7.3f} ms")


def bench(trace, name, rng):
    n = len(trace.events)
    print(f"{name}: {n} events, {trace.graph.number_of_nodes()} graph nodes, {len(trace.passes)} passes")
    randoms = [rng.randint(0, n) for _ in range(50)]
    backward = list(range(n, -1, -1))

    cold = Timeline(trace)
    t0 = time.perf_counter()
    cold.trace_at(n)
    print(f"  first trace_at(end) on a new Timeline (builds {len(cold._checkpoints)} checkpoints): "
          f"{(time.perf_counter() - t0) * 1e3:.2f} ms")
    row("trace_at, 50 random positions", timed(Timeline(trace).trace_at, randoms))
    row("trace_at, warm, 50 random positions", timed(cold.trace_at, randoms))
    row(f"trace_at, drag back {n}..0 step by step", timed(Timeline(trace).trace_at, backward))
    row("fresh replay, 50 random positions", timed(fresh(trace), randoms))
    st = AppState(trace=trace)
    st.poll()
    row("AppState.set_time, drag back (+layout)", timed(st.set_time, backward))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=50, help="iterations of the larger mlp recording")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.processor() or platform.platform()}")
    rng = random.Random(args.seed)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # the demo's loss lines
        small, large = record(None), record(args.iterations)
    bench(small, "mlp demo (5 iterations)", rng)
    bench(large, f"mlp, {args.iterations} iterations", rng)


if __name__ == "__main__":
    main()
