"""The window's poll over a long live run (issue 13, item 13): what one 30 ms poll of MainWindow
costs when the program has streamed ~10k events, and when it has streamed ~300k, side by side.

A program that only trains (no pauses) runs under the Debugger; the window (offscreen) is polled
every 30 ms as its timer does, each poll timed, and the garbage collector's full (generation 2)
collections timed through gc.callbacks. Polls are grouped by the number of events the trace held
when they ran: the first group around --early events (default 10,000), the second around --late
(default 300,000, where the run is stopped). The program passes the early group in about a second,
a dozen polls, so --early-runs more runs (default 8), each in a fresh window, are stopped just past
it: the early group's median is then one of ~100 polls. The goal: a median under 16 ms at any run length and
no poll over 100 ms. Each poll's wall time is shown beside the CPU time of the window's thread
(``time.thread_time``): on a loaded machine the gap is time spent waiting for a CPU or for the GIL
(the debugger's reader thread decodes the stream meanwhile).

Run: QT_QPA_PLATFORM=offscreen python bench/bench_poll.py [--early 10000] [--late 300000]
[--width 0.3]
[--early-runs 8] [--profile N]
"""
import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PROGRAM = """
import time
import gradviz.engine as torch
w = torch.tensor([1., 2., 3.], requires_grad=True)
b = torch.tensor([0.5], requires_grad=True)
while True:
    loss = ((w * 2 + b) ** 2).sum()
    loss.backward()
    w.grad = None
    b.grad = None
    time.sleep(0.001)  # paced: every group gets polls with about as many new events each
"""


def figures(ms):
    if not ms:
        return "no polls"
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return (f"{len(ms):4d} polls  median {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  "
            f"max {ms[-1]:7.1f} ms  over 100 ms: {sum(m > 100 for m in ms)}")


def run_once(app, script, until, groups, args, profile=0):
    """One run of PROGRAM in a fresh window, polled every POLL_MS until the trace holds ``until``
    events; each poll's time (and the full GC passes during it) goes to the groups it falls in."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import POLL_MS, MainWindow

    state = AppState(launch=lambda breakpoints=(), **kw: Debugger.launch(
        script=script, breakpoints=breakpoints, **{**kw, "break_on_backward": False}))
    window = MainWindow(state, "bench")
    window.timer.stop()  # polled here, timed
    window.resize(1400, 900)
    window.show()
    n = 0
    try:
        while True:
            app.processEvents()
            n = len(state.debugger.trace.events)
            before = len(GC_MS)
            c0, t0 = time.thread_time(), time.perf_counter()
            window.poll()
            dt, dc = (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
            for name, target in (("early", args.early), ("late", args.late)):
                if abs(n - target) <= args.width * target:
                    groups[name][0].append(dt)
                    groups[name][1].extend(GC_MS[before:])
                    groups[name][2].append(dc)
            if n >= until or state.debugger.state == "exited":
                break
            if profile and n >= args.late:
                import cProfile
                import pstats
                prof = cProfile.Profile()
                for _ in range(profile):
                    time.sleep(POLL_MS / 1e3)
                    app.processEvents()
                    prof.runcall(window.poll)
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
                profile = 0
            time.sleep(POLL_MS / 1e3)
    finally:
        window.timer.stop()
        state.close()
        window.close()
    return n


GC_MS: list = []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--early", type=int, default=10_000)
    ap.add_argument("--late", type=int, default=300_000)
    ap.add_argument("--width", type=float, default=0.3, help="a group: events within this fraction of its size")
    ap.add_argument("--early-runs", type=int, default=8,
                    help="extra runs stopped past the early group, so that it holds a real median (the "
                         "program passes ~10k events in about a second: a dozen polls a run)")
    ap.add_argument("--profile", type=int, default=0, help="profile this many polls past --late, print the top")
    args = ap.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    gc_start = [0.0]

    def on_gc(phase, info):
        if info.get("generation") == 2:
            if phase == "start":
                gc_start[0] = time.perf_counter()
            else:
                GC_MS.append((time.perf_counter() - gc_start[0]) * 1e3)
    gc.callbacks.append(on_gc)

    groups = {"early": ([], [], []), "late": ([], [], [])}  # (poll ms, gc ms during them, poll CPU ms)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "train.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        for _ in range(args.early_runs):
            run_once(app, script, int(args.early * (1 + args.width)) + 1, groups, args)
        n = run_once(app, script, int(args.late * (1 + args.width)), groups, args, args.profile)
    elapsed = time.perf_counter() - t_start

    print(f"bench_poll: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; {args.early_runs} runs to ~{args.early:,} events and one to {n:,}, "
          f"{elapsed:.0f} s in all")
    for name, target in (("early", args.early), ("late", args.late)):
        ms, gcs, cpu = groups[name]
        print(f"  ~{target:>7,} events: {figures(ms)}")
        print(f"  {'':>16}  CPU time of the window's thread: {figures(cpu)}")
        print(f"  {'':>16}  full GC passes during them: {len(gcs)}" +
              (f", longest {max(gcs):.0f} ms" if gcs else ""))


if __name__ == "__main__":
    main()
