"""The traces of a data-parallel job: one ``.gvz`` file a rank, ``run.rank0.gvz``, ``run.rank1.gvz``
..., named after the path the user gave (``run.gvz``). ``load_ranks`` opens them together from any
one of them, from the name given to the recorder, or from their folder.

Which rank a process is comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), the same variables ``torch.distributed.init_process_group`` reads."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from gradviz.trace.files import load
from gradviz.trace.gvz import TraceFormatError
from gradviz.trace.model import Trace

_RANK_FILE = re.compile(r"^(?P<stem>.*)\.rank(?P<rank>\d+)\.gvz$")


@dataclass(frozen=True)
class JobRank:
    """This process's place in a distributed job, from its environment."""

    rank: int
    world_size: int
    local_rank: int


def job_rank(environ=None) -> JobRank | None:
    """The rank this process is in a job launched by torchrun (or anything that sets its
    variables), or None when it is not one: no ``RANK`` and ``WORLD_SIZE``, or values that are not
    a rank within a world."""
    env = os.environ if environ is None else environ
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        return None
    if not 0 <= rank < world:
        return None
    return JobRank(rank, world, local)


def rank_path(path, rank: int) -> str:
    """``run.gvz`` -> ``run.rank3.gvz`` (a name without ``.gvz`` gets it)."""
    path = os.fspath(path)
    stem = path[:-4] if path.endswith(".gvz") else path
    return f"{stem}.rank{rank}.gvz"


def recording_path(path, environ=None):
    """Where a recording asked to write ``path`` writes: the rank's own file in a job, else ``path``."""
    job = job_rank(environ)
    return os.fspath(path) if job is None else rank_path(path, job.rank)


def rank_files(path) -> dict[int, str]:
    """{rank: file} of the job ``path`` names: a rank's file (``run.rank1.gvz``), the name the job
    was recorded to (``run.gvz``, when ``run.rank0.gvz``... exist beside it) or their folder (which
    must hold the ranks of one job). Empty when ``path`` names no rank files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found: dict[str, dict[int, str]] = {}
        for name in sorted(os.listdir(path)):
            m = _RANK_FILE.match(name)
            if m:
                found.setdefault(m["stem"], {})[int(m["rank"])] = os.path.join(path, name)
        if len(found) > 1:
            raise TraceFormatError(f"{path} holds the ranks of {len(found)} recordings "
                                   f"({', '.join(sorted(found))}): open one of their files")
        return dict(sorted(next(iter(found.values()), {}).items()))
    folder, name = os.path.split(path)
    m = _RANK_FILE.match(name)
    stem = m["stem"] if m else (name[:-4] if name.endswith(".gvz") else name)
    out = {}
    for other in os.listdir(folder or "."):
        mo = _RANK_FILE.match(other)
        if mo and mo["stem"] == stem:
            out[int(mo["rank"])] = os.path.join(folder, other)
    return dict(sorted(out.items()))


@dataclass
class RankSet:
    """The traces of a job's ranks, by rank (a file whose ``RankInfo`` names its rank is filed
    under it, else under the rank in its name). ``world_size``: the job's, as its traces say
    (ranks that left no file are missing from ``traces``)."""

    traces: dict[int, Trace]
    paths: dict[int, str]
    problems: dict[int, str] = field(default_factory=dict)  # rank -> why its file was read only in part

    @property
    def ranks(self) -> list[int]:
        return sorted(self.traces)

    @property
    def world_size(self) -> int:
        sizes = [t.rank.world_size for t in self.traces.values() if t.rank is not None]
        return max(sizes + [max(self.traces, default=-1) + 1])

    @property
    def backend(self) -> str:
        return next((t.rank.backend for t in self.traces.values() if t.rank is not None and t.rank.backend), "")

    @property
    def missing(self) -> list[int]:
        """Ranks of the job that left no trace."""
        return [r for r in range(self.world_size) if r not in self.traces]


def load_ranks(path, partial=True) -> RankSet:
    """All the ranks of the job ``path`` names (see ``rank_files``); a single trace of no job is a
    RankSet of one. A rank that died mid-write is read up to its last complete event (``partial``),
    and what cut it short is kept in ``problems``."""
    files = rank_files(path)
    if not files:
        if os.path.isdir(path):
            raise TraceFormatError(f"{path} holds no rank traces (files named NAME.rankN.gvz)")
        files = {0: os.fspath(path)}
    traces, paths, problems = {}, {}, {}
    for r, f in files.items():
        try:
            t = load(f)
        except TraceFormatError as exc:
            if not partial:
                raise
            t = load(f, partial=True)
            problems[r] = str(exc)
        rank = t.rank.rank if t.rank is not None else r
        traces[rank], paths[rank] = t, f
    return RankSet(traces, paths, problems)
