"""Time travel's cost: Timeline.trace_at(k) on recordings of the mlp demo, (a) at 50 random positions
on a new Timeline (the first question indexes the events once) and on a warm one, (b) at every
position from the end back to 0, one step at a time, as dragging the slider back does; against a
fresh replay of events[:k] (what a moment costs when rebuilt from the start). Then (c)
AppState.set_time over the same drag: trace_at plus relaying out the graph whenever its node
count changes, what the app pays per slider step (a long run's drag is sampled: every 97th).

The recordings: the mlp demo as it ships (5 iterations), with --iterations (50), and a long run
(--long, 2,000 iterations: ~200k events). Run: python bench/bench_timeline.py [--iterations 50]
[--long 2000] [--seed 0]
"""
import argparse
import os
import platform
import random
import statistics
import time

import gradviz  # noqa: E402
from gradviz import demos  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402
from gradviz.app.timeline import Timeline  # noqa: E402
from gradviz.trace.model import Trace  # noqa: E402


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
    step = 1 if n < 20000 else 97
    backward = list(range(n, -1, -step))

    cold = Timeline(trace)
    t0 = time.perf_counter()
    cold.trace_at(n // 2)
    print(f"  first trace_at(middle) on a new Timeline (indexes {n} events): "
          f"{(time.perf_counter() - t0) * 1e3:.2f} ms")
    row("trace_at, warm, 50 random positions", timed(cold.trace_at, randoms))
    row(f"trace_at, drag back {n}..0 by {step}", timed(cold.trace_at, backward))
    row("fresh replay, 50 random positions", timed(fresh(trace), randoms[:50 if n < 20000 else 3]))
    st = AppState(trace=trace)
    st.poll()
    row(f"AppState.set_time, drag back by {step} (+layout)", timed(st.set_time, backward))
    st.set_time(None)
    row("what a poll reads, live at the end", timed(lambda _: poll_reads(st), range(20)))
    st.set_time(n // 2)
    row("what a poll reads, at the middle", timed(lambda _: poll_reads(st), range(20)))


def poll_reads(st):
    """What the window reads of the state each time something changed (less the Qt drawing):
    the console, the status line, the graph's colours and labels, the selection's plots."""
    from gradviz.app import plots
    st.poll()
    st.console()
    st.status_text()
    st.ran()
    st.graph_model.edge_labels()
    st.graph_model.leaf_grads()
    key = next(k for k, d in st.graph.nodes(data=True) if d.get("name") == "2.weight")
    st.select(key)
    st.selected_value()
    plots.grad_norm_history(st.trace, key)
    plots.gradient_flow(st.trace)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=50, help="iterations of the larger mlp recording")
    ap.add_argument("--long", type=int, default=2000, help="iterations of the long recording")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.processor() or platform.platform()}")
    rng = random.Random(args.seed)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # the demo's loss lines
        small, large, long = record(None), record(args.iterations), record(args.long)
    bench(small, "mlp demo (5 iterations)", rng)
    bench(large, f"mlp, {args.iterations} iterations", rng)
    bench(long, f"mlp, {args.long} iterations", rng)


if __name__ == "__main__":
    main()
