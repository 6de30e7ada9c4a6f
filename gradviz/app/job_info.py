"""What ``gradviz info`` says of a data-parallel job, as text: on one rank's file, which rank of
which job it is and the files of its sibling ranks; on the job's folder (or the name it was
recorded to), every rank's file and what it holds, the ranks that left none, and the ranks whose
local gradients stand out (``gradviz.app.ranks``)."""
from __future__ import annotations

import os

from gradviz.app.ranks import RankState
from gradviz.trace.ranks import RankSet, rank_files


def rank_header(trace, path) -> list[str]:
    """Lines put before ``gradviz info``'s usual text of a trace: for a rank of a job, 'rank 1 of 2
    (gloo)' and the job's files found beside it; none for a trace of one process."""
    info = trace.rank
    if info is None:
        return []
    line = f"rank {info.rank} of {info.world_size}" + (f" ({info.backend})" if info.backend else "")
    try:
        files = rank_files(path)
    except (OSError, ValueError):
        files = {}
    siblings = [os.path.basename(f) for r, f in files.items() if r != info.rank]
    missing = [r for r in range(info.world_size) if r not in files and r != info.rank]
    lines = [line, "the other ranks' files: " + (", ".join(siblings) if siblings else "none found beside it")]
    if missing:
        lines.append(f"no file of rank {', '.join(map(str, missing))}")
    if siblings:
        lines.append(f"the whole job: gradviz info {os.path.dirname(os.path.abspath(path))}")
    return lines + [""]


def job_text(rankset: RankSet) -> str:
    """The job ``rankset`` holds, rank by rank, then what stands out across its ranks."""
    rs = rankset
    folder = os.path.dirname(os.path.abspath(next(iter(rs.paths.values()), ".")))
    lines = [f"data-parallel job of {rs.world_size} ranks" + (f" ({rs.backend})" if rs.backend else "") +
             f": {len(rs.ranks)} rank files in {folder}"]
    for r in rs.ranks:
        t = rs.traces[r]
        reductions = sum(len(p.buckets) for p in t.passes)
        text = (f"  rank {r}: {os.path.basename(rs.paths[r])}  {_count(t.iterations, 'iteration')}, "
                f"{_count(len(t.passes), 'backward pass')}, {_count(reductions, 'bucket all-reduce')}")
        if r in rs.problems:
            text += f"; read in part: {rs.problems[r]}"
        lines.append(text)
    if rs.missing:
        lines.append(f"  no file of rank {', '.join(map(str, rs.missing))}")
    if any(t.passes for t in rs.traces.values()):
        state = RankState(rs)
        lines.append(state.summary())
        for r, why in sorted(state.marked.items()):
            lines.append(f"  rank {r}: " + "; ".join(why))
        elsewhere = {r: its for r, its in state.stands_out().items() if r not in state.marked}
        for r, its in sorted(elsewhere.items()):
            lines.append(f"  rank {r} stands out in iteration {', '.join(map(str, its))}")
    return "\n".join(lines)


def _count(n, what):
    return f"{n} {what}" + ("" if n == 1 else "es" if what.endswith("s") else "s")
