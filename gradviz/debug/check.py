"""Is this node's backward right? A per-node gradient check, run in the debugged program's process.

A node's analytic vector-Jacobian product (its own backward, run on the grad_outputs it received)
is compared with central finite differences of its forward, run again in float64 on copies of the
inputs it saw in forward (``gradviz.adapters.protocol.Replay``):

    d_k = <v, f(x + eps e_k) - f(x - eps e_k)> / (2 eps)   against   (v^T J)_k

for input elements k, so the worst input and element are named. Inputs with more elements than
the budget allows (``max_evals`` forward runs, two per direction) are checked on a seeded random
subset of their elements (always with the element of largest analytic gradient) plus one random
dense direction per input, which sees an error anywhere in it; the result says how many
directions of how many were checked. A node whose grad_outputs are all zero is checked with a
seeded random v instead (a zero v would pass any backward), and says so.

``NodeCheck`` is the result, with a JSON wire form (``to_wire``/``from_wire``); nothing is pickled.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from gradviz.adapters.protocol import NotCheckable, Replay

MAX_EVALS = 64  # forward runs a check may make (two per direction, two for the determinism test)


@dataclass(frozen=True)
class NodeCheck:
    """The gradient check of one node. ``ok`` is None when it could not be checked (``reason``
    says why). Errors are |numerical - analytical| over the checked directions; ``worst_input`` is
    the forward input index (the grad_input's edge index) and ``worst_element`` its flat element
    index (None for a dense direction)."""

    node: int | None
    op: str
    ok: bool | None
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst_input: int | None = None
    worst_element: int | None = None
    evaluations: int = 0
    directions_checked: int = 0
    directions_total: int = 0
    random_v: bool = False  # checked with a random v: the grad_outputs it received were all zero
    reason: str | None = None
    backward_source: str | None = None  # "file:line" of a user-written backward
    seconds: float = 0.0

    @property
    def checked(self) -> bool:
        return self.ok is not None

    def summary(self) -> str:
        """One line: ok/FAIL with the errors, or why it was not checked."""
        if self.ok is None:
            return f"not checked: {self.reason}"
        head = "ok" if self.ok else "FAIL"
        where = ""
        if not self.ok and self.worst_input is not None:
            elem = f" element {self.worst_element}" if self.worst_element is not None else " (a random direction)"
            where = f", worst at input {self.worst_input}{elem}"
        part = "" if self.directions_checked == self.directions_total else \
            f" ({self.directions_checked} of {self.directions_total} directions)"
        rv = ", random v" if self.random_v else ""
        return (f"{head}: max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}"
                f"{where}{part}{rv}")

    def __str__(self) -> str:
        return f"{self.op} (n{self.node}): {self.summary()}"

    def to_wire(self) -> dict:
        d = asdict(self)
        for k in ("max_abs_error", "max_rel_error"):  # JSON has no inf or nan
            x = d[k]
            d[k] = x if math.isfinite(x) else str(x)
        return d

    @classmethod
    def from_wire(cls, d: object) -> NodeCheck:
        """Read back a wire form, field by field; a ValueError names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("a node check should be a JSON object")
        kw: dict = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            x = d[f.name]
            if f.name in ("max_abs_error", "max_rel_error", "seconds"):
                if isinstance(x, str) and x in ("inf", "nan", "-inf"):
                    x = float(x)
                if type(x) not in (int, float):
                    raise ValueError(f"node check field {f.name!r} should be a number")
                x = float(x)
            elif f.name in ("ok",):
                if x is not None and type(x) is not bool:
                    raise ValueError("node check field 'ok' should be true, false or null")
            elif f.name == "random_v":
                if type(x) is not bool:
                    raise ValueError("node check field 'random_v' should be true or false")
            elif f.name in ("op",):
                if type(x) is not str:
                    raise ValueError("node check field 'op' should be a string")
            elif f.name in ("reason", "backward_source"):
                if x is not None and type(x) is not str:
                    raise ValueError(f"node check field {f.name!r} should be a string or null")
            else:  # integers
                if x is not None and type(x) is not int:
                    raise ValueError(f"node check field {f.name!r} should be an integer")
            kw[f.name] = x
        if "op" not in kw or "ok" not in kw:
            raise ValueError("a node check needs 'op' and 'ok'")
        kw.setdefault("node", None)
        return cls(**kw)


def not_checkable(node, op, reason, backward_source=None) -> NodeCheck:
    return NodeCheck(node, op, None, reason=reason, backward_source=backward_source)


def _fit(g, shape):
    """A grad_input summed to its input's shape (as the engine does after a node ran); None if it
    cannot be."""
    g = np.asarray(g, dtype=np.float64)
    if g.shape == shape:
        return g
    if g.size == int(np.prod(shape)) and g.ndim != len(shape):
        return g.reshape(shape)
    try:
        while g.ndim > len(shape):
            g = g.sum(axis=0)
        for ax, n in enumerate(shape):
            if n == 1 and g.shape[ax] != 1:
                g = g.sum(axis=ax, keepdims=True)
        return g if g.shape == shape else None
    except (ValueError, IndexError):
        return None


def check_replay(node, op, replay: Replay, v: list, vjp: Callable[[list], list], *, eps=1e-6, atol=1e-5,
                 rtol=1e-3, max_evals=MAX_EVALS, seed=0) -> NodeCheck:
    """Check ``replay``'s node: ``v`` its grad_outputs (numpy arrays, None for none), ``vjp(v)`` its
    backward on a v (one array or None per edge). See the module's text."""
    t0 = time.perf_counter()
    src = replay.backward_source
    xs = replay.inputs
    evals = 0

    def run(arrays):
        nonlocal evals
        evals += 1
        return [np.asarray(o, dtype=np.float64) for o in replay.run(arrays)]

    try:
        f0 = run(xs)
        f1 = run(xs)
    except Exception as exc:  # the forward does not run again: said, never fatal
        return not_checkable(node, op, f"its forward fails when run again: {type(exc).__name__}: {exc}", src)
    if len(f0) != len(f1) or any(a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)
                                 for a, b in zip(f0, f1)):
        return not_checkable(node, op, "its forward gives different outputs on the same inputs (randomness, "
                             "such as dropout without its mask)", src)
    if not all(np.isfinite(x).all() for x in xs):
        return not_checkable(node, op, "its inputs hold NaN or Inf: finite differences mean nothing there", src)
    vs = [np.zeros(o.shape) if g is None else np.asarray(g, dtype=np.float64).reshape(o.shape)
          if np.size(g) == o.size else None for g, o in zip(list(v) + [None] * len(f0), f0)]
    if any(x is None for x in vs):
        return not_checkable(node, op, "its grad_outputs do not match the outputs its forward makes again "
                             "(a composite node)", src)
    random_v = not any(np.any(x) for x in vs)
    rng = np.random.default_rng(seed)
    if random_v:
        vs = [rng.standard_normal(o.shape) for o in f0]
        like = [x.astype(np.float64) for x in vs]
    else:
        like = [None if g is None else np.asarray(g) for g in v]
        like = [x if x is not None else np.zeros(o.shape) for x, o in zip(like + [None] * len(f0), f0)]
    grads = vjp(like)
    analytic = []
    for x, e in zip(xs, replay.edges):
        g = grads[e] if e < len(grads) else None
        a = np.zeros(x.shape) if g is None else _fit(g, x.shape)
        if a is None:
            return NodeCheck(node, op, False, math.inf, math.inf, e, None, evals, 0, sum(x.size for x in xs),
                             random_v, f"grad_input {e} has shape {tuple(np.shape(g))}, its input {tuple(x.shape)}",
                             src, time.perf_counter() - t0)
        analytic.append(a)

    def numeric(i, d):
        xp = list(xs)
        xp[i] = xs[i] + eps * d
        fp = run(xp)
        xp[i] = xs[i] - eps * d
        fm = run(xp)
        return sum(float(np.vdot(w, p - m)) for w, p, m in zip(vs, fp, fm)) / (2 * eps)

    total = sum(x.size for x in xs)
    budget = max(1, (max_evals - evals) // 2)
    plan: list[tuple[int, int | None]] = []  # (input, element or None for a dense direction)
    if total <= budget:
        plan = [(i, k) for i, x in enumerate(xs) for k in range(x.size)]
    else:
        share = max(1, budget // len(xs))
        for i, x in enumerate(xs):
            if x.size <= share:
                plan += [(i, k) for k in range(x.size)]
                continue
            picks = [int(np.argmax(np.abs(analytic[i]).ravel()))]
            others = rng.choice(x.size, size=min(x.size, share), replace=False)
            picks += [int(k) for k in others if k != picks[0]][:max(0, share - 2)]
            plan += [(i, k) for k in picks] + [(i, None)]
    worst = (-1.0, 0.0, 0.0, None, None)  # (error / tolerance, abs, rel, input, element)
    max_abs = max_rel = 0.0
    ok = True
    for i, k in plan:
        if k is None:
            d = rng.choice([-1.0, 1.0], size=xs[i].shape) / math.sqrt(xs[i].size)
        else:
            d = np.zeros(xs[i].shape)
            d.flat[k] = 1.0
        num = numeric(i, d)
        ana = float(np.vdot(analytic[i], d))
        err = abs(num - ana)
        scale = max(abs(num), abs(ana))
        rel = err / scale if scale > 0 else 0.0
        if not math.isfinite(err):
            err = rel = math.inf
        tol = atol + rtol * abs(num)
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
        if err > tol:
            ok = False
        ratio = err / tol
        if ratio > worst[0]:
            worst = (ratio, err, rel, replay.edges[i], k)
    checked = sum(1 for _, k in plan if k is not None)
    return NodeCheck(node, op, ok, max_abs, max_rel, worst[3], worst[4], evals, checked, total, random_v, None, src,
                     time.perf_counter() - t0)


def check_node_in_session(adapter, node_obj, node_id, like, options) -> NodeCheck:
    """Check ``node_obj`` (paused before it runs, ``like`` its grad_outputs) through its adapter;
    ``options``: eps, atol, rtol, max_evals, seed. Never raises: a failure is a reason."""
    op = adapter.op_name(node_obj)
    src = None
    try:
        replay = adapter.replay(node_obj)
        src = replay.backward_source
        v = [None if g is None else adapter.to_numpy(g, False) for g in like]

        def vjp(arrays):
            out = adapter.vjp(node_obj, list(like), arrays)
            return [None if g is None else adapter.to_numpy(g, False) for g in out]

        opts = {k: options[k] for k in ("eps", "atol", "rtol", "max_evals", "seed") if options.get(k) is not None}
        return check_replay(node_id, op, replay, v, vjp, **opts)
    except NotCheckable as exc:
        return not_checkable(node_id, op, str(exc), getattr(exc, "backward_source", None))
    except Exception as exc:  # the program goes on whatever a check meets
        return not_checkable(node_id, op, f"{type(exc).__name__}: {exc}", src)
