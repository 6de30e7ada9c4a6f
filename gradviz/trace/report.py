"""What ``gradviz info`` prints: a trace's graph, passes and tensors, as text or as stable JSON.

The JSON form (``gradviz info TRACE --json``)::

    {"format": 1,
     "nodes":  [{"id": "n3", "op": "PowBackward0", "kind": "grad_fn", "label": ..., "scope": "layer1.0.conv1",
                 "source": "train.py:12 in main", "shape": [2, 3], "dtype": "<f4", "iteration": 0}, ...],
     "edges":  [["n5", "n3"], ...],                      # the direction gradients flow
     "passes": [{"index": 0, "iteration": 0, "order": ["n11", "n9", ...]}, ...],
     "tensors": [{"id": "t1", "name": "a", "kind": "leaf", "shape": [2], "dtype": "<f4",
                  "requires_grad": true, "value": SUMMARY, "grad": SUMMARY or null}, ...],
     "steps":  [{"index": 0, "optimizer": "SGD", "params": ["t1", ...], "update_norms": [...]}, ...],
     "dropped": ["the oldest 1138 events (iterations 0-26) were dropped ...", ...]}

``dropped``, present only when something was, says in sentences what the trace lacks and why (its
file's budget, the memory budget).

Node kinds: ``grad_fn``, ``accumulate_grad``, and for leaf tensors ``parameter``, ``frozen``, ``leaf``.
A node whose value (a forward output, a leaf's value) holds NaN or Inf also has
``"nonfinite": {"nan": N, "inf": M}``.
SUMMARY is ``{"numel", "min", "max", "mean", "std", "norm", "nan", "inf", "sampled"}``; ``grad`` is
the tensor's ``.grad`` after the last pass that reached it.
"""
from __future__ import annotations

import json
import math

from gradviz.trace.model import node_key, nonfinite, nonfinite_text, tensor_key

_SUMMARY_KEYS = ("numel", "min", "max", "mean", "std", "norm", "nan", "inf", "sampled")


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else str(x)


def _summary(v):
    if v is None:
        return None
    return {k: _finite(getattr(v.summary, k)) for k in _SUMMARY_KEYS}


def to_json(trace):
    g = trace.graph
    nodes = []
    for key, d in g.nodes(data=True):
        nodes.append({"id": key, "op": d.get("op", ""), "kind": d.get("kind", ""), "label": d.get("label", key),
                      "scope": d.get("scope", ""), "source": d.get("source", ""), "shape": list(d.get("shape", ())),
                      "dtype": d.get("dtype", ""), "iteration": d.get("iteration")})
        if d.get("nonfinite"):
            nodes[-1]["nonfinite"] = dict(zip(("nan", "inf"), d["nonfinite"]))
    last_grad = {}
    for p in trace.passes:
        for tid, (_, grad) in p.accumulated.items():
            last_grad[tid] = grad
    tensors = [{"id": tensor_key(t.id), "name": t.name, "kind": t.kind, "shape": list(t.shape), "dtype": t.dtype,
                "requires_grad": t.requires_grad, "value": _summary(t.value), "grad": _summary(last_grad.get(t.id))}
               for t in trace.tensors.values()]
    doc = {
        "format": 1,
        "nodes": nodes,
        "edges": [[u, v] for u, v in g.edges()],
        "passes": [{"index": p.index, "iteration": p.iteration, "order": [node_key(n) for n in p.order]}
                   for p in trace.passes],
        "tensors": tensors,
        "steps": [{"index": s.index, "optimizer": s.optimizer, "params": [tensor_key(t) for t in s.params],
                   "update_norms": [_finite(n) for n in s.update_norms]} for s in trace.steps],
    }
    dropped = trace.dropped_lines()
    if dropped:
        doc["dropped"] = dropped
    return doc


def info_json(trace):
    return json.dumps(to_json(trace), indent=1)


def _fmt(x):
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def info_text(trace, max_order=40):
    g = trace.graph
    kinds = {}
    for _, d in g.nodes(data=True):
        kind = d.get("kind") or "unknown"  # a node only named as another's next node has none
        kinds[kind] = kinds.get(kind, 0) + 1
    lines = [f"{g.number_of_nodes()} nodes ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
             f"{g.number_of_edges()} edges, {trace.iterations} iterations, {len(trace.passes)} backward passes, "
             f"{len(trace.steps)} optimizer steps", ""]
    forgotten = [p for p in trace.passes if getattr(p, "forgotten", False)]
    if forgotten:  # (the event budget's: said once, not a line each)
        lines.append(f"passes {forgotten[0].index}..{forgotten[-1].index} (iterations {forgotten[0].iteration}.."
                     f"{forgotten[-1].iteration}): forgotten to bound memory, their gradients' norms kept")
    for p in trace.passes:
        if getattr(p, "forgotten", False):
            continue
        ops = [trace.nodes[n].op if n in trace.nodes else f"n{n}" for n in p.order]
        shown = ", ".join(ops[:max_order]) + (f", ... ({len(ops) - max_order} more)" if len(ops) > max_order else "")
        lines.append(f"pass {p.index} (iteration {p.iteration}), {len(ops)} nodes: {shown}")
    lines += ["", f"{'tensor':<28} {'kind':<10} {'shape':<18} {'value norm':>11} {'grad norm':>11} {'nan/inf':>8}"]
    last_grad = {}
    for p in trace.passes:
        for tid, (_, grad) in p.accumulated.items():
            last_grad[tid] = grad
    for t in trace.tensors.values():
        if t.kind == "input":
            continue
        grad = last_grad.get(t.id)
        gs = grad.summary if grad is not None else None
        bad = f"{gs.nan}/{gs.inf}" if gs is not None else "-"
        lines.append(f"{(t.name or tensor_key(t.id)):<28} {t.kind:<10} {str(list(t.shape)):<18} "
                     f"{_fmt(t.value.summary.norm) if t.value else '-':>11} "
                     f"{_fmt(gs.norm) if gs else '-':>11} {bad:>8}")
    lines += _nonfinite_lines(trace)
    dropped = trace.dropped_lines()
    if dropped:
        lines += ["", "What this trace keeps and drops:"] + [f"  {line}" for line in dropped]
    return "\n".join(lines)


def _nonfinite_lines(trace, most=20):
    """Where the recorded values hold NaN or Inf (from their summaries: with or without the
    anomaly switch): forward outputs and leaves' values, then each pass's gradients."""
    g = trace.graph
    found = [f"  {key} {d.get('label') or key} (forward value): {nonfinite_text(d['nonfinite'])}"
             for key, d in g.nodes(data=True) if d.get("nonfinite")]
    for p in trace.passes:
        for nid in p.order:
            for i, v in enumerate(p.grad_outputs.get(nid, ())):
                bad = nonfinite(v)
                if bad:
                    op = trace.nodes[nid].op if nid in trace.nodes else ""
                    found.append(f"  {node_key(nid)} {op} (pass {p.index}, grad_output {i}): {nonfinite_text(bad)}")
    if not found:
        return []
    more = [f"  ... ({len(found) - most} more)"] if len(found) > most else []
    return ["", f"NaN or Inf in {len(found)} recorded values:"] + found[:most] + more
