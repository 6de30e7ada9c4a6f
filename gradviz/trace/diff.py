"""What changed between two iterations of a recording, or between two recordings of one program:
the backward nodes and edges present in only one of them (control flow that took another branch)
and, for nodes in both, how the gradient's norm changed.

Nodes are matched by their identity across iterations, the one breakpoints use
(``peer_signature``): op, module scope, source line, and the order of creation among nodes so made
within the iteration. A leaf and its AccumulateGrad are matched by the leaf's name (its key when it
has none). Lines are compared as file name and number, so two recordings of one program made from
different folders still match."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from gradviz.trace.model import node_key


@dataclass
class DiffNode:
    """A node of either graph: its ``key`` in A and in B (None where absent), what it is, and the
    L2 norm of its gradient in each (the gradient entering a backward node, a leaf's gradient
    from that pass; None where none came)."""

    identity: tuple
    key_a: str | None
    key_b: str | None
    label: str
    source: str
    norm_a: float | None = None
    norm_b: float | None = None

    @property
    def ratio(self) -> float:
        """norm in B / norm in A: NaN where either is missing or not finite, or both are 0."""
        a, b = self.norm_a, self.norm_b
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return math.nan
        if a == 0.0:
            return math.inf if b > 0.0 else math.nan
        return b / a

    @property
    def where(self) -> str:
        return "both" if self.key_a and self.key_b else "a" if self.key_a else "b"


@dataclass
class GraphDiff:
    """The difference of graph B from graph A: ``nodes`` (B's in creation order, then A's own),
    and the edges, as pairs of identities, present only in A or only in B."""

    label_a: str
    label_b: str
    nodes: list = field(default_factory=list)
    edges_only_a: list = field(default_factory=list)
    edges_only_b: list = field(default_factory=list)
    edges_both: list = field(default_factory=list)

    @property
    def only_a(self):
        return [n for n in self.nodes if n.where == "a"]

    @property
    def only_b(self):
        return [n for n in self.nodes if n.where == "b"]

    @property
    def both(self):
        return [n for n in self.nodes if n.where == "both"]

    def by_identity(self):
        return {n.identity: n for n in self.nodes}

    def largest_ratios(self, limit=10):
        """Nodes in both with a finite or infinite ratio, the furthest from 1 first (in log scale)."""
        rated = [n for n in self.both if not math.isnan(n.ratio)]
        rated.sort(key=lambda n: (-abs(math.log(n.ratio)) if 0 < n.ratio < math.inf else -math.inf, n.label))
        return rated[:limit]

    def summary_line(self):
        return (f"{self.label_a} -> {self.label_b}: {len(self.both)} nodes in both, {len(self.only_a)} only in A, "
                f"{len(self.only_b)} only in B; {len(self.edges_only_a)} edges only in A, "
                f"{len(self.edges_only_b)} only in B")

    def lines(self, limit=10):
        """The diff as text: a summary line, the nodes only in A and only in B with their source
        lines, then the largest gradient norm ratios."""
        out = [self.summary_line()]
        for sign, label, nodes in (("-", self.label_a, self.only_a), ("+", self.label_b, self.only_b)):
            if nodes:
                out.append(f"only in {'A' if sign == '-' else 'B'} ({label}):")
                out += [f"  {sign} {n.label:<24} {n.source}" for n in nodes]
        rated = self.largest_ratios(limit)
        if rated:
            out.append("gradient norm B/A, furthest from 1 first:")
            out += [f"  {_ratio_text(n.ratio):>10}  {n.label:<24} {n.source}  ({_g(n.norm_a)} -> {_g(n.norm_b)})"
                    for n in rated]
        return out


def _g(x):
    return "-" if x is None else f"{x:.4g}"


def _ratio_text(r):
    return "inf" if r == math.inf else f"x{r:.3g}"


def _short_source(src):
    return f"{os.path.basename(src.file)}:{src.line}" if src is not None else ""


def _short_op(op):
    return (op or "").replace("torch::autograd::", "")


def identities(trace, iteration):
    """Graph key -> identity of every node of one iteration's graph (``Trace.iteration_graph``)."""
    g = trace.iteration_graph(iteration)
    out = {}
    seen = {}
    for key in trace.iteration_nodes.get(iteration, ()):  # grad_fn nodes, in creation order
        if key not in g:  # made after the moment a trace in the past (time travel) shows
            continue
        n = trace.nodes[int(key[1:])]
        sig = (_short_op(n.op), n.scope, _short_source(n.source))
        rank = seen.get(sig, 0)
        seen[sig] = rank + 1
        out[key] = (*sig, rank)
    for key, d in g.nodes(data=True):
        if key in out:
            continue
        if d.get("kind") == "accumulate_grad":
            leaf = next((s for s in g.successors(key) if s.startswith("t")), None)
            name = (g.nodes[leaf].get("name") or leaf) if leaf is not None else key
            out[key] = ("AccumulateGrad", name)
        else:
            out[key] = ("tensor", d.get("name") or key)
    return out


def _norms(trace, iteration):
    """Graph key -> the norm of the gradient there in the iteration's last backward pass."""
    place = trace.last_pass_of(iteration)
    if place is None:
        return {}
    p = trace.passes[place]
    out = {}
    for nid, outs in p.grad_outputs.items():
        v = next((x for x in outs if x is not None), None)
        if v is not None:
            out[node_key(nid)] = v.summary.l2
    for tid, (contribution, grad) in p.accumulated.items():
        v = contribution if contribution is not None else grad
        if v is not None:
            out[f"t{tid}"] = v.summary.l2
    return out


def _describe(trace, g, key, ident):
    label, source = _what(trace, g, key)
    if len(ident) == 4 and ident[3] > 0:  # the k-th node this line made in the iteration
        source += f" (#{ident[3] + 1})"
    return label, source


def _what(trace, g, key):
    d = g.nodes[key]
    if key.startswith("t"):
        return d.get("name") or key, ""
    n = trace.nodes[int(key[1:])]
    label = _short_op(n.op)
    if n.kind == "accumulate_grad":
        leaf = next((s for s in g.successors(key) if s.startswith("t")), None)
        if leaf is not None:
            label += f"({g.nodes[leaf].get('name') or leaf})"
    return label, _short_source(n.source)


def _iterations(trace):
    """The iterations with a graph (of a trace in the past: those begun by its moment; not those
    forgotten to bound memory, whose nodes that later iterations reach remain)."""
    gone = getattr(trace, "forgotten_iterations", 0)
    return [i for i in sorted(trace.iteration_nodes) if gone <= i < max(trace.iterations, 1)]


def check_iteration(trace, iteration, which="A"):
    have = _iterations(trace)
    if not have:
        raise ValueError(f"recording {which} has no iteration with a graph")
    if iteration not in have and 0 <= iteration < getattr(trace, "forgotten_iterations", 0):
        raise ValueError(f"recording {which}'s iteration {iteration} was forgotten to bound memory (it keeps "
                         f"{have[0]}..{have[-1]})")
    if iteration not in have:
        raise ValueError(f"recording {which} has no iteration {iteration} (it has {have[0]}..{have[-1]})")


def diff(trace_a, iteration_a, trace_b=None, iteration_b=None, label_a=None, label_b=None) -> GraphDiff:
    """The difference of iteration ``iteration_b`` of ``trace_b`` (default: ``trace_a``) from
    iteration ``iteration_a`` of ``trace_a``. Raises ValueError naming an iteration that is not
    there."""
    trace_b = trace_a if trace_b is None else trace_b
    iteration_b = iteration_a if iteration_b is None else iteration_b
    check_iteration(trace_a, iteration_a, "A")
    check_iteration(trace_b, iteration_b, "B")
    ga, gb = trace_a.iteration_graph(iteration_a), trace_b.iteration_graph(iteration_b)
    ida, idb = identities(trace_a, iteration_a), identities(trace_b, iteration_b)
    na, nb = _norms(trace_a, iteration_a), _norms(trace_b, iteration_b)
    a_by_id = {v: k for k, v in ida.items()}
    b_by_id = {v: k for k, v in idb.items()}
    result = GraphDiff(label_a or f"iteration {iteration_a}", label_b or f"iteration {iteration_b}")
    own = [k for k in trace_b.iteration_nodes.get(iteration_b, ()) if k in gb]
    order_b = own + [k for k in gb if k not in set(own)]
    seen = set()
    for kb in order_b:
        if kb in seen or kb not in gb:
            continue
        seen.add(kb)
        ident = idb[kb]
        ka = a_by_id.get(ident)
        label, source = _describe(trace_b, gb, kb, ident)
        result.nodes.append(DiffNode(ident, ka, kb, label, source, na.get(ka) if ka else None, nb.get(kb)))
    for ka in list(trace_a.iteration_nodes.get(iteration_a, ())) + list(ga):
        ident = ida.get(ka)
        if ident is None or ident in b_by_id or ka in seen:
            continue
        seen.add(ka)
        label, source = _describe(trace_a, ga, ka, ident)
        result.nodes.append(DiffNode(ident, ka, None, label, source, na.get(ka), None))
    ea = {(ida[u], ida[v]) for u, v in ga.edges}
    eb = {(idb[u], idb[v]) for u, v in gb.edges}
    result.edges_only_a = sorted(ea - eb, key=str)
    result.edges_only_b = sorted(eb - ea, key=str)
    result.edges_both = sorted(ea & eb, key=str)
    return result


def default_iterations(trace_a, trace_b=None):
    """The iterations a diff compares when none are given: the last two of one recording, or the
    last of each of two."""
    if trace_b is None:
        have = _iterations(trace_a)
        if len(have) < 2:
            raise ValueError(f"the recording has {len(have)} iteration{'s' if len(have) != 1 else ''}: "
                             f"a diff needs two (or a second recording)")
        return have[-2], have[-1]
    a, b = _iterations(trace_a), _iterations(trace_b)
    if not a or not b:
        raise ValueError(f"recording {'A' if not a else 'B'} has no iteration with a graph")
    return a[-1], b[-1]
