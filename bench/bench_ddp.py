"""A 2-rank DistributedDataParallel job (gradviz/demos/torch_ddp.py on gloo, CPU) run plain and
under ``gradviz record`` (every rank recorded, full values), alternately, side by side in one run:
the wall time of each whole job (start, rendezvous, ``--iterations`` steps, exit), and the ratio of
the medians. Each rank runs with OMP_NUM_THREADS=1.

Run: python bench/bench_ddp.py [--iterations N] [--repeats K]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def job(folder, recorded, iterations):
    from gradviz.debug.job import free_port, record_command, start_ranks
    from gradviz.demos import torch_ddp
    args = ["--iterations", str(iterations)]

    def command(rank):
        if recorded:
            return record_command(os.path.join(folder, "run.gvz"), script=torch_ddp.__file__, args=args)
        return [sys.executable, torch_ddp.__file__, *args]
    t0 = time.perf_counter()
    ranks = start_ranks(command, range(2), 2, free_port(), cwd=folder, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, extra_env={"OMP_NUM_THREADS": "1"})
    status = ranks.wait(timeout=600)
    if status != {0: 0, 1: 0}:
        raise RuntimeError(f"the job failed: {status}")
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for recorded in (False, True):
                times[recorded].append(job(folder, recorded, args.iterations))
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".gvz"))
    plain, rec = statistics.median(times[False]), statistics.median(times[True])
    print(f"2 ranks, {args.iterations} iterations, median of {args.repeats} jobs each (wall time, whole job):")
    print(f"  plain     {plain:7.2f} s")
    print(f"  recorded  {rec:7.2f} s   x{rec / plain:.2f}   ({size / 2**20:.1f} MiB of traces a job)")


if __name__ == "__main__":
    main()
