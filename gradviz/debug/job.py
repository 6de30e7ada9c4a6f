"""Starting the ranks of a data-parallel job on this machine as torchrun would: each rank a
process with torchrun's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), which ``torch.distributed.init_process_group`` reads.
``gradviz run --nproc-per-node N`` starts the ranks it does not debug with ``start_ranks``; the
debugged rank gets ``rank_env`` for its own child."""
from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    """A TCP port free on the loopback now, for the job's rendezvous (rank 0's store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world_size: int, port: int, base=None) -> dict[str, str]:
    """The environment of rank ``rank`` of a one-machine job of ``world_size`` ranks."""
    env = dict(os.environ if base is None else base)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
               LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size), GROUP_RANK="0")
    return env


def record_command(output, script=None, args=(), demo=None, values="full") -> list[str]:
    """``gradviz record`` of a script: one rank's command line (its file is named after its rank)."""
    cmd = [sys.executable, "-m", "gradviz", "record", "--values", values, "-o", os.fspath(output)]
    if demo:
        cmd += ["--demo", demo]
    else:
        cmd.append(os.fspath(script))
    return cmd + [str(a) for a in args]


class Ranks:
    """Ranks started by ``start_ranks``: ``wait()`` for them, ``stop()`` them (idempotent)."""

    def __init__(self, procs: dict[int, subprocess.Popen]):
        self.procs = procs

    def wait(self, timeout=None) -> dict[int, int]:
        """{rank: exit status} once every rank has ended."""
        return {r: p.wait(timeout=timeout) for r, p in self.procs.items()}

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_ranks(command, ranks, world_size, port, cwd=None, stdout=None, stderr=None, extra_env=None) -> Ranks:
    """Start ``command(rank)`` (a command line) for each rank in ``ranks`` with its environment
    (and ``extra_env``'s variables)."""
    procs = {r: subprocess.Popen(command(r), env={**rank_env(r, world_size, port), **(extra_env or {})}, cwd=cwd,
                                 stdout=stdout, stderr=stderr)
             for r in ranks}
    return Ranks(procs)


FINISH_GRACE_S = 10.0  # once the debugged rank is over, how long the others get to end on their own


class Job:
    """``gradviz run --nproc-per-node N``: the ranks recorded beside the one being debugged."""

    def __init__(self, ranks: Ranks, output: str, debug_rank: int):
        self.ranks, self.output, self.debug_rank = ranks, output, debug_rank

    def finish(self):
        """The window closed: the other ranks end on their own within FINISH_GRACE_S (a rank
        blocked in a collective with the debugged one never would), else are stopped."""
        import time
        deadline = time.monotonic() + FINISH_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.ranks.procs.values()):
            time.sleep(0.1)
        stopped = [r for r, p in self.ranks.procs.items() if p.poll() is None]
        self.ranks.stop()
        from gradviz.trace.ranks import rank_path
        files = ", ".join(rank_path(self.output, r) for r in self.ranks.procs)
        print(f"gradviz run: the other ranks' traces: {files}" +
              (f" (ranks {', '.join(map(str, stopped))} were stopped)" if stopped else ""), file=sys.stderr)


def start_job(args, script_args):
    """For ``gradviz run --nproc-per-node N [--debug-rank R] [-o RUN.gvz]``: start every rank but R
    under ``gradviz record`` with torchrun's environment, and give this process rank R's (the
    debugger's child inherits it). A ``Job``, or the exit status after saying what is wrong."""
    n, debug = args.nproc_per_node, args.debug_rank
    if n < 1:
        print(f"gradviz run: --nproc-per-node takes a number of ranks of 1 or more, got {n}", file=sys.stderr)
        return 2
    if not 0 <= debug < n:
        print(f"gradviz run: --debug-rank {debug} is not a rank of {n} (0 to {n - 1})", file=sys.stderr)
        return 2
    script = None if args.demo else os.path.abspath(script_args[0])
    output = os.path.abspath(args.output or os.path.splitext(os.path.basename(script or args.demo))[0] + ".gvz")
    port = free_port()
    rest = script_args if args.demo else script_args[1:]

    def command(rank):
        return record_command(output, script=script, args=rest, demo=args.demo)
    ranks = start_ranks(command, [r for r in range(n) if r != debug], n, port)
    os.environ.update(rank_env(debug, n, port, base={}))
    return Job(ranks, output, debug)
