"""A long live run's memory beyond the array budget (issue 13, item 12): the bytes the Debugger's
parent holds per event streamed, measured with tracemalloc, for a program that only trains (the
program of bench_poll.py), with the window's own indexes (the Timeline) built as the app builds
them. Prints bytes per event, of which arrays (the ValueStore's budget), and the top allocation
sites.

With ``--before``, as before issue 13 item 12's bound: no slim summaries past DETAIL_EVENTS and
arrays counted by their bytes alone. With ``--rss``, no tracemalloc (which slows the run several
times): the process's resident memory (VmRSS, VmHWM) at eight points of the run, side by side with
the events held in detail, up to ``--events``; ``--event-budget N`` sets the Trace's event budget
(default Trace's, 1,000,000; ``none``: unbounded), past which the oldest iterations are forgotten.
It also prints the longest forgetting step and slimming call (reader thread), the longest cleanup
of the timeline's indexes and the longest poll (GUI thread), in ms (issue 13, item 13).

Run: python bench/bench_memory.py [--events 100000] [--top 12] [--before] [--rss] [--event-budget N]
"""
import argparse
import gc
import os
import platform
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))
from bench_poll import PROGRAM  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--before", action="store_true", help="without the second bound (see above)")
    ap.add_argument("--rss", action="store_true", help="resident memory only, no tracemalloc")
    ap.add_argument("--event-budget", default="1000000", help="the Trace's event budget (none: unbounded)")
    args = ap.parse_args()
    from gradviz import Debugger
    from gradviz.app.timeline import Timeline
    from gradviz.trace import model
    if args.before:
        model.ARRAY_OVERHEAD = 0
    if args.rss:
        return rss(args)

    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "train.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        dbg = Debugger.launch(script=script, break_on_backward=False)
        if args.before:
            dbg.trace.detail_events = None
        tl = Timeline(dbg.trace)
        try:
            while len(dbg.trace.events) < args.events and dbg.state != "exited":
                time.sleep(0.2)
                with dbg.lock:
                    tl.marks()
        finally:
            dbg.terminate()
            dbg.close()
        with dbg.lock:
            tl.marks()
        gc.collect()
        n = len(dbg.trace.events)
        held, _ = tracemalloc.get_traced_memory()
        snap = tracemalloc.take_snapshot()
    arrays = dbg.trace.values.stored_bytes
    print(f"bench_memory{' --before' if args.before else ''}: {platform.python_implementation()} "
          f"{platform.python_version()}; {n} events held, {held / 2**20:.0f} MiB traced: {held / n:.0f} B per event, "
          f"of which arrays {arrays / n:.0f} B (with their objects); summaries slim before event "
          f"{dbg.trace.slim_before}")
    for stat in snap.compare_to(base, "lineno")[:args.top]:
        print(f"  {stat.size_diff / n:7.0f} B/event  {stat.traceback[0].filename.rsplit('/', 2)[-1]}:"
              f"{stat.traceback[0].lineno}  ({stat.count_diff} blocks)")


def _status(key):
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(key + ":"))) / 1024


def _ms(times):
    return f"{max(times) * 1000:.1f} ms" if times else "-"


def _time_calls():
    """Time each forgetting step and each making of older summaries slim (the trace's, in the
    reader thread) and each cleanup of the timeline's indexes (in the GUI thread): lists of
    seconds, filled as the run goes."""
    from gradviz.app.timeline import Timeline
    from gradviz.trace import model
    steps, prunes, polls, slims = [], [], [], []

    def timed(fn, into):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                into.append(time.perf_counter() - t0)
        return wrapper

    name = "forget_step" if hasattr(model, "forget_step") else "forget_older"
    setattr(model, name, timed(getattr(model, name), steps))
    Timeline._prune = timed(Timeline._prune, prunes)
    model.Trace._slim_older = timed(model.Trace._slim_older, slims)
    return steps, prunes, polls, slims


def rss(args):
    from gradviz import Debugger
    from gradviz.app.timeline import Timeline
    from gradviz.trace.model import FORGOTTEN
    budget = None if args.event_budget == "none" else int(args.event_budget)
    steps, prunes, polls, slims = _time_calls()
    points = [args.events * (i + 1) // 8 for i in range(8)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "train.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        gc.collect()
        start = _status("VmRSS")
        dbg = Debugger.launch(script=script, break_on_backward=False, event_budget=budget)
        if args.before:
            dbg.trace.detail_events = None
        tl = Timeline(dbg.trace)
        try:
            while len(dbg.trace.events) < args.events and dbg.state != "exited":
                time.sleep(0.2)
                with dbg.lock:
                    t0 = time.perf_counter()
                    tl.marks()
                    polls.append(time.perf_counter() - t0)
                    n = len(dbg.trace.events)
                    if points and n >= points[0]:
                        while points and n >= points[0]:
                            points.pop(0)
                        t = dbg.trace
                        rows.append((n, n - t.forgotten_before, t.forgotten_iterations, _status("VmRSS")))
        finally:
            dbg.terminate()
            dbg.close()
        with dbg.lock:
            tl.marks()
        gc.collect()
        n = len(dbg.trace.events)
        now = _status("VmRSS")
    live = sum(1 for e in dbg.trace.events if e is not FORGOTTEN)
    print(f"bench_memory --rss{' --before' if args.before else ''} --event-budget {args.event_budget}: {n} events "
          f"streamed, {live} held in detail; RSS {now:.0f} MiB (peak {_status('VmHWM'):.0f} MiB, {start:.0f} MiB "
          f"before the run): {(now - start) * 2**20 / n:.0f} B per event streamed; arrays "
          f"{dbg.trace.values.stored_bytes / 2**20:.0f} MiB with their objects; summaries slim before event "
          f"{dbg.trace.slim_before}; iterations forgotten: {dbg.trace.forgotten_iterations}")
    print(f"  slimming (reader thread): {len(slims)} calls, longest {_ms(slims)}; "
          f"forgetting steps (reader thread): {len(steps)}, longest {_ms(steps)}; the timeline's cleanups "
          f"(GUI thread): {len(prunes)}, longest {_ms(prunes)}; polls (marks() under the lock): {len(polls)}, "
          f"longest {_ms(polls)}")
    print(f"  {'events':>9} {'in detail':>10} {'forgotten its':>14} {'RSS MiB':>8}")
    for n, held, gone, mem in rows:
        print(f"  {n:>9} {held:>10} {gone:>14} {mem:>8.0f}")


if __name__ == "__main__":
    main()
