"""What the gradient plots show, as plain data (no Qt): a gradient as an image, a gradient's norm
across iterations, and the gradient flow through a model's parameters in layer order.

Everything but the heatmap comes from summaries, which a trace always keeps, so it works whatever
the memory budget dropped."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradviz.summary import as_real

# A 4-D (conv weight) gradient is drawn as a grid of kh x kw tiles: one row per output channel, one
# column per input channel, at most this many of each (a 3x3 conv fits in 127 x 127 pixels), and
# no more rows than keep the grid within MAX_TILE_ASPECT times as tall as wide, so that a first
# layer's (64, 3, 7, 7) shows 12 filters large enough to see rather than 64 in a sliver.
MAX_TILE_ROWS = 32
MAX_TILE_COLS = 32
MAX_TILE_ASPECT = 4

# Gradient flow flags. A mean |grad| below VANISHING_MEAN is under float32's resolution of a weight
# of order 1 (eps ~1.2e-7): an SGD step of any sane learning rate leaves the weight unchanged.
# A max |grad| above EXPLODING_MAX, or any NaN or Inf, is what a diverging step looks like.
VANISHING_MEAN = 1e-7
EXPLODING_MAX = 1e3


def heatmap_image(array):
    """A gradient as a 2-D float image, or None when it has no sensible one (no array kept, 0-D,
    empty, more than 4-D). 2-D: as is. 1-D: one row. 4-D ``(out, in, kh, kw)``: a grid of kh x kw
    tiles, row r column c holding ``array[r, c]``, separated by 1-pixel NaN gaps, capped as
    ``tile_grid`` says. 3-D ``(a, b, k)``: one row of
    ``a`` tiles of b x k (a conv1d weight: one tile per output channel)."""
    if array is None:
        return None
    a = as_real(array)
    if a.size == 0 or a.ndim not in (1, 2, 3, 4):
        return None
    if a.ndim <= 2:
        return a.reshape(1, -1) if a.ndim == 1 else a
    if a.ndim == 3:
        a = a[None, :MAX_TILE_COLS]
    rows, cols = tile_grid(a.shape)
    a = a[:rows, :cols]
    kh, kw = a.shape[2:]
    grid = np.full((rows, cols, kh + 1, kw + 1), np.nan)
    grid[:, :, :kh, :kw] = a
    return grid.transpose(0, 2, 1, 3).reshape(rows * (kh + 1), cols * (kw + 1))[:-1, :-1]


def tile_grid(shape):
    """(output channels, input channels) that ``heatmap_image`` draws of a 4-D ``shape``."""
    out, inp, kh, kw = shape
    cols = min(inp, MAX_TILE_COLS)
    rows = min(out, MAX_TILE_ROWS, max(1, (MAX_TILE_ASPECT * cols * (kw + 1)) // (kh + 1)))
    return rows, cols


def norm_of(summary):
    """The L2 norm of a value, as ``np.linalg.norm`` gives it: NaN if it holds a NaN, Inf if an Inf
    (a summary's own ``norm`` is that of its finite values)."""
    return summary.l2


def _same_node(trace, node_id):
    """The ids of a backward node's counterparts in every iteration: a grad_fn node lives for one
    iteration, so it is matched by op, source line and scope, and its rank among such nodes. An
    AccumulateGrad node keeps its id across iterations."""
    n = trace.nodes.get(node_id)
    if n is None or n.kind != "grad_fn":
        return {node_id}
    peers = {}
    for m in trace.peers(node_id):
        peers.setdefault(trace.nodes[m].iteration, []).append(m)
    rank = peers[n.iteration].index(node_id)
    return {ids[rank] for ids in peers.values() if len(ids) > rank}


def grad_norm_history(trace, key):
    """(iterations, norms): the L2 norm of a tensor's ``.grad`` (a graph key 't3', a tensor name) or
    of the gradient entering a backward node ('n5', and its counterparts in the other iterations),
    once per iteration that reached it. Where an iteration ran several backward passes, the last
    one's: for ``.grad`` that is what the optimizer step read. NaN/Inf where the gradient held one."""
    kind, i = trace._resolve(key)
    passes = trace.passes
    # The passes that reached it, from the trace's indexes: O(iterations), not passes x iterations.
    if kind == "tensor":
        hits = [(j, i) for j in trace._accumulated_in.get(i, ()) if j < len(passes)]
    else:
        hits = sorted((j, n) for n in _same_node(trace, i) for j in trace._entered_in.get(n, ()) if j < len(passes))
    per_iteration = {}
    for j, n in hits:
        p = passes[j]
        if kind == "tensor":
            value = p.accumulated[n][1] if n in p.accumulated else None
        else:
            value = p.grad_outputs[n][0] if p.grad_outputs.get(n) else None
        if value is not None:
            per_iteration[p.iteration] = norm_of(value.summary)
    its = sorted(per_iteration)
    return np.array(its, dtype=int), np.array([per_iteration[k] for k in its], dtype=float)


def latest_grad(trace, key):
    """The gradient at ``key`` (as ``Trace.grad`` gives it) in the last backward pass that reached
    it, or None: a node of an earlier iteration ran in that iteration's pass, not the last one."""
    try:
        kind, i = trace._resolve(key)
    except KeyError:
        return None
    if kind == "node":
        p = trace.last_run(i)
        return p.grad_outputs[i][0] if p is not None and p.grad_outputs[i] else None
    p = trace.last_accumulated(i)
    return p.accumulated[i][1] if p is not None else None


@dataclass(frozen=True)
class FlowRow:
    """One parameter's gradient in one backward pass: ``mean_abs`` its mean |grad| (exact up to
    4,096 elements, else from the summary's sample, as its mean and std; the rms where a trace
    written before summaries kept it has none), ``rms`` its root mean square (norm / sqrt(numel),
    exact), ``max_abs`` its largest magnitude (exact). ``flag``: 'vanishing', 'exploding' or ''."""

    name: str
    key: str
    shape: tuple
    mean_abs: float
    rms: float
    max_abs: float
    nonfinite: int
    flag: str
    zero_for: int = 0  # iterations with a backward pass since its gradient was last non-zero (diagnose)


def flag_of(mean_abs, max_abs, nonfinite):
    if nonfinite or max_abs > EXPLODING_MAX:
        return "exploding"
    return "vanishing" if mean_abs < VANISHING_MEAN else ""


def dead_note(trace, pass_index=-1):
    """One line on the ReLU-like nodes of a pass whose gradient is mostly exactly zero (dead units),
    '' when there are none: how many, and the worst."""
    from gradviz.app.diagnosis import DEAD_FRACTION
    rows = trace.dead_units(pass_index)
    dead = [r for r in rows if r.zero_fraction >= DEAD_FRACTION]
    if not dead:
        return ""
    worst = max(dead, key=lambda r: r.zero_fraction)
    n = trace.nodes[int(worst.key[1:])]
    where = f" at {n.source.file.rsplit('/', 1)[-1]}:{n.source.line}" if n.source else ""
    return (f"{len(dead)} of {len(rows)} ReLU-like nodes pass ≥{DEAD_FRACTION:.0%} zero gradient; the most: "
            f"{worst.op}{' in module ' + worst.scope if worst.scope else ''}{where}, {worst.zero_fraction:.0%}")


def gradient_flow(trace, pass_index=-1):
    """A row per tensor that received a gradient in the backward pass (-1: the last), in layer
    order: the order the forward pass first read them. Frozen parameters, which get no gradient,
    are absent. [] when there is no such pass."""
    if not trace.passes:
        return []
    try:
        p = trace.passes[pass_index] if pass_index < 0 else trace._pass(pass_index)
    except (IndexError, KeyError):
        return []
    got = dict(list(p.accumulated.items()))
    streaks = trace.zero_grad_streaks()
    rank = trace._tensor_rank
    order = sorted(got, key=lambda tid: (tid not in rank, rank.get(tid, 0)))
    rows = []
    for tid in order:
        s = got[tid][1].summary if got[tid][1] is not None else None
        if s is None or s.numel == 0:
            continue
        nonfinite = s.nan + s.inf
        rms = norm_of(s) / math.sqrt(s.numel)
        max_abs = (math.nan if s.nan else math.inf) if nonfinite else max(abs(s.min), abs(s.max))
        mean_abs = max_abs if nonfinite else s.mean_abs if math.isfinite(s.mean_abs) else rms
        t = trace.tensors.get(tid)
        streak = streaks.get(f"t{tid}")
        rows.append(FlowRow((t.name if t else None) or f"t{tid}", f"t{tid}", tuple(s.shape), mean_abs, rms, max_abs,
                            nonfinite, flag_of(mean_abs, max_abs, nonfinite), streak.since if streak else 0))
    return rows
