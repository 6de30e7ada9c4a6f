"""Where a gradient went wrong, from a recording: the origin of a NaN or Inf, the node where a
gradient explodes, ReLU-like nodes that pass mostly zero gradient, and parameters whose gradient
has been zero for iterations.

Everything here works from the summaries every event carries (NaN and Inf counts, norms, the
fraction of zeros), so it works on any recording, with or without arrays, of gradviz's engine or
of PyTorch. ``Trace.nan_origin``, ``Trace.explosion_origin``, ``Trace.dead_units`` and
``Trace.zero_grad_streaks`` call these.
"""
from __future__ import annotations

import bisect
import math
import os
from collections import deque
from dataclasses import dataclass


# A node "explodes" a gradient when it makes a grad_input whose root mean square is more than
# this many times that of the grad_output it received. Per element, not the norm itself: a
# broadcast (SumBackward0 of a large tensor, ExpandBackward0) grows the norm by the square root
# of the size ratio with every element unchanged, which is no explosion.
DEFAULT_K = 10.0

# Backward nodes of activations whose gradient is exactly 0 where the unit is off.
RELU_LIKE = frozenset({"ReluBackward0", "ReluBackward1", "ThresholdBackward0", "ThresholdBackward1",
                       "LeakyReluBackward0", "LeakyReluBackward1", "HardtanhBackward0", "HardtanhBackward1",
                       "Relu6Backward0", "RreluWithNoiseBackward0"})


@dataclass(frozen=True)
class Step:
    """One place on an origin's path: ``key`` a graph key ('n5' a backward node, 't3' a leaf),
    ``moment`` 'forward' (the value it made or held) or 'backward' (the gradients it made in
    backward pass ``pass_index``), in ``iteration``."""

    key: str
    moment: str
    iteration: int
    pass_index: int | None = None


@dataclass(frozen=True)
class Origin:
    """Where a bad value came from: ``path`` from the origin to the node asked about, in the order
    the value travelled (forward steps, then backward ones); ``explanation`` says what the origin
    did, in one line; ``what`` is 'nan' (NaN or Inf) or 'explosion'."""

    path: tuple
    explanation: str
    what: str = "nan"
    ratio: float | None = None  # for an explosion: how many times the gradient grew per element

    @property
    def origin(self) -> Step:
        return self.path[0]

    @property
    def keys(self) -> list:
        return [s.key for s in self.path]

    def __str__(self):
        return self.explanation


def node_key(node_id):  # as gradviz.trace.model names graph nodes (which imports this module)
    return f"n{node_id}"


def tensor_key(tensor_id):
    return f"t{tensor_id}"


class NoOrigin(ValueError):
    """The node asked about holds nothing to trace (no NaN or Inf, no explosion on its way)."""


def _bad(value):
    return value is not None and (value.summary.nan > 0 or value.summary.inf > 0)


def _counts(value):
    s = value.summary
    return ", ".join(f"{n} {what}" for n, what in ((s.nan, "NaN"), (s.inf, "Inf")) if n)


def _op(n):
    return n.op.replace("torch::autograd::", "")  # PyTorch's AccumulateGrad, as drawn


def _where(n):
    src = n.source
    return f" at {os.path.basename(src.file)}:{src.line}" if src is not None else ""


def _g(x):
    return f"{x:.4g}"


def _range(value):
    s = value.summary
    return f"min {_g(s.min)}, max {_g(s.max)}" if s.numel > 1 else f"= {_g(s.min)}"


class _Index:
    """What a walk needs beside the trace: leaves' values as each iteration read them (the
    trace's ``tensors`` keeps only the latest description)."""

    def __init__(self, trace):
        self.trace = trace
        self.described = {}  # tensor id -> [(event position, TensorDescribed)]
        self.leaves_followed = set()  # leaves whose turning bad was followed into a backward pass
        self.pass_started = []  # event position of each pass's BackwardStarted, in trace.passes' order
        for i, e in enumerate(trace.events):
            name = type(e).__name__
            if name == "TensorDescribed":
                self.described.setdefault(e.id, []).append((i, e))
            elif name == "BackwardStarted":
                self.pass_started.append(i)

    def leaf_value_at(self, tid, position):
        """A leaf's description in force at event ``position`` (the last one before it)."""
        got = None
        for i, e in self.described.get(tid, ()):
            if i > position:
                break
            got = e
        if got is None:
            got = self.trace.tensors.get(tid)
        return got

    def name(self, tid):
        t = self.trace.tensors.get(tid)
        if t is not None and t.name:
            return t.name
        m = self.trace.maker(tid)
        return f"{_op(m)}'s output" if m is not None else f"t{tid}"

    def input_values(self, n):
        """(tensor id, its value when ``n`` read it, or None, the maker's NodeCreated or None) of
        each forward input of node ``n``."""
        born = self.trace.born.get(node_key(n.id), len(self.trace.events))
        out = []
        for tid in n.inputs:
            m = self.trace.maker(tid)
            if m is not None and m.id != n.id:
                out.append((tid, m.value, m))
            else:
                t = self.leaf_value_at(tid, born)
                out.append((tid, t.value if t is not None else None, None))
        return out


# -- NaN and Inf: forward ------------------------------------------------------------------------
def _forward_origin(ix, start):
    """The path (forward steps) and explanation from the earliest forward node or leaf whose
    non-finite value reached ``start`` ('n5': a node whose output is bad; 't3': a bad leaf)."""
    trace = ix.trace
    parent = {start: None}  # key -> the key its bad value flowed into (toward start)
    queue = deque([start])
    origins = []
    while queue:
        key = queue.popleft()
        if key[0] == "t":
            origins.append(key)
            continue
        n = trace.nodes[int(key[1:])]
        bad_inputs = [(tid, m) for tid, v, m in ix.input_values(n) if _bad(v)]
        if not bad_inputs:
            origins.append(key)
            continue
        for tid, m in bad_inputs:
            k = node_key(m.id) if m is not None else tensor_key(tid)
            if k not in parent:
                parent[k] = key
                queue.append(k)

    def when(key):
        return trace.born.get(key, -1) if key[0] == "n" else min(
            (i for i, _ in ix.described.get(int(key[1:]), ())), default=-1)

    origin = min(origins, key=when)
    path = []
    k = origin
    while k is not None:
        path.append(k)
        k = parent[k]
    steps = [Step(k, "forward", _iteration_of(trace, k)) for k in path]
    if origin[0] == "n":
        n = trace.nodes[int(origin[1:])]
        inputs = [(tid, v) for tid, v, _ in ix.input_values(n) if v is not None]
        said = ", ".join(f"{ix.name(tid)} ({_range(v)})" for tid, v in inputs)
        text = (f"{_op(n)}{_where(n)} made {_counts(n.value)} in forward (iteration {n.iteration}) from finite "
                f"input{'s' if len(inputs) != 1 else ''}{' ' + said if said else ''}")
        return steps, text
    return _leaf_origin(ix, int(origin[1:]), steps)


def _iteration_of(trace, key):
    if key[0] == "n":
        n = trace.nodes.get(int(key[1:]))
        return n.iteration if n is not None else 0
    return trace.graph.nodes[key].get("iteration", 0) if key in trace.graph else 0


def _leaf_origin(ix, tid, steps):
    """A leaf held NaN when read: given so, or made so by an optimizer step after a backward pass
    gave it a non-finite gradient (then trace that gradient)."""
    trace = ix.trace
    described = ix.described.get(tid, [])
    first_bad = next((i for i, e in described if _bad(e.value)), None)
    name = ix.name(tid)
    if first_bad is not None and tid not in ix.leaves_followed and \
            any(i < first_bad and not _bad(e.value) for i, e in described):
        ix.leaves_followed.add(tid)  # followed once: a walk never comes back to it
        # It was finite once: the last pass before it turned bad that gave it a bad gradient.
        for j in range(len(trace.passes) - 1, -1, -1):
            p = trace.passes[j]
            got = p.accumulated.get(tid)
            if got is None or j >= len(ix.pass_started) or ix.pass_started[j] > first_bad:
                continue
            contribution, grad = got
            if _bad(contribution) or _bad(grad):
                back, text = _backward_origin(ix, p, tensor_key(tid))
                return back + steps, text
    value = described[0][1].value if described else None
    counts = _counts(value) if _bad(value) else "NaN or Inf"
    return steps, f"{name} already held {counts} when forward first read it"


# -- NaN and Inf: backward -----------------------------------------------------------------------
def _contributors(trace, p):
    """node id -> [(the node id whose grad_inputs[i] went to it, i)] in pass ``p``."""
    out = {}
    for u in p.order:
        n = trace.nodes.get(u)
        if n is None:
            continue
        for i, v in enumerate(n.next_nodes):
            if v is not None:
                out.setdefault(v, []).append((u, i))
    return out


def _accumulate_node(trace, p, tid):
    return next((u for u in p.order if trace.nodes.get(u) is not None and trace.nodes[u].kind == "accumulate_grad"
                 and trace.nodes[u].output == tid), None)


def _backward_origin(ix, p, start):
    """Path and explanation of the earliest node of pass ``p`` that made a non-finite gradient
    from finite ones, on the way to ``start`` (a node whose grad_outputs or grad_inputs are bad,
    or a leaf whose gradient is); it continues into forward where that node read a bad value."""
    trace = ix.trace
    if start[0] == "t":
        tid = int(start[1:])
        contribution, grad = p.accumulated.get(tid, (None, None))
        acc = _accumulate_node(trace, p, tid)
        if not _bad(contribution) and _bad(grad):  # the .grad was already bad: an earlier pass
            earlier = [q for q in trace.passes[:trace.passes.index(p)] if _bad(q.accumulated.get(tid, (None,))[0])]
            if earlier:
                return _backward_origin(ix, earlier[-1], start)
        tail = [Step(start, "backward", p.iteration, p.index)]
        if acc is None:
            return tail, f"{ix.name(tid)}'s gradient held {_counts(contribution or grad)} in backward pass {p.index}"
        steps, text = _backward_origin(ix, p, node_key(acc))
        return steps + tail, text
    contributors = _contributors(trace, p)
    rank = {u: i for i, u in enumerate(p.order)}
    parent = {start: None}
    queue = deque([start])
    origins = []
    while queue:
        key = queue.popleft()
        nid = int(key[1:])
        outs = p.grad_outputs.get(nid, ())
        if not any(_bad(v) for v in outs):
            origins.append(key)  # finite gradient in, bad out (or the walk started here)
            continue
        feeders = [(u, i) for u, i in contributors.get(nid, ())
                   if i < len(p.grad_inputs.get(u, ())) and _bad(p.grad_inputs[u][i])]
        if not feeders:
            origins.append(key)  # a root fed a bad gradient: by backward()'s caller
            continue
        for u, _ in feeders:
            k = node_key(u)
            if k not in parent:
                parent[k] = key
                queue.append(k)
    origin = min(origins, key=lambda k: rank.get(int(k[1:]), math.inf))
    path = []
    k = origin
    while k is not None:
        path.append(k)
        k = parent[k]
    steps = [Step(k, "backward", p.iteration, p.index) for k in path]
    n = trace.nodes[int(origin[1:])]
    outs = p.grad_outputs.get(n.id, ())
    if any(_bad(v) for v in outs):  # a root given a bad gradient: what made the loss?
        if _bad(n.value):
            before, text = _forward_origin(ix, origin)
            return before + steps, text
        return steps, (f"the gradient given to backward() at {_op(n)}{_where(n)} held {_counts(outs[0])} "
                       f"(backward pass {p.index}, iteration {p.iteration})")
    inputs = ix.input_values(n)
    bad_forward = [(tid, m) for tid, v, m in inputs if _bad(v)]
    if _bad(n.value) or bad_forward:  # it only passed on a bad forward value: trace that
        start_fwd = origin if _bad(n.value) else (node_key(bad_forward[0][1].id) if bad_forward[0][1] is not None
                                                  else tensor_key(bad_forward[0][0]))
        before, text = _forward_origin(ix, start_fwd)
        return before + steps, text
    made = next((v for v in p.grad_inputs.get(n.id, ()) if _bad(v)), None)
    if made is None:  # a leaf's .grad already bad, and no pass recorded making it so
        return steps, f"{_op(n)}{_where(n)} received a finite gradient in backward pass {p.index}, but the .grad " \
            f"it adds to already held NaN or Inf"
    g = next((v for v in outs if v is not None), None)
    said = ", ".join(f"{ix.name(tid)} ({_range(v)})" for tid, v, _ in inputs if v is not None)
    text = (f"{_op(n)}{_where(n)} made {_counts(made)} in backward (pass {p.index}, iteration {p.iteration}) "
            f"from a finite grad_output" + (f" (max |g| {_g(max(abs(g.summary.min), abs(g.summary.max)))})"
                                            if g is not None else "")
            + (f" and finite input{'s' if len(inputs) != 1 else ''} {said}" if said else ""))
    return steps, text


def _passes_with(trace, pred):
    return [p for p in trace.passes if pred(p)]


def nan_origin(trace, what, pass_index=None) -> Origin:
    """Where the NaN or Inf at ``what`` (a node id, a graph key 'n5'/'t3', a tensor's name) came
    from: its forward output, value or gradient holding one. Forward first, as it happened first:
    a node whose output (or a leaf whose value) is non-finite is traced through forward; else its
    gradient in ``pass_index`` (default: the last pass where it was non-finite) through backward,
    and on into forward where the origin only passed on a bad forward value. Raises ``NoOrigin``
    when ``what`` holds no NaN or Inf."""
    kind, i = trace._resolve(what)
    ix = _Index(trace)
    key = node_key(i) if kind == "node" else tensor_key(i)
    if kind == "node":
        n = trace.nodes.get(i)
        if n is None:
            raise KeyError(f"no node n{i} in this trace")
        if _bad(n.value):
            steps, text = _forward_origin(ix, key)
            return Origin(tuple(steps), text)

        def bad_here(p):
            return any(_bad(v) for v in (*p.grad_outputs.get(i, ()), *p.grad_inputs.get(i, ())))
    else:
        t = trace.tensors.get(i)
        if t is not None and _bad(t.value):
            steps, text = _forward_origin(ix, key)
            return Origin(tuple(steps), text)

        def bad_here(p):
            return any(_bad(v) for v in p.accumulated.get(i, ()))
    passes = _passes_with(trace, bad_here)
    if pass_index is not None:
        passes = [p for p in passes if p.index == pass_index]
    if not passes:
        where = f" in backward pass {pass_index}" if pass_index is not None else ""
        raise NoOrigin(f"{key} holds no NaN or Inf{where}: nothing to trace")
    steps, text = _backward_origin(ix, passes[-1], key)
    return Origin(tuple(steps), text)


def gradients_at(trace, what):
    """Every gradient recorded at ``what`` (a node's grad_outputs and grad_inputs, a tensor's
    contributions and ``.grad``), over all passes, with its value (forward output, leaf value)."""
    kind, i = trace._resolve(what)
    if kind == "node":
        n = trace.nodes.get(i)
        out = [n.value] if n is not None else []
        for j in trace._entered_in.get(i, ()):
            if j < len(trace.passes):
                p = trace.passes[j]
                out += [*p.grad_outputs.get(i, ()), *p.grad_inputs.get(i, ())]
        return [v for v in out if v is not None]
    t = trace.tensors.get(i)
    out = [t.value] if t is not None else []
    for j in trace._accumulated_in.get(i, ()):
        if j < len(trace.passes):
            out += list(trace.passes[j].accumulated.get(i, ()))
    return [v for v in out if v is not None]


def holds_nonfinite(trace, what):
    """Whether a NaN or Inf was ever recorded at ``what``: something for ``nan_origin`` to trace."""
    return any(_bad(v) for v in gradients_at(trace, what))


def largest_gradient(trace, what):
    """The largest finite |value| of any gradient recorded at ``what`` (0.0 when none)."""
    return max((max(abs(v.summary.min), abs(v.summary.max)) for v in gradients_at(trace, what)
                if v.summary.numel and math.isfinite(v.summary.min)), default=0.0)


def first_nonfinite(trace):
    """What to trace when the user names nothing: the first leaf (in the order forward read them)
    whose gradient held a NaN or Inf in the last pass where any did, else the first node made whose
    forward output held one, else None."""
    for p in reversed(trace.passes):
        bad = [tid for tid, values in p.accumulated.items() if any(_bad(v) for v in values)]
        if bad:
            rank = trace._tensor_rank
            return tensor_key(min(bad, key=lambda t: rank.get(t, math.inf)))
    for n in trace.nodes.values():
        if _bad(n.value):
            return node_key(n.id)
    return None


def path_lines(trace, origin):
    """The path as text, a step a line: moment, pass, key, op or name, source line."""
    out = []
    for s in origin.path:
        if s.key[0] == "n":
            n = trace.nodes[int(s.key[1:])]
            what, where = _op(n), _where(n).replace(" at ", "")
        else:
            t = trace.tensors.get(int(s.key[1:]))
            what, where = (t.name if t is not None and t.name else s.key), ""
        when = f"backward pass {s.pass_index}" if s.moment == "backward" else f"forward iteration {s.iteration}"
        out.append(f"  {when:<20} {s.key:<6} {what:<24} {where}".rstrip())
    return out


# -- explosion -----------------------------------------------------------------------------------
def _rms(value):
    s = value.summary
    return s.norm / math.sqrt(s.numel) if s.numel else 0.0


def growth(p, nid):
    """How many times node ``nid`` grew the gradient per element in pass ``p``: the largest rms of
    its grad_inputs over the rms of its grad_output; None where it cannot say (no gradient in,
    a zero one, or NaN/Inf, which is ``nan_origin``'s business)."""
    outs = [v for v in p.grad_outputs.get(nid, ()) if v is not None]
    ins = [v for v in p.grad_inputs.get(nid, ()) if v is not None]
    if not outs or not ins or any(_bad(v) for v in outs):
        return None
    r_in = max(_rms(v) for v in outs)
    if r_in == 0.0:
        return None
    return max((math.inf if v.summary.inf else _rms(v)) for v in ins) / r_in


def explosion_origin(trace, what, k=DEFAULT_K, pass_index=None) -> Origin:
    """The first node of the backward pass (in the order it ran) on the way to ``what`` that grew
    the gradient more than ``k`` times per element (``growth``), with the path from it to
    ``what``. ``pass_index``: default, the last pass that reached ``what``. Raises ``NoOrigin`` when
    no node on the way grew it so much."""
    kind, i = trace._resolve(what)
    if kind == "node":
        passes = [p for p in trace.passes if i in p.grad_outputs]
    else:
        passes = [p for p in trace.passes if i in p.accumulated]
    if pass_index is not None:
        passes = [p for p in passes if p.index == pass_index]
    if not passes:
        raise NoOrigin(f"{node_key(i) if kind == 'node' else tensor_key(i)} got no gradient"
                       + (f" in backward pass {pass_index}" if pass_index is not None else ""))
    p = passes[-1]
    tail = []
    start = node_key(i)
    if kind == "tensor":
        acc = _accumulate_node(trace, p, i)
        tail = [Step(tensor_key(i), "backward", p.iteration, p.index)]
        if acc is None:
            raise NoOrigin(f"t{i}'s gradient came from no recorded node")
        start = node_key(acc)
    contributors = _contributors(trace, p)
    parent = {start: None}
    queue = deque([start])
    while queue:
        key = queue.popleft()
        for u, _ in contributors.get(int(key[1:]), ()):
            ku = node_key(u)
            if ku not in parent:
                parent[ku] = key
                queue.append(ku)
    ran = [u for u in p.order if node_key(u) in parent]
    for u in ran:
        ratio = growth(p, u)
        if ratio is not None and ratio > k:
            break
    else:
        raise NoOrigin(f"no node on the way to {tail[0].key if tail else start} grew its gradient more than "
                       f"{_g(k)} times per element in backward pass {p.index}")
    path = []
    key = node_key(u)
    while key is not None:
        path.append(key)
        key = parent[key]
    n = trace.nodes[u]
    g_in = max(_rms(v) for v in p.grad_outputs[u] if v is not None)
    text = (f"{_op(n)}{_where(n)} grew the gradient {_g(ratio)} times per element in backward (pass {p.index}, "
            f"iteration {p.iteration}): rms {_g(g_in)} in, {_g(g_in * ratio)} out")
    steps = [Step(kk, "backward", p.iteration, p.index) for kk in path] + tail
    return Origin(tuple(steps), text, "explosion", ratio)


# -- dead units ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadUnits:
    """A ReLU-like node's gradient in one pass: ``zero_fraction`` of its grad_input exactly 0 (of
    the summary's sample when ``sampled``)."""

    key: str
    op: str
    scope: str
    zero_fraction: float
    sampled: bool


def dead_units(trace, pass_index=-1) -> list:
    """Every ReLU-like node that ran in the pass (-1: the last), in the order it ran, with the
    fraction of its gradient that is exactly 0; [] without such a pass."""
    try:
        p = trace.passes[pass_index] if pass_index < 0 else trace._pass(pass_index)
    except (IndexError, KeyError):
        return []
    out = []
    for u in p.order:
        n = trace.nodes.get(u)
        if n is None or n.op not in RELU_LIKE:
            continue
        g = next((v for v in p.grad_inputs.get(u, ()) if v is not None), None)
        if g is None or not math.isfinite(g.summary.zeros):
            continue
        out.append(DeadUnits(node_key(u), n.op, n.scope, g.summary.zeros, g.summary.sampled))
    return out


@dataclass(frozen=True)
class ZeroStreak:
    """A parameter's gradient across iterations: ``last_nonzero`` the last iteration whose backward
    pass gave it a non-zero gradient (None: never), ``since`` the number of iterations with a
    backward pass after that one (all of them when never)."""

    key: str
    name: str
    last_nonzero: int | None
    since: int


def zero_grad_streaks(trace) -> dict:
    """Graph key -> ``ZeroStreak`` of every tensor that requires grad and was read by the graph
    (parameters and other leaves). A gradient is zero when its exact norm is 0 (a finished pass that
    did not reach the tensor gives it none, which counts as zero); NaN and Inf count as non-zero. A
    pass still running (paused mid-backward) counts only for the gradients it has already given: the
    rest are not zero, just not there yet. Kept on the trace until it grows (the app asks at every
    pause)."""
    cached = getattr(trace, "_zero_streaks", None)
    if cached is not None and cached[0] == len(trace.events):
        return cached[1]
    # Folded in once each: the finished passes at the front (a live run's poll walks only what came
    # since, not every pass of the run); the unfinished tail is looked at afresh each time.
    fold = getattr(trace, "_zero_fold", None)
    if fold is None:
        fold = trace._zero_fold = _ZeroFold()
    passes = trace.passes
    while fold.done < len(passes) and passes[fold.done].finished:
        p = passes[fold.done]
        fold.note(p, fold.nonzero)
        if p.iteration not in fold.seen:
            fold.seen.add(p.iteration)
            bisect.insort(fold.iterations, p.iteration)
        fold.done += 1
    nonzero = fold.nonzero
    if fold.done < len(passes):  # a pass under way, or one after it: what they gave so far
        nonzero = dict(nonzero)
        for p in passes[fold.done:]:
            fold.note(p, nonzero)
    iterations = fold.iterations
    out = {}
    for tid, t in trace.tensors.items():
        if not t.requires_grad or t.kind not in ("parameter", "leaf"):
            continue
        last = nonzero.get(tid)
        since = len(iterations) - (0 if last is None else bisect.bisect_right(iterations, last))
        out[tensor_key(tid)] = ZeroStreak(tensor_key(tid), t.name or tensor_key(tid), last, since)
    trace._zero_streaks = (len(trace.events), out)
    return out


class _ZeroFold:
    """``zero_grad_streaks``' running totals: the finished passes folded so far (``done``), the
    latest iteration each tensor had a non-zero gradient in, the finished passes' iterations."""

    def __init__(self):
        self.done = 0
        self.nonzero: dict = {}
        self.iterations: list = []
        self.seen: set = set()

    @staticmethod
    def note(p, nonzero):
        for tid, (contribution, grad) in p.accumulated.items():
            v = contribution if contribution is not None else grad
            if v is not None and (v.summary.norm > 0 or not v.summary.finite) and nonzero.get(tid, -1) < p.iteration:
                nonzero[tid] = p.iteration
