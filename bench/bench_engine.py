"""Times gradviz.engine and PyTorch (CPU) side by side in one run and prints engine/torch ratios.

(a) one MLP training step (784-1024-1024-10, batch 256, float32): forward, cross entropy, backward,
    SGD step. Target: ratio <= 1.2.
(b) resnet18 forward + backward on an 8x3x64x64 batch. Target: ratio <= 3.

Run: python bench/bench_engine.py [--repeat N]. Needs torch==2.13.0 for the torch column.
"""
import argparse
import os
import platform
import statistics
import time


def timeit(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mlp_step(lib, seed=0):
    lib.manual_seed(seed)
    nn = lib.nn
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = lib.randn(256, 784)
    y = lib.randint(0, 10, (256,))

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def plain_torch_resnet18(torch):
    from gradviz.demos.torch_resnet import resnet18
    return resnet18()


def resnet_step(lib, model):
    x = lib.rand(8, 3, 64, 64)

    def step():
        model.zero_grad()
        model(x).sum().backward()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    import numpy as np
    import gradviz.engine as gt
    try:
        import torch
    except ImportError:
        torch = None
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__ if torch else 'absent'}, "
          f"torch threads {torch.get_num_threads() if torch else '-'}")
    from gradviz.engine.models import resnet18
    cases = [
        ("(a) MLP 784-1024-1024-10 train step, batch 256", 1.2,
         lambda: mlp_step(gt), lambda: mlp_step(torch)),
        ("(b) resnet18 fwd+bwd, 8x3x64x64", 3.0,
         lambda: resnet_step(gt, resnet18()), lambda: resnet_step(torch, plain_torch_resnet18(torch))),
    ]
    print(f"{'case':<50} {'engine ms':>10} {'torch ms':>10} {'ratio':>7} {'target':>7}")
    for name, target, make_engine, make_torch in cases:
        te = timeit(make_engine(), args.repeat)
        tt = timeit(make_torch(), args.repeat) if torch else float("nan")
        ratio = te / tt if torch else float("nan")
        flag = "ok" if ratio <= target else "MISS"
        print(f"{name:<50} {te * 1e3:>10.1f} {tt * 1e3:>10.1f} {ratio:>7.2f} {'<= ' + str(target):>7} {flag}")


if __name__ == "__main__":
    main()
