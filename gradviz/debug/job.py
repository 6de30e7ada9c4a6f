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
