"""Trace files and memory within their budgets (issue 18, item 5): an mnist-sized program (a
784-128-10 MLP on random data, batch 64, SGD), on the engine and on PyTorch, recorded by `gradviz
record` with the default policy (512 MiB file budget) and with every array kept (`--file-budget
none`, the behaviour before); the file's growth per iteration, and the peak RSS of `gradviz info`
and of `gradviz.load` on each file, against reading the whole file's events first (as `load` did
before it streamed). Each measurement runs in a fresh process.

Run: python bench/bench_files.py [--iterations 1000] [--full-iterations 40] [--framework engine,torch]
"""
import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time

PROGRAM = '''
import sys
import {module} as torch
nn = torch.nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for i in range(int(sys.argv[1])):
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
'''

MEASURE = '''
import sys, io, contextlib
how, path, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
if how == "info":
    from gradviz.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main(["info", path])
    tail = out.getvalue().splitlines()[-1]
elif how == "load":
    import gradviz
    t = gradviz.load(path, budget_bytes=budget)
    full = t.file_notes.full_iterations
    full = sum(b - a + 1 for a, b in full) if full is not None else t.iterations
    tail = f"{full} {len(t.events)} events, {t.values.stored_bytes / 2**20:.0f} MiB of arrays held"
else:  # before: every event of the file decoded first, then the trace built
    from gradviz.trace.gvz import read_events
    from gradviz.trace.model import Trace
    t = Trace(budget)
    t.extend(read_events(path))
    tail = f"{len(t.events)} events, {t.values.stored_bytes / 2**20:.0f} MiB of arrays held"
# VmHWM, not ru_maxrss: that one keeps the high-water mark of the process that forked this one
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm, tail)
'''


def _rss(how, path, budget):
    out = subprocess.run([sys.executable, "-c", MEASURE, how, path, str(budget)], capture_output=True, text=True,
                         check=True)
    kib, tail = out.stdout.split(" ", 1)
    return int(kib) / 1024, tail.strip()


def _record(script, iterations, path, budget):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradviz.cli", "record", "--file-budget", budget, "-o", path, script,
                    str(iterations)], check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--full-iterations", type=int, default=40, help="iterations of the unbounded run")
    ap.add_argument("--framework", default="engine,torch")
    ap.add_argument("--memory-budget", type=int, default=64, help="MiB, for load (info keeps its 512)")
    args = ap.parse_args()
    print(f"bench_files: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for fw in args.framework.split(","):
            module = {"engine": "gradviz.engine", "torch": "torch"}[fw]
            if fw == "torch" and importlib.util.find_spec("torch") is None:  # (not imported here: see _rss)
                print("torch: not installed, skipped")
                continue
            script = os.path.join(tmp, f"mnist_{fw}.py")
            with open(script, "w") as f:
                f.write(PROGRAM.format(module=module))
            rows = []
            for label, budget, n in (("default policy (512M)", "512M", args.iterations),
                                     ("every array (none)", "none", args.full_iterations)):
                path = os.path.join(tmp, f"{fw}_{budget}.gvz")
                took = _record(script, n, path, budget)
                size = os.path.getsize(path)
                rows.append((label, n, size, took, path))
            print(f"\n{fw} ({module}), 784-128-10 MLP, batch 64")
            print(f"{'policy':<24}{'iterations':>11}{'file':>11}{'per iteration':>15}{'recording':>11}")
            for label, n, size, took, _ in rows:
                print(f"{label:<24}{n:>11}{size / 2**20:>9.1f} M{size / n / 1024:>13.1f} K{took:>10.1f}s")
            mb = args.memory_budget << 20
            full = rows[1][2] / rows[1][1]  # an iteration with every array
            kept = int(_rss("load", rows[0][4], mb)[1].split()[0])
            print(f"  the default policy kept {kept} iterations whole (~{kept * full / 2**20:.1f} M); the others grew "
                  f"the file by {(rows[0][2] - kept * full) / max(rows[0][1] - kept, 1) / 1024:.1f} K an iteration")
            print(f"peak RSS (MiB): info with its 512 MiB budget; load and before with a {args.memory_budget} MiB one")
            print(f"{'':<24}{'info':>11}{'load':>11}{'before: read all, then build':>31}")
            for label, _, _, _, path in rows:
                info, _ = _rss("info", path, 512 << 20)
                load, tail = _rss("load", path, mb)
                before, _ = _rss("before", path, mb)
                print(f"{label:<24}{info:>9.0f} M{load:>9.0f} M{before:>29.0f} M   (load: {tail.split(' ', 1)[1]})")
            os.remove(rows[1][4])


if __name__ == "__main__":
    main()
