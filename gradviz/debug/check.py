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
from typing import Any

import numpy as np

from gradviz.adapters.protocol import NotCheckable, Replay

MAX_EVALS = 128  # forward runs a check may make (two per direction)
TIME_BUDGET = 0.5  # seconds a check spends on directions, after its first (big inputs: fewer directions)


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
    kinks: int = 0  # directions skipped: the forward has a kink there (a max tie, ReLU at 0)

    @property
    def checked(self) -> bool:
        return self.ok is not None

    def summary(self) -> str:
        """One line: ok/FAIL with the errors, or why it was not checked."""
        if self.ok is None:
            return f"not checked: {self.reason}"
        head = "ok" if self.ok else "FAIL"
        if not self.ok and self.reason:
            return f"FAIL: {self.reason}"
        where = ""
        if not self.ok and self.worst_input is not None:
            elem = f" element {self.worst_element}" if self.worst_element is not None else " (a random direction)"
            where = f", worst at input {self.worst_input}{elem}"
        part = "" if self.directions_checked == self.directions_total else \
            f" ({self.directions_checked} of {self.directions_total} directions)"
        rv = (", random v" if self.random_v else "") + (f", {self.kinks} at kinks skipped" if self.kinks else "")
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


def _plan(xs, analytic, rng):
    """The directions to check, most telling first, round-robin over the inputs: per input a random
    dense direction (it sees an error anywhere), the element of largest analytic gradient, then its
    other elements in a seeded random order. (input, element or None for the dense direction)."""
    queues: list[list[tuple[int, int | None]]] = []
    for i, x in enumerate(xs):
        if x.size == 1:
            queues.append([(i, 0)])
            continue
        top = int(np.argmax(np.abs(analytic[i]).ravel()))
        rest = rng.permutation(x.size) if x.size <= 1 << 16 else rng.choice(x.size, size=1024, replace=False)
        queues.append([(i, None), (i, top)] + [(i, int(k)) for k in rest if k != top])
    plan = []
    for j in range(max(len(q) for q in queues)):
        plan += [q[j] for q in queues if j < len(q)]
    return plan


def check_replay(node, op, replay: Replay, v: list, vjp: Callable[[list], list], *, eps=1e-6, atol=1e-5,
                 rtol=1e-3, max_evals=MAX_EVALS, time_budget=TIME_BUDGET, seed=0) -> NodeCheck:
    """Check ``replay``'s node: ``v`` its grad_outputs (numpy arrays, None for none), ``vjp(v)`` its
    backward on a v (one array or None per edge). See the module's text."""
    t0 = time.perf_counter()
    src = replay.backward_source
    xs = replay.inputs
    f0 = [np.asarray(o, dtype=np.float64) for o in replay.outputs]
    evals = 1  # the adapter's run of replay.outputs

    def run(arrays):
        nonlocal evals
        evals += 1
        return [np.asarray(o, dtype=np.float64) for o in replay.run(arrays)]

    if not all(np.isfinite(x).all() for x in xs):
        return not_checkable(node, op, "its inputs hold NaN or Inf: finite differences mean nothing there", src)
    vs: list = [np.zeros(o.shape) if g is None else np.asarray(g, dtype=np.float64).reshape(o.shape)
          if np.size(g) == o.size else None for g, o in zip(list(v) + [None] * len(f0), f0)]
    if any(x is None for x in vs):
        return not_checkable(node, op, "its grad_outputs do not match the outputs its forward makes again "
                             "(a composite node)", src)
    random_v = not any(np.any(x) for x in vs)
    rng = np.random.default_rng(seed)
    if random_v:
        vs = [rng.standard_normal(o.shape) for o in f0]
        like = list(vs)
    else:
        like = [np.zeros(o.shape) if g is None else np.asarray(g) for g, o in zip(list(v) + [None] * len(f0), f0)]
    grads = vjp(like)
    total = sum(x.size + (x.size > 1) for x in xs)  # elements, and a dense direction per input of several
    analytic = []
    for x, e in zip(xs, replay.edges):
        g: Any = grads[e] if e < len(grads) else None
        a = np.zeros(x.shape) if g is None else _fit(g, x.shape)
        if a is None:
            return NodeCheck(node, op, False, math.inf, math.inf, e, None, evals, 0, total, random_v,
                             f"its grad_input {e} has shape {tuple(np.shape(g))}, its input {tuple(x.shape)}",
                             src, time.perf_counter() - t0)
        analytic.append(a)
    noise = 1e-14 * sum(float(np.vdot(np.abs(w), np.abs(o))) for w, o in zip(vs, f0)) / eps  # rounding in <v, f>

    worst = (-1.0, None, None)  # (error / tolerance, input, element)
    max_abs = max_rel = 0.0
    ok, checked, kinks, spent = True, 0, 0, 0.0
    for i, k in _plan(xs, analytic, rng):
        if evals + 2 > max_evals or (checked > 0 and time.perf_counter() - t0 + spent > time_budget):
            break
        if k is None:
            d = rng.choice([-1.0, 1.0], size=xs[i].shape) / math.sqrt(xs[i].size)
        else:
            d = np.zeros(xs[i].shape)
            d.flat[k] = 1.0
        t1 = time.perf_counter()
        xp = list(xs)
        xp[i] = xs[i] + eps * d
        fp = run(xp)
        xp[i] = xs[i] - eps * d
        fm = run(xp)
        spent = time.perf_counter() - t1  # what the next direction will cost
        plus = sum(float(np.vdot(w, p - o)) for w, p, o in zip(vs, fp, f0))
        minus = sum(float(np.vdot(w, o - m)) for w, o, m in zip(vs, f0, fm))
        num = (plus + minus) / (2 * eps)
        # relative to the terms summed, not only their sum: a dense direction's <a, d> can cancel
        # down to a value the analytic's own rounding (float32) is large against
        terms = float(np.vdot(np.abs(analytic[i]), np.abs(d)))
        tol = atol + rtol * max(abs(num), terms)
        # A kink (a max or ReLU tie, |x| at 0): the one-sided slopes disagree, and no derivative
        # exists there to check against; that direction is skipped, and counted.
        if abs(plus - minus) / eps > tol + noise:
            kinks += 1
            continue
        checked += 1
        ana = float(np.vdot(analytic[i], d))
        err = abs(num - ana)
        scale = max(abs(num), abs(ana), terms)  # (as the tolerance: a direction that cancels to ~0 gives no 185% error)
        rel = err / scale if scale > 0 else 0.0
        if not math.isfinite(err):
            err = rel = math.inf
        max_abs = max(max_abs, err)
        if scale > atol or not math.isfinite(rel):  # (a direction whose gradient is ~0 is judged by atol alone:
            max_rel = max(max_rel, rel)              # its relative error says nothing)
        if err > tol:
            ok = False
        if err / tol > worst[0]:
            worst = (err / tol, replay.edges[i], k)
    if checked == 0:
        return NodeCheck(node, op, None, evaluations=evals, directions_total=total, random_v=random_v,
                         reason="not differentiable at the inputs it saw: every direction tried is at a kink "
                         "(ties in a max, ReLU at 0)" if kinks else "the check's budget allowed no direction",
                         backward_source=src, seconds=time.perf_counter() - t0, kinks=kinks)
    return NodeCheck(node, op, ok, max_abs, max_rel, worst[1], worst[2], evals, checked, total, random_v, None, src,
                     time.perf_counter() - t0, kinks)


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

        opts = {k: options[k] for k in ("eps", "atol", "rtol", "max_evals", "time_budget", "seed")
                if options.get(k) is not None}
        return check_replay(node_id, op, replay, v, vjp, **opts)
    except NotCheckable as exc:
        return not_checkable(node_id, op, str(exc), getattr(exc, "backward_source", None))
    except Exception as exc:  # the program goes on whatever a check meets
        return not_checkable(node_id, op, f"{type(exc).__name__}: {exc}", src)
