"""A long live run's memory beyond the array budget (issue 13, item 12): the bytes the Debugger's
parent holds per event streamed, measured with tracemalloc, for a program that only trains (the
program of bench_poll.py), with the window's own indexes (the Timeline) built as the app builds
them. Prints bytes per event, of which arrays (the ValueStore's budget), and the top allocation
sites.

Run: python bench/bench_memory.py [--events 100000] [--top 12]
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
    args = ap.parse_args()
    from gradviz import Debugger
    from gradviz.app.timeline import Timeline

    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "train.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        dbg = Debugger.launch(script=script, break_on_backward=False)
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
    print(f"bench_memory: {platform.python_implementation()} {platform.python_version()}; {n} events held, "
          f"{held / 2**20:.0f} MiB traced: {held / n:.0f} B per event, of which arrays {arrays / n:.0f} B")
    for stat in snap.compare_to(base, "lineno")[:args.top]:
        print(f"  {stat.size_diff / n:7.0f} B/event  {stat.traceback[0].filename.rsplit('/', 2)[-1]}:"
              f"{stat.traceback[0].lineno}  ({stat.count_diff} blocks)")


if __name__ == "__main__":
    main()
