"""Time travel: the trace as it was after any number of its events.

    tl = Timeline(trace)            # positions 0..len(trace.events); a live trace may grow
    tl.trace_at(k)                  # a Trace equal to replaying trace.events[:k] into a fresh one
    tl.describe(k)                  # "pass 0 · entered PowBackward0": event k-1, as a user reads it
    tl.marks()                      # [(position, "iteration 1"), (position, "pass 0"), ...]
    tl.pause_at(k), tl.ran_at(k)    # where the debugger stood at k, as a Pause, and what had run

``AppState.set_time(k)`` shows the moment after k events with these (``None``: the live program).

Cost: ``trace_at(k)`` copies the nearest checkpoint at or before k and replays the events after it
(at most ``every`` of them, ~3 µs each). Checkpoints (a replayed Trace without its events list) are
made lazily every ``every`` events; when there are more than ``max_checkpoints``, every other one is
dropped and the spacing doubles, so memory stays at most ``max_checkpoints`` copies of the graph and
passes. The Value objects are shared with the trace, never copied: replaying with the trace's own
budget keeps at most the arrays the trace kept at that moment, so a replay never drops (sets to None)
an array the trace still holds.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict

from . import events as ev
from .debugger import Pause
from .trace import Trace, node_key

_SHORT = "torch::autograd::"
# Applying these is how ``load(partial=True)`` fails on an inconsistent event; the event stays in
# ``trace.events`` and the replay goes on past it, as the loaded trace did.
_APPLY_ERRORS = (KeyError, TypeError, ValueError, AttributeError)
# Every attribute of a Trace, each copied by _copy_trace: a field added to Trace must be added here.
_TRACE_FIELDS = {"events", "graph", "nodes", "tensors", "passes", "steps", "iterations", "values",
                 "_frozen_pending"}


def _copy_trace(t, events):
    """A Trace equal to ``t`` with ``events`` as its events list, sharing no mutable state with it
    (the events and Values themselves are shared: they are never changed by building a trace)."""
    extra = set(vars(t)) ^ _TRACE_FIELDS
    if extra:
        raise RuntimeError(f"Trace has fields the timeline does not copy (or lacks some): {sorted(extra)}")
    c = Trace.__new__(Trace)
    c.events = events
    c.graph = t.graph.copy()
    c.nodes = dict(t.nodes)
    c.tensors = dict(t.tensors)
    c.passes = [dataclasses.replace(p, order=list(p.order), grad_outputs=dict(p.grad_outputs),
                                    grad_inputs=dict(p.grad_inputs), accumulated=dict(p.accumulated))
                for p in t.passes]
    c.steps = list(t.steps)
    c.iterations = t.iterations
    c.values = copy.copy(t.values)
    c.values._kept = OrderedDict(t.values._kept)
    c._frozen_pending = dict(t._frozen_pending)
    return c


def _apply(t, e):
    try:
        t.apply(e)
    except _APPLY_ERRORS:
        pass


def _short(op):
    return (op or "").replace(_SHORT, "")


class Timeline:
    def __init__(self, trace, every=256, max_checkpoints=32):
        self.trace = trace
        self.every = every
        self.max_checkpoints = max_checkpoints
        self._budget = trace.values.budget
        self._checkpoints = {0: Trace(self._budget)}  # position -> replayed Trace, events left None
        self._checkpoints[0].events = None
        self._last = None  # (k, Trace) of the last answer, given again for the same k
        # What describe() and marks() need, indexed once per event as the trace grows.
        self._scanned = 0
        self._ops = {}  # node id -> op name
        self._node_tensor = {}  # AccumulateGrad node id -> the tensor id it feeds
        self._names = {}  # tensor id -> name
        self._marks = []

    def __len__(self):
        return len(self.trace.events)

    def _check(self, k):
        n = len(self.trace.events)
        if not 0 <= k <= n:
            raise IndexError(f"position {k} is outside the timeline 0..{n}")
        return k

    # -- the trace at a position -------------------------------------------------------------------
    def trace_at(self, k):
        """The trace after its first ``k`` events (read-only: the same object is given again for the
        same ``k``)."""
        self._check(k)
        if self._last is not None and self._last[0] == k:
            return self._last[1]
        events = self.trace.events  # append-only: its first k stay as they are
        base = max(c for c in self._checkpoints if c <= k)
        t = _copy_trace(self._checkpoints[base], events[:base])
        for i in range(base, k):
            if i > base and i % self.every == 0 and i not in self._checkpoints:
                self._keep(i, t)
            _apply(t, events[i])
        if k > base and k % self.every == 0 and k not in self._checkpoints:
            self._keep(k, t)
        self._last = (k, t)
        return t

    def _keep(self, position, t):
        ck = _copy_trace(t, None)
        self._checkpoints[position] = ck
        if len(self._checkpoints) > self.max_checkpoints:
            self.every *= 2
            self._checkpoints = {p: c for p, c in self._checkpoints.items() if p % self.every == 0}

    # -- reading the events --------------------------------------------------------------------------
    def _scan(self):
        events = self.trace.events
        n = len(events)
        for i in range(self._scanned, n):
            e = events[i]
            t = type(e)
            if t is ev.NodeCreated:
                self._ops[e.id] = _short(e.op)
                if e.kind == "accumulate_grad" and e.output is not None:
                    self._node_tensor[e.id] = e.output
            elif t is ev.TensorDescribed:
                if e.name:
                    self._names[e.id] = e.name
            elif t is ev.IterationStarted:
                self._marks.append((i + 1, f"iteration {e.index}"))
            elif t is ev.BackwardStarted:
                self._marks.append((i + 1, f"pass {e.pass_index} starts"))
            elif t is ev.BackwardFinished:
                self._marks.append((i + 1, f"pass {e.pass_index} ends"))
            elif t is ev.ProgramExited:
                self._marks.append((i + 1, "program raised" if e.error else "program exited"))
        self._scanned = n

    def _op(self, node):
        """The node's op; an AccumulateGrad with the leaf it feeds: ``AccumulateGrad (b)``."""
        op = self._ops.get(node, node_key(node))
        tid = self._node_tensor.get(node)
        return op if tid is None else f"{op} ({self._tensor(tid)})"

    def _tensor(self, tid):
        return self._names.get(tid, f"t{tid}")

    def describe(self, k):
        """Event ``k-1`` (the last one the trace at ``k`` holds) in a user's words."""
        self._check(k)
        if k == 0:
            return "start: nothing recorded yet"
        self._scan()
        e = self.trace.events[k - 1]
        t = type(e)
        if t is ev.IterationStarted:
            return f"iteration {e.index} started"
        if t is ev.TensorDescribed:
            return f"{e.kind} {e.name or f't{e.id}'} {tuple(e.shape)} seen"
        if t is ev.NodeCreated:
            what = self._op(e.id)
            src = f" ({e.source.file.rsplit('/', 1)[-1]}:{e.source.line})" if e.source else ""
            return f"created {what}{src}"
        if t is ev.BackwardStarted:
            roots = ", ".join(self._op(r) for r in e.roots)
            return f"pass {e.pass_index} · backward from {roots}"
        if t is ev.NodeEntered:
            return f"pass {e.pass_index} · entered {self._op(e.node)}"
        if t is ev.NodeExited:
            return f"pass {e.pass_index} · {self._op(e.node)} done"
        if t is ev.GradAccumulated:
            return f"pass {e.pass_index} · {self._tensor(e.tensor)}.grad accumulated"
        if t is ev.BackwardFinished:
            return f"pass {e.pass_index} · backward finished"
        if t is ev.OptimizerStep:
            return f"optimizer step {e.index} ({e.optimizer}, {len(e.params)} parameters)"
        if t is ev.ProgramOutput:
            # Output comes in chunks (a line, then its line break): show the last line written.
            events, i, line = self.trace.events, k - 1, ""
            while i >= 0 and i >= k - 50 and not line:
                o = events[i]
                if type(o) is ev.ProgramOutput and o.stream == e.stream and o.text.strip():
                    line = o.text.strip().splitlines()[-1]
                i -= 1
            return f"{e.stream}: {line[:80]}"
        if t is ev.ProgramExited:
            if e.error:
                last = e.error.strip().splitlines()[-1]
                return f"program raised: {last}"
            return f"program exited (status {e.status})"
        return t.__name__

    def marks(self):
        """Positions worth a tick: iteration starts, backward pass starts and ends, the program's
        end; as (position, label), the position just after the event."""
        self._scan()
        return list(self._marks)

    # -- where the debugger stood --------------------------------------------------------------------
    def pause_at(self, k):
        """Where the debugger stood at ``k``, as the Pause the app shows (reason ``history``):
        after NodeEntered (or a GradAccumulated, mid-node) the node about to run, phase
        ``backward``; after NodeExited the node that just ran, phase ``backward-done``; after
        NodeCreated that node, phase ``forward``; otherwise no node, phase ``program``."""
        self._check(k)
        self._scan()
        detail = self.describe(k)
        if k == 0:
            return Pause("history", "program", detail=detail)
        e = self.trace.events[k - 1]
        t = type(e)
        node = phase = None
        if t in (ev.NodeEntered, ev.GradAccumulated):
            node, phase = e.node, "backward"
        elif t is ev.NodeExited:
            node, phase = e.node, "backward-done"
        elif t is ev.NodeCreated:
            node, phase = e.id, "forward"
        elif t is ev.BackwardStarted:
            phase = "backward"
        elif t is ev.BackwardFinished:
            phase = "backward-done"
        if phase is None:
            return Pause("history", "program", detail=detail)
        pass_index = getattr(e, "pass_index", None)
        outs, ins = (), ()
        if pass_index is not None and node is not None:
            p = next((p for p in reversed(self.trace_at(k).passes) if p.index == pass_index), None)
            if p is not None:
                outs, ins = p.grad_outputs.get(node, ()), p.grad_inputs.get(node, ())
        created = self.trace_at(k).nodes.get(node) if node is not None else None
        return Pause("history", phase, node, self._ops.get(node) if node is not None else None, pass_index,
                     [v.array if v is not None else None for v in outs],
                     [v.array if v is not None else None for v in ins],
                     created.source if created else None, created.scope if created else "", detail)

    def ran_at(self, k):
        """Graph keys of the nodes the latest backward pass had run by ``k``: its nodes so far, less
        the one the pause at ``k`` is about to run (AppState.ran()'s rule, on the past)."""
        t = self.trace_at(k)
        if not t.passes or t.passes[-1].iteration != t.iterations - 1:
            return set()
        done = [node_key(n) for n in t.passes[-1].order]
        p = self.pause_at(k)
        if p.phase == "backward" and p.node is not None and done and done[-1] == node_key(p.node):
            done = done[:-1]
        return set(done)
