"""What stays of each forgotten iteration (issue 13, item 12): a program of P parameters (3
elements each, SGD) recorded by the engine, replayed into a Trace with an event budget of 20
iterations, and the bytes tracemalloc sees held between iteration 200 and 399, per iteration
forgotten, by allocation site (the event objects made before tracing are not counted).

Run: python bench/bench_residue.py [--params 50] [--top 6]
"""
import argparse
import contextlib
import gc
import io
import tracemalloc

import gradviz
import gradviz.engine as torch
from gradviz.trace.model import Trace


def events(params, n):
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        ws = [torch.tensor([1., 2., 3.], requires_grad=True) for _ in range(params)]
        opt = torch.optim.SGD(ws, lr=0.001)
        for _ in range(n):
            loss = sum(((w * 2.0) ** 2).sum() for w in ws)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return rec.trace.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=50)
    ap.add_argument("--top", type=int, default=6)
    args = ap.parse_args()
    evs = events(args.params, 400)
    per = len(evs) // 400
    tracemalloc.start(3)
    t = Trace(budget_bytes=0, event_budget=20 * per)  # (no arrays held: their store is not the residue)
    snaps = {}
    for e in evs:
        t.apply(e)
        if type(e).__name__ == "IterationStarted" and e.index in (200, 399):
            gc.collect()
            snaps[e.index] = (tracemalloc.take_snapshot(), t.forgotten_iterations)
    (s1, f1), (s2, f2) = snaps[200], snaps[399]
    stats = s2.compare_to(s1, "traceback")
    total = sum(st.size_diff for st in stats)
    print(f"bench_residue: {args.params} parameters, {per} events an iteration; {total / (f2 - f1):.0f} B held "
          f"per forgotten iteration")
    for st in stats[:args.top]:
        where = " <- ".join(f"{fr.filename.rsplit('/', 2)[-1]}:{fr.lineno}" for fr in st.traceback)
        print(f"  {st.size_diff / (f2 - f1):8.0f} B/iteration  {where}")


if __name__ == "__main__":
    main()
