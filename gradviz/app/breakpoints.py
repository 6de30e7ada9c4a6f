"""Breakpoints as the user sets them in the app: which breakpoint F9 means on a graph node
(``breakpoint_for``), and the book of those set, with the anomaly switch, kept across restarts."""
from __future__ import annotations

from gradviz.app.labels import short_op
from gradviz.debug.breakpoints import Breakpoint, Peer

ANOMALY_LABEL = "anomaly: NaN or Inf anywhere"


def breakpoint_for(trace, shown, key: str | None, line: bool = False) -> tuple[Breakpoint, str] | None:
    """The breakpoint F9 sets on a graph node: for a backward node, that node in every iteration (a
    ``peer`` breakpoint: a node id is one iteration's), or with ``line`` a line breakpoint at the
    code that made it (every backward node of that line); the node itself when no line is known;
    for a leaf or its AccumulateGrad, a breakpoint on its gradient being accumulated. ``shown``:
    the graph on screen (the line breakpoint's label names its nodes). Returns (Breakpoint, label) or None."""
    g = trace.graph
    if key is None or key not in g:
        return None
    d = g.nodes[key]
    kind = d.get("kind")
    if kind == "grad_fn":
        op = short_op(d.get("op") or key)
        node = trace.nodes.get(int(key[1:]))
        src = node.source if node is not None else None
        if src is None:
            return Breakpoint(node=int(key[1:])), f"{op} ({key})"
        if not line:
            # This node in every iteration: the rank-th node of its op, scope and line (a model's
            # whole forward is often one line; a node id holds for one iteration only).
            alike = [m for m in trace.peers(node.id) if trace.nodes[m].iteration == node.iteration]
            rank = alike.index(node.id)
            where = f" in {node.scope}" if node.scope else ""
            nth = f" · {rank + 1} of {len(alike)} alike" if len(alike) > 1 else ""
            return (Breakpoint(peer=Peer(node.op, node.scope, f"{src.file}:{src.line}", rank)),
                    f"{op}{where} · {src.file.rsplit('/', 1)[-1]}:{src.line}{nth}, every iteration")
        # A line breakpoint stops at every backward node that line made: the label names them.
        where = f"line {src.file.rsplit('/', 1)[-1]}:{src.line}"
        same = f"{src.file}:{src.line}"  # what the child matches: any function on that line
        shown = shown if shown is not None and key in shown else g
        ops = [short_op(dd.get("op") or k) for k, dd in shown.nodes(data=True)
               if dd.get("kind") == "grad_fn" and (dd.get("source") or "").split(" in ")[0] == same]
        if len(ops) <= 1:
            return Breakpoint(source=same), f"{op} · {where}"
        names = ", ".join(sorted(set(ops), key=ops.index))
        return Breakpoint(source=same), f"{where} · {len(ops)} backward nodes: {names}"
    if kind == "accumulate_grad":
        leaf = next(iter(g.successors(key)), None)
        key = leaf if leaf is not None else key
        d = g.nodes[key]
    if key.startswith("t"):
        name = d.get("name")
        return Breakpoint(tensor=name or int(key[1:])), f"{name or key}.grad accumulated"
    return None


def label_of(bp: Breakpoint) -> str:
    """A breakpoint's line in the list, from its condition alone (no graph at hand)."""
    def where(source: str) -> str:
        file, _, line = source.rpartition(":")
        return f"{file.rsplit('/', 1)[-1]}:{line}"
    if bp.peer is not None:
        scope = f" in {bp.peer.scope}" if bp.peer.scope else ""
        return f"{short_op(bp.peer.op)}{scope} · {where(bp.peer.source)}, every iteration"
    if bp.source is not None:
        return f"line {where(bp.source)}"
    if bp.tensor is not None:
        return f"{bp.tensor if isinstance(bp.tensor, str) else f't{bp.tensor}'}.grad accumulated"
    if bp.node is not None:
        return f"node n{bp.node}"
    if bp.op is not None:
        return f"every {short_op(bp.op)}"
    if bp.grad_norm_above is not None:
        return f"incoming gradient norm above {bp.grad_norm_above:g}"
    return ANOMALY_LABEL


class BreakpointBook:
    """The breakpoints the user set (id in the running program -> (Breakpoint, label)) and the
    anomaly switch (its breakpoint's id while the program has it)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[Breakpoint, str]] = {}
        self.anomaly_on = False  # the switch, kept across restarts
        self.anomaly: int | None = None  # its breakpoint's id in the running program

    def adopt(self, breakpoints) -> None:
        """Take in the breakpoints a program already has (``Debugger.breakpoints``' values): a
        window attached to a program that an earlier window set them in (gradviz attach)."""
        for bp in breakpoints:
            if bp.anomaly:
                self.anomaly_on, self.anomaly = True, bp.id
            elif bp.id is not None:
                self.entries[bp.id] = (bp, label_of(bp))

    def find(self, bp: Breakpoint) -> tuple[int, str] | None:
        """(id, label) of the breakpoint set with ``bp``'s condition, if one is (ids aside)."""
        return next(((bid, label) for bid, (have, label) in self.entries.items() if have == bp), None)

    def rows(self) -> list[tuple[int, str]]:
        """(id, label) of every breakpoint, for the list."""
        rows = [(bid, label) for bid, (_, label) in sorted(self.entries.items())]
        if self.anomaly is not None:
            rows.append((self.anomaly, ANOMALY_LABEL))
        return rows

    def breakpoints(self) -> list[Breakpoint]:
        """What a restarted program is launched with: every breakpoint, then the anomaly one."""
        return [bp for bp, _ in self.entries.values()] + ([Breakpoint(anomaly=True)] if self.anomaly_on else [])

    def renumber(self, ids: list[int]) -> None:
        """A new program numbered the breakpoints of ``breakpoints()`` afresh, in that order, as ``ids``."""
        old = list(self.entries.values())
        self.entries = {new: (bp.with_id(new), label) for new, (bp, label) in zip(sorted(ids)[:len(old)], old)}
        self.anomaly = sorted(ids)[len(old)] if self.anomaly_on and len(ids) > len(old) else None
