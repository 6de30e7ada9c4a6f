"""Floors: what the recording targets of issue 18 cannot go below on this machine, whatever gradviz
does, measured side by side with the plain step (pairs of adjacent steps, bench/_paired.py's way).

1. **Framework callbacks** (the small-op program of bench_small_ops.py, PyTorch): a TorchFunctionMode
   that does nothing but call the op, plus one post hook per graph node that does nothing. PyTorch
   offers no cheaper way to see a node made and a node run; gradviz's own work comes on top.
2. **Exact reads** (the engine's MLP step of bench_recorder.py; PyTorch's resnet18 8x3x64x64 of
   bench_torch_adapter.py): a summary's count, min, max, norm and non-finite counts are exact, so
   every value a recording summarises is read. The arrays read are the very ones a recording of
   one step summarises (taken from a recording with full values: each large array once); small
   ones (sample statistics) are left out, so this is a floor. Timed three ways: the step followed
   by three whole-array passes (dot, min, max: numpy has no fused min/max/norm), by the same in
   cache-sized chunks (what ``summary.exact_stats`` does), and with those reads on a worker thread
   running while the step runs (joined at its end): what moving them off the critical path gains
   when the framework keeps both cores busy.

Run: python bench/bench_floors.py [--pairs N] [--no-torch]
"""
import argparse
import os
import platform
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _paired import summary  # noqa: E402

from gradviz.summary import EXACT_LIMIT, exact_stats  # noqa: E402


def _pairs(plain, other, pairs, warmup=2):
    """Median of other/plain over adjacent pairs, its middle half, and the plain median (ms)."""
    for _ in range(warmup):
        plain()
        other()
    p, o = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        plain()
        p.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        other()
        o.append(time.perf_counter() - t0)
    plain_median, _, ratio, middle, _ = summary(p, o)
    return ratio, middle, plain_median * 1e3


def _line(name, ratio, mid, plain_ms, target):
    print(f"{name:<52} {plain_ms:>9.1f} {ratio:>7.2f} {mid[0]:>6.2f}-{mid[1]:<6.2f} {target:>8}")


def _large_arrays(step):
    """The large arrays one recorded step summarises: their full values from a recording."""
    import gradviz
    step()
    with gradviz.record(values="full", budget_bytes=1 << 34) as rec:
        step()
        step()
    seen, arrays = set(), []
    from gradviz.trace.model import _values_of
    start = max(i for i, e in enumerate(rec.trace.events) if type(e).__name__ == "IterationStarted")
    for e in rec.trace.events[start:]:
        for v in _values_of(e):
            if v is None or v.array is None or id(v) in seen or v.array.size <= EXACT_LIMIT:
                continue
            seen.add(id(v))
            arrays.append(np.ascontiguousarray(v.array))
    return arrays


def _three_passes(arrays):
    def read():
        for a in arrays:
            f = a.reshape(-1)
            np.dot(f, f)
            np.minimum.reduce(f)
            np.maximum.reduce(f)
    return read


def _chunked(arrays):
    def read():
        for a in arrays:
            exact_stats(a.reshape(-1))
    return read


def _torch_reads(arrays):
    import torch
    tensors = [torch.from_numpy(a.reshape(-1)) for a in arrays]

    def read():
        for t in tensors:
            torch.aminmax(t)
            torch.dot(t, t)
    return read


def _on_worker(step, read):
    """The step with ``read`` running on a worker thread meanwhile, joined at its end."""
    def both():
        th = threading.Thread(target=read)
        th.start()
        step()
        th.join()
    return both


def _then(step, read):
    def both():
        step()
        read()
    return both


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
                                       if torch else ", no torch"))
    print(f"{'floor (plain step against plain + the floor)':<52} {'plain ms':>9} {'ratio':>7} {'middle half':>13} "
          f"{'target':>8}")

    import gradviz.engine as gt
    from bench_engine import mlp_step
    step = mlp_step(gt)
    arrays = _large_arrays(step)
    mb = sum(a.nbytes for a in arrays) / 1e6
    for name, fn in [(f"engine MLP: exact reads, 3 passes ({len(arrays)} arrays, {mb:.0f} MB)",
                      _then(step, _three_passes(arrays))),
                     ("engine MLP: exact reads, chunked", _then(step, _chunked(arrays))),
                     ("engine MLP: exact reads on a worker thread", _on_worker(step, _three_passes(arrays)))]:
        _line(name, *_pairs(step, fn, args.pairs), "<= 1.10")

    if torch is None:
        print("(no torch: its floors are not measured)")
        return
    from bench_small_ops import sequence_step
    from torch.overrides import TorchFunctionMode
    small = sequence_step(torch)
    hooked = set()

    def post(grad_inputs, grad_outputs):
        return None

    def hook_new(fn):
        stack = [fn]
        while stack:
            f = stack.pop()
            if f is None or f in hooked:
                continue
            hooked.add(f)
            f.register_hook(post)
            stack.extend(n for n, _ in f.next_functions)

    class Callbacks(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in (out if type(out) is tuple else (out,)):
                if type(o) is torch.Tensor and o.grad_fn is not None:
                    hook_new(o.grad_fn)
            return out

    def small_with_callbacks():
        hooked.clear()
        with Callbacks():
            small()
    _line("LSTMCell x100: a no-op mode and a no-op hook a node", *_pairs(small, small_with_callbacks, args.pairs),
          "<= 3.0")

    from bench_engine import plain_torch_resnet18, resnet_step
    torch.manual_seed(0)
    rstep = resnet_step(torch, plain_torch_resnet18(torch))
    tarrays = _large_arrays(rstep)
    mb = sum(a.nbytes for a in tarrays) / 1e6
    for name, fn in [(f"resnet18 CPU: exact reads, aminmax + dot ({len(tarrays)}, {mb:.0f} MB)",
                      _then(rstep, _torch_reads(tarrays))),
                     ("resnet18 CPU: exact reads on a worker thread", _on_worker(rstep, _torch_reads(tarrays)))]:
        _line(name, *_pairs(rstep, fn, max(6, args.pairs // 2)), "<= 1.30")


if __name__ == "__main__":
    main()
