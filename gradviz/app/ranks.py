"""The ranks of a data-parallel job side by side, as plain data (no Qt): which rank's graph is
shown, and for every parameter each rank's local gradient (its ``.grad`` as its AccumulateGrad
left it, before DistributedDataParallel's all-reduce) beside the synchronised ``.grad`` after it,
their spread, the bucket all-reduces of a rank's pass, and the ranks whose local gradients stand out.

A rank stands out for a parameter when its local gradient holds a NaN or an Inf, or, with three
ranks or more, when its norm is far from the others': the log of its norm lies more than
``OUTLIER_Z`` scaled median absolute deviations (1.4826 MAD, the standard deviation's robust
stand-in) from the median of the ranks' log norms, and more than a factor ``OUTLIER_FACTOR`` from
the median norm. Logs, because norms differ by factors; the median and the MAD, because the rank
that stands out must not drag the yardstick along (a mean and a standard deviation would); the
factor, so that ranks on near-identical shards (MAD near 0) are not marked for trifles. Two ranks
have no majority: only a non-finite gradient marks one of them."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
OUTLIER_FACTOR = 2.0
MAD_SCALE = 1.4826
_TINY = 1e-30


def outliers(norms: dict[int, float]) -> dict[int, str]:
    """{rank: why it stands out} among ranks' gradient norms of one parameter (see the module)."""
    out = {}
    for r, n in norms.items():
        if math.isnan(n):
            out[r] = "NaN"
        elif math.isinf(n):
            out[r] = "Inf"
    finite = {r: n for r, n in norms.items() if math.isfinite(n)}
    if len(finite) < 3:
        return out
    logs = {r: math.log(max(n, _TINY)) for r, n in finite.items()}
    median = statistics.median(logs.values())
    mad = statistics.median(abs(v - median) for v in logs.values())
    cut = max(OUTLIER_Z * MAD_SCALE * mad, math.log(OUTLIER_FACTOR))
    for r, v in logs.items():
        if abs(v - median) > cut:
            out[r] = f"norm {math.exp(v - median):.3g}x the median"
    return out


@dataclass
class ParamRow:
    """One parameter in one iteration across the ranks. ``local``/``synced``: rank -> Summary of
    its local ``.grad`` before the all-reduce / its ``.grad`` after it (absent where the trace
    has none: a rank that died, a program without DDP). ``spread``: (max - min) / median of the
    ranks' finite local norms (0: equal; NaN with fewer than two). ``marked``: rank -> why it stands out."""

    name: str
    shape: tuple
    local: dict = field(default_factory=dict)
    synced: dict = field(default_factory=dict)
    spread: float = 0.0
    marked: dict = field(default_factory=dict)

    def local_norm(self, rank):
        s = self.local.get(rank)
        return s.l2 if s is not None else math.nan

    def synced_norm(self):
        """The synchronised gradient's norm (every rank holds the same; the first one's)."""
        s = next(iter(self.synced.values()), None)
        return s.l2 if s is not None else math.nan


def _spread(norms):
    finite = [n for n in norms if math.isfinite(n)]
    if len(finite) < 2:
        return math.nan
    median = statistics.median(finite)
    return (max(finite) - min(finite)) / median if median > 0 else 0.0


def _pass_of(trace, iteration):
    place = trace.last_pass_of(iteration)
    return trace.passes[place] if place is not None else None


def compare(rankset, iteration) -> list[ParamRow]:
    """A row per parameter that got a gradient in ``iteration`` on any rank, matched by name, in
    the order the first rank's forward pass read them."""
    rows: dict[str, ParamRow] = {}
    for r in rankset.ranks:
        trace = rankset.traces[r]
        p = _pass_of(trace, iteration)
        if p is None:
            continue
        order = trace._tensor_rank
        for tid in sorted(p.accumulated, key=lambda t: (t not in order, order.get(t, 0))):
            t = trace.tensors.get(tid)
            if t is None or t.kind != "parameter":
                continue
            grad = p.accumulated[tid][1]
            if grad is None:
                continue
            row = rows.setdefault(t.name or f"t{tid}", ParamRow(t.name or f"t{tid}", tuple(t.shape)))
            row.local[r] = grad.summary
            synced = p.synchronized.get(tid)
            if synced is not None:
                row.synced[r] = synced.summary
    for row in rows.values():
        norms = {r: row.local_norm(r) for r in row.local}
        row.spread = _spread(norms.values())
        row.marked = outliers(norms)
    return list(rows.values())


def marked_ranks(rows) -> dict[int, list[str]]:
    """rank -> the reasons it stands out ('NaN in 0.weight', ...), over every parameter."""
    out: dict[int, list[str]] = {}
    for row in rows:
        for r, why in row.marked.items():
            out.setdefault(r, []).append(f"{why} in {row.name}" if why in ("NaN", "Inf") else f"{row.name}: {why}")
    return out


class RankState:
    """What the ranks panel shows: a job's ``RankSet``, the rank whose graph is shown, the
    iteration compared (default: the last one every rank reached)."""

    def __init__(self, rankset):
        self.rankset = rankset
        self.selected = rankset.ranks[0]
        # the last iteration every rank finished a backward pass of (a rank that died mid-pass
        # has no gradients of its last iteration)
        its = [max((p.iteration for p in t.passes if p.finished), default=t.passes[0].iteration)
               for t in rankset.traces.values() if t.passes]
        self.iterations = sorted({p.iteration for t in rankset.traces.values() for p in t.passes})
        self.iteration = min(its) if its else None
        self._rows = None
        self._history = None  # rank -> iterations in which it stands out (every iteration compared once)

    @property
    def trace(self):
        return self.rankset.traces[self.selected]

    def select(self, rank):
        """Show rank ``rank``'s graph; returns its Trace."""
        if rank not in self.rankset.traces:
            raise KeyError(f"no trace of rank {rank}; this job's traces are ranks "
                           f"{', '.join(map(str, self.rankset.ranks))}")
        self.selected = rank
        return self.trace

    def set_iteration(self, iteration):
        self.iteration = iteration
        self._rows = None

    @property
    def rows(self) -> list[ParamRow]:
        if self._rows is None:
            self._rows = [] if self.iteration is None else compare(self.rankset, self.iteration)
        return self._rows

    @property
    def marked(self) -> dict[int, list[str]]:
        return marked_ranks(self.rows)

    def stands_out(self) -> dict[int, list[int]]:
        """rank -> the iterations in which its local gradients stand out, over the whole run."""
        if self._history is None:
            out: dict[int, list[int]] = {}
            for it in self.iterations:
                for r in marked_ranks(compare(self.rankset, it)):
                    out.setdefault(r, []).append(it)
            self._history = out
        return self._history

    def rank_label(self, rank):
        """'rank 1' with what stands out in the iteration compared (or in which iterations it
        does elsewhere in the run), for the selector."""
        why = self.marked.get(rank)
        if why:
            return f"rank {rank}  ⚠ {why[0]}" + (f" (+{len(why) - 1})" if len(why) > 1 else "")
        its = self.stands_out().get(rank)
        return f"rank {rank}" + (f"  ⚠ in iteration {', '.join(map(str, its))}" if its else "")

    def flow(self):
        """The gradient flow of every rank at once: (parameter names, {rank: local norms}) in
        layer order, None where a rank has no gradient (NaN where its gradient holds one)."""
        rows = self.rows
        names = [row.name for row in rows]
        return names, {r: [row.local_norm(r) if r in row.local else None for row in rows] for r in self.rankset.ranks}

    def without_gradients(self):
        """Ranks with a trace but no gradient in the iteration compared (died before, or in, it)."""
        got = {r for row in self.rows for r in row.local}
        return [r for r in self.rankset.ranks if r not in got] if self.rows else []

    def bucket_lines(self):
        """The shown rank's DDP bucket all-reduces in the compared iteration's last pass, in launch
        order: 'bucket 0 after step 6 of 12 (AccumulateGrad of module.2.weight): module.2.bias,
        module.2.weight'."""
        trace = self.trace
        p = _pass_of(trace, self.iteration) if self.iteration is not None else None
        if p is None:
            return []
        lines = []
        for b in p.buckets:
            names = ", ".join((trace.tensors[t].name if t in trace.tensors else None) or f"t{t}" for t in b.params)
            if b.after_node is None or b.after_node not in p.grad_outputs:
                when = "at the end of the pass"
            else:
                node = trace.nodes.get(b.after_node)
                leaf = trace.tensors.get(node.output) if node is not None and node.output is not None else None
                when = f"after step {p.order.index(b.after_node) + 1} of {len(p.order)}" + \
                    (f" (AccumulateGrad of {leaf.name})" if leaf is not None and leaf.name else "")
            lines.append(f"all-reduce of bucket {b.bucket} {when}: {names}")
        return lines

    def summary(self):
        """One line: the job, what is missing, what stands out."""
        rs = self.rankset
        text = f"{len(rs.ranks)} of {rs.world_size} ranks" + (f" ({rs.backend})" if rs.backend else "")
        if rs.missing:
            text += f"; no trace of rank {', '.join(map(str, rs.missing))}"
        if self.iteration is not None:
            text += f"; iteration {self.iteration}"
            lacking = self.without_gradients()
            if lacking:
                text += f" (no gradients from rank {', '.join(map(str, lacking))}: its trace ends before)"
        marked = self.marked
        if marked:
            text += "; stands out: " + ", ".join(f"rank {r}" for r in sorted(marked))
        elsewhere = {r: its for r, its in self.stands_out().items() if r not in marked}
        if elsewhere:
            text += "; stands out elsewhere: " + ", ".join(
                f"rank {r} (iteration {', '.join(map(str, its))})" for r, its in sorted(elsewhere.items()))
        return text


BUCKET_BADGE = "#2f62b8"


def iteration_end_moment(trace, iteration):
    """The moment (``AppState.set_time``'s k) at the end of ``iteration``: just before the next one
    starts; None (live, the trace's end) for the last. The window's graph then shows the iteration
    the Ranks dock compares."""
    from gradviz.events import IterationStarted
    for k, e in enumerate(trace.events):
        if type(e) is IterationStarted and e.index == iteration + 1:
            return k
    return None


def bucket_badges(trace, graph, iteration):
    """key -> (text, colour): where DDP launched each bucket's all-reduce in the last backward
    pass of ``iteration`` (the one under way, while stepping): 'all-reduce bucket 0' on the
    AccumulateGrad node after which it went, and the buckets reduced only at the end of the pass
    (the last bucket of a pass that ended, every bucket of a static graph's first pass) on the
    pass's last node, '... at the end'. Nodes not in ``graph`` (another iteration's) get none."""
    p = _pass_of(trace, iteration) if iteration is not None else None
    if p is None or not getattr(p, "buckets", None):
        return {}
    at: dict = {}
    for b in p.buckets:
        node = b.after_node if b.after_node is not None and b.after_node in p.grad_outputs else None
        end = node is None
        node = p.order[-1] if end and p.order else node
        if node is not None:
            at.setdefault((f"n{node}", end), []).append(b.bucket)
    out = {}
    for (key, end), buckets in at.items():
        if key in graph:
            text = ("all-reduce bucket " if len(buckets) == 1 else "all-reduce buckets ") + \
                ", ".join(map(str, buckets)) + (" at the end" if end else "")
            out[key] = (f"{out[key][0]}; {text}" if key in out else text, BUCKET_BADGE)
    return out


def rank_note(trace):
    """'rank 1 of 2' for a trace of a job's rank, else ''."""
    info = getattr(trace, "rank", None)
    return f"rank {info.rank} of {info.world_size}" if info is not None else ""


def bucket_note(trace, pass_index):
    """What DDP's all-reduce has done so far in a backward pass, for the status line: 'DDP
    all-reduce launched: bucket 0 (2 params)', or '' when nothing (or no DDP)."""
    try:
        p = trace._pass(pass_index)
    except (KeyError, AttributeError):
        return ""
    buckets = getattr(p, "buckets", ())
    if not buckets:
        return ""
    said = ", ".join(f"bucket {b.bucket} ({len(b.params)} params)" for b in buckets)
    return f"DDP all-reduce launched: {said}"
