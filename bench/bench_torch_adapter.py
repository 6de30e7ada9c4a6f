"""The PyTorch adapter's overhead: resnet18 (plain torch) forward + backward on an 8x3x64x64 batch,
plain versus recorded with summaries, side by side in one run. Target: ratio at most 1.5 on the CPU.
Runs on CUDA too when it is available (--device cuda).

Run: python bench/bench_torch_adapter.py [--repeat N] [--device cpu|cuda] [--rounds N] (each side: its best round)
"""
import argparse
import os
import platform
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each side's best is kept")
    args = parser.parse_args()
    import torch
    import gradviz
    from gradviz.demos.torch_resnet import resnet18

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = resnet18().to(dev)
    x = torch.rand(8, 3, 64, 64, device=dev)

    def step():
        model.zero_grad()
        model(x).sum().backward()
        sync()

    def timed(recording):
        rec = gradviz.record(values="summaries") if recording else None
        if rec:
            rec.start()
        try:
            times = []
            for i in range(args.repeat + 2):
                t0 = time.perf_counter()
                step()
                if i >= 2:
                    times.append(time.perf_counter() - t0)
        finally:
            if rec:
                rec.stop()
        return statistics.median(times)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    plain, recorded = [], []
    for _ in range(args.rounds):  # interleaved rounds, so that drift hits both alike
        plain.append(timed(False))
        recorded.append(timed(True))
    p, r = min(plain), min(recorded)  # the best round of each: other work on the machine only adds
    verdict = "ok" if r / p <= 1.5 else "MISS"
    print(f"{'resnet18 fwd+bwd 8x3x64x64':<32} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'target':>7}")
    print(f"{'':<32} {p * 1e3:>9.1f} {r * 1e3:>12.1f} {r / p:>6.2f} {'<= 1.5':>7} {verdict}")


if __name__ == "__main__":
    main()
