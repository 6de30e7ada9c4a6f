"""The PyTorch adapter's overhead: resnet18 (plain torch) forward + backward on an 8x3x64x64 batch,
plain versus recorded with summaries, side by side in one run. Target (issue 18): ratio at most 1.3
(goal 1.1), on the CPU and on a GPU.
Also, for comparison, the same with an SGD step after the backward pass (a training step), and
forward + backward on larger inputs (128x128, and 224x224: resnet18's own).
Runs on CUDA too when it is available (--device cuda).

One recorder runs a few steps first (its steady state), then steps alternate between its hooks off
and on (bench/_paired.py: this machine drifts too much for one side to be timed after the other);
the ratio is the median of the pairs' ratios. "all steps" is the total recorded time over the total
plain time: it also counts the garbage collector's rare full passes, which the growing trace makes
longer (and a neighbour's bursts).

Run: python bench/bench_torch_adapter.py [--pairs N] [--device cpu|cuda]
"""
import argparse
import functools
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paired import paired, summary  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch
    import gradviz
    from gradviz.demos.torch_resnet import resnet18

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = resnet18().to(dev)
    inputs = {size: torch.rand(8, 3, size, size, device=dev) for size in (64, 128, 224)}
    x = inputs[64]

    # lr 0: the step runs and writes every weight as a real one does, but the loss is a plain sum
    # whose weights would diverge to inf within the run
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def forward_backward(inp):
        model.zero_grad()
        model(inp).sum().backward()
        sync()

    def step():
        forward_backward(x)

    def training_step():  # for comparison: with an optimizer step, as in training
        step()
        opt.step()
        sync()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    for _ in range(2):
        step()
    print(f"{'resnet18 8x3x64x64':<28} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'middle half':>13} "
          f"{'target':>7} {'':4} {'all steps':>9}")
    # For comparison too: larger inputs (224x224 is resnet18's own). Recording's cost is mostly
    # fixed per step (a summary per value, an event per node), so the ratio falls as the work grows.
    larger = [(f"... input 8x3x{size}x{size}", functools.partial(forward_backward, inputs[size]), None)
              for size in (128, 224)]
    for name, fn, target in [("forward + backward", step, 1.3), ("... + SGD step", training_step, None)] + larger:
        pairs = args.pairs if "input" not in name else max(4, args.pairs // 5)  # (their steps are long)
        p, r, ratio, (lo, hi), total = summary(*paired(fn, gradviz.record(values="summaries"), args.warmup, pairs))
        verdict = "" if target is None else "ok" if ratio <= target else "MISS"
        print(f"{name:<28} {p * 1e3:>9.1f} {r * 1e3:>12.1f} {ratio:>6.2f} {lo:>6.2f}-{hi:<6.2f} "
              f"{'<= ' + str(target) if target else '':>7} {verdict:4} {total:>9.2f}")


if __name__ == "__main__":
    main()
