"""The gradient check of a resnet18 conv node (issue 16, part 1): ``Debugger.check_node`` at every
ConvolutionBackward0 of one backward pass of resnet18 (batch 8x3x64x64, the size the peers'
figures use), on gradviz's engine and, when installed, in PyTorch; side by side, per node: the
check's wall time, the node's forward run once in float64 (what each direction costs twice), the
directions checked of all there are, and the forward runs. The goal: every conv check under a
second (TIME_BUDGET bounds the directions; a node whose single float64 forward takes longer than
that gets its one dense direction and the element of largest gradient, and says so).

A torch MLP (Linear, ReLU, Linear, cross_entropy) is checked whole too (``check_pass``): its
composite calls' nodes (F.linear's TBackward0 and AddmmBackward0, cross_entropy's LogSoftmaxBackward0
and NllLossBackward0) are replayed as the aten calls that made them (gradviz.adapters.torch.aten_calls);
and the price of seeing those calls: a resnet18 forward with every aten call through the
TorchDispatchMode that keeps them, against the same forward without it.

Run: python bench/bench_check.py [--batch 8] [--size 64] [--nodes 20] [--torch-only | --engine-only]
                                 [--mlp-only]
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

ENGINE = """
import gradviz.engine as torch
import gradviz.engine.nn.functional as F
from gradviz.engine.models import resnet18
torch.manual_seed(0)
model = resnet18(num_classes=10)
F.cross_entropy(model(torch.randn({batch}, 3, {size}, {size})), torch.randint(0, 10, ({batch},))).backward()
"""

TORCH = """
import torch
import torch.nn.functional as F
from gradviz.demos.torch_resnet import resnet18
torch.manual_seed(0)
model = resnet18(10)
F.cross_entropy(model(torch.randn({batch}, 3, {size}, {size})), torch.randint(0, 10, ({batch},))).backward()
"""


MLP = """
import torch
import torch.nn as nn
import torch.nn.functional as F
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
F.cross_entropy(model(torch.randn({batch}, 784)), torch.randint(0, 10, ({batch},))).backward()
"""


def run_mlp(args):
    from gradviz import Debugger
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "torch_mlp.py")
        with open(script, "w") as f:
            f.write(MLP.format(batch=args.batch * 8))
        with Debugger.launch(script=script, stop_on_entry=True, start_timeout=120) as dbg:
            dbg.wait_paused(timeout=120)
            t0 = time.perf_counter()
            checks = dbg.check_pass(timeout=600)
            wall = time.perf_counter() - t0
    print(f"\ntorch MLP 784-256-10, batch {args.batch * 8}: every node of the pass, {wall:.2f} s in all")
    print(f"{'node':>6} {'op':<22} {'in child s':>10} {'directions':>18} {'fwd runs':>8}  verdict")
    for c in checks:
        verdict = "ok" if c.ok else "FAIL" if c.ok is False else f"not checked ({(c.reason or '').split(':')[0][:44]})"
        print(f"n{c.node:<5} {c.op[-22:]:<22} {c.seconds:10.3f} {c.directions_checked:>7} of "
              f"{c.directions_total:<8} {c.evaluations:8}  {verdict}")


def aten_overhead(args):
    import torch

    from gradviz.adapters.torch.aten_calls import AtenCalls
    from gradviz.demos.torch_resnet import resnet18
    torch.manual_seed(0)
    model, x = resnet18(10), torch.randn(args.batch, 3, args.size, args.size)

    def forward(seen):
        t0 = time.perf_counter()
        if seen:
            with AtenCalls(torch):
                model(x)
        else:
            model(x)
        return time.perf_counter() - t0
    forward(True), forward(False)  # warm
    plain = statistics.median(forward(False) for _ in range(5))
    seen = statistics.median(forward(True) for _ in range(5))
    print(f"\nresnet18 forward {args.batch}x3x{args.size}x{args.size}: plain {plain:.3f} s, every aten call "
          f"kept by AtenCalls {seen:.3f} s: x{seen / plain:.2f}")


def run(name, source, args):
    from gradviz import Debugger
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, f"{name}_resnet18.py")
        with open(script, "w") as f:
            f.write(source.format(batch=args.batch, size=args.size))
        rows = []
        with Debugger.launch(script=script, values="summaries", breakpoints=["ConvolutionBackward0"],
                             start_timeout=120) as dbg:
            while len(rows) < args.nodes:
                p = dbg.wait_paused(timeout=600)
                if p.reason == "exited":
                    break
                t0 = time.perf_counter()
                c = dbg.check_node(timeout=600)
                wall = time.perf_counter() - t0
                one = c.seconds / max(c.evaluations, 1)  # about one float64 forward (the check's own mean)
                rows.append((p.node, wall, c.seconds, one, c.directions_checked, c.directions_total, c.evaluations,
                             c.ok))
                dbg.resume()
    print(f"\n{name}: {len(rows)} ConvolutionBackward0 nodes, batch {args.batch}x3x{args.size}x{args.size}")
    print(f"{'node':>6} {'check s':>8} {'in child s':>10} {'fwd64 s':>8} {'directions':>18} {'fwd runs':>8}  ok")
    for node, wall, child, one, k, n, ev, ok in rows:
        print(f"n{node:<5} {wall:8.3f} {child:10.3f} {one:8.3f} {k:>7} of {n:<8} {ev:8}  {ok}")
    if rows:
        walls = [r[1] for r in rows]
        print(f"check wall time: median {statistics.median(walls):.3f} s, max {max(walls):.3f} s; "
              f"{sum(w < 1.0 for w in walls)} of {len(walls)} under a second")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--engine-only", action="store_true")
    ap.add_argument("--mlp-only", action="store_true")
    args = ap.parse_args()
    print(f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
          f"Python {sys.version.split()[0]}")
    if args.mlp_only:
        run_mlp(args)
        aten_overhead(args)
        return
    if not args.torch_only:
        run("engine", ENGINE, args)
    if not args.engine_only:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("\ntorch: not installed, skipped")
            return
        run("torch", TORCH, args)
        run_mlp(args)
        aten_overhead(args)


if __name__ == "__main__":
    main()
