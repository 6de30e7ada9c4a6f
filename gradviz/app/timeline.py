"""Time travel: the trace as it was after any number of its events.

    tl = Timeline(trace)            # positions 0..len(trace.events); a live trace may grow
    tl.trace_at(k)                  # the trace as replaying trace.events[:k] into a fresh one builds it
    tl.describe(k)                  # "pass 0 · entered PowBackward0": event k-1, as a user reads it
    tl.marks()                      # [(position, "iteration 1"), (position, "pass 0"), ...]
    tl.pause_at(k), tl.ran_at(k)    # where the debugger stood at k, as a Pause, and what had run

``AppState.set_time(k)`` shows the moment after k events with these (``None``: the live program).

Cost: nothing is copied or replayed from the start. ``trace_at(k)`` is a ``TraceAt``, a read-only
view of the trace itself cut at k: its graph is a networkx subgraph view keeping the nodes born
before k (``Trace.born``), its nodes, tensors, steps and iterations are found by bisecting positions
indexed once per event, finished passes are the trace's own Pass objects, and only a pass still
running at k is rebuilt, from its own events. So a moment costs about one pass of the program, not
the length of the run (bench/bench_timeline.py), and holds no memory of its own.

What a view does not go back in time on: a tensor node's drawing attributes (its name and kind as
last described; a tensor's TensorDescribed event itself is the one of its moment), the full
arrays, which are the ones the trace holds now (summaries are always there), the source lines'
texts (``Trace.source_texts``: a line's text does not change), and a node named as a
next node before its own NodeCreated (gradviz's producers announce nodes after the nodes they
feed; a file from elsewhere might not): from its first mention it shows the edges and attributes
its NodeCreated gave it. Reading a view of a
live trace takes the lock its writer holds (``Debugger.lock``), as reading the trace does.
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping

from gradviz import events as ev
from gradviz.debug.debugger import Pause
from gradviz.app.labels import short_op
from gradviz.trace.model import Pass, Trace, forgotten_text, node_key

def _raised(e):
    """A ProgramExited for an exception, not gradviz refusing to start it (status 2: no such
    script or demo, with a message)."""
    return bool(e.error) and e.status != 2


_short = short_op


class _History:
    """Events about ids (NodeCreated for nodes, TensorDescribed for tensors), indexed as they
    arrive: each id's positions and events, and the ids in the order first seen."""

    def __init__(self):
        self.by_id = {}  # id -> ([positions], [events])
        self.order, self.order_pos = [], []

    def add(self, key, position, e):
        hist = self.by_id.get(key)
        if hist is None:
            self.by_id[key] = hist = ([], [])
            self.order.append(key)
            self.order_pos.append(position)
        hist[0].append(position)
        hist[1].append(e)


def _prune_history(history, kept, end):
    """Keep the ids of ``kept`` (a trace's nodes or tensors), each with its events from ``end`` on
    and the last one before (the one in force at ``end``); returns the ids let go of. Only the ids
    first seen before ``end`` are looked at (they come first in ``order``): the work is
    proportional to what was forgotten and to the older ids kept, not to all that is kept."""
    order, order_pos, by_id = history.order, history.order_pos, history.by_id
    m = bisect.bisect_left(order_pos, end)
    keys, positions_kept, gone = [], [], []
    for key, first in zip(order[:m], order_pos[:m]):
        if key in kept:
            positions, events = by_id[key]
            i = bisect.bisect_left(positions, end) - 1
            if i > 0:
                del positions[:i], events[:i]
            keys.append(key)
            positions_kept.append(first)
        else:
            del by_id[key]
            gone.append(key)
    order[:m] = keys
    order_pos[:m] = positions_kept
    return gone


def _sort_history(history):
    """Ids in the order first seen, after ids were added out of order (``Timeline._catch_up``)."""
    order = sorted(zip(history.order_pos, history.order), key=lambda pair: pair[0])
    history.order = [key for _, key in order]
    history.order_pos = [p for p, _ in order]


class _MapAt(Mapping):
    """``trace.nodes`` or ``trace.tensors`` (id -> its latest event) as it was after ``k`` events
    (a file may announce a node twice; a tensor is described again each iteration)."""

    def __init__(self, history, k):
        self._h, self._k = history, k

    def __getitem__(self, key):
        hist = self._h.by_id.get(key)
        if hist is None:
            raise KeyError(key)
        i = bisect.bisect_left(hist[0], self._k)
        if i == 0:
            raise KeyError(key)
        return hist[1][i - 1]

    def __len__(self):
        return bisect.bisect_left(self._h.order_pos, self._k)

    def __iter__(self):
        return iter(self._h.order[:len(self)])


class TraceAt(Trace):
    """The trace after its first ``k`` events, read-only; see the module's doc for what it shares."""

    def __init__(self, timeline, k):
        import networkx as nx
        tl, live = timeline, timeline.trace
        self.k = k
        self._live = live
        born = live.born
        self.graph = nx.subgraph_view(live.graph, filter_node=lambda key: born.get(key, k) < k)
        self.nodes = _MapAt(tl._nodes, k)
        self.tensors = _MapAt(tl._tensors, k)
        self.steps = live.steps[:bisect.bisect_left(tl._step_pos, k)]
        n = bisect.bisect_left(tl._iteration_pos, k)
        self.iterations = tl._iterations_after[n - 1] if n else 0
        self.values = live.values
        self.event_budget = live.event_budget
        self.forgotten_iterations = live.forgotten_iterations
        self.born = born
        self.iteration_nodes = live.iteration_nodes
        # Indexes shared with the trace: each lookup checks what it finds against this moment.
        for name in ("source_texts", "_made_by", "_peers", "_tensor_rank", "_pass_place", "_entered_in",
                     "_accumulated_in", "_iteration_passes"):
            setattr(self, name, getattr(live, name))
        self.passes = tl._passes_at(k)
        self._births = tl._births
        self._events = None

    @property
    def events(self):
        if self._events is None:
            self._events = self._live.events[:self.k]
        return self._events

    def node_count(self):
        return bisect.bisect_left(self._births, self.k)

    def apply(self, e):
        raise TypeError("a trace in the past (Timeline.trace_at) is read-only")


class Timeline:
    def __init__(self, trace):
        self.trace = trace
        self._last = None  # (k, TraceAt) of the last answer, given again for the same k
        # Positions indexed once per event as the trace grows (_scan), for trace_at, describe, marks.
        self._scanned = 0
        self._ops = {}  # node id -> op name
        self._node_tensor = {}  # AccumulateGrad node id -> the tensor id it feeds
        self._names = {}  # tensor id -> name
        self._marks = []
        self._nodes, self._tensors = _History(), _History()  # NodeCreated, TensorDescribed
        self._step_pos = []
        self._iteration_pos, self._iterations_after = [], []
        self._births = []  # positions of Trace.born, in order (nondecreasing)
        # Backward passes, by their place in trace.passes: start, events (positions).
        self._pass_start, self._pass_events = [], []
        self._pass_of = {}  # pass index -> place
        self._overlapped = set()  # places of passes that got an event after the next one started
        self._pruned = 0  # trace.forgotten_before when the indexes last let go of forgotten iterations
        self._marks_dropped = 0  # marks of forgotten iterations, let go
        self._passes_pruned = 0  # _pass_events[:this] were let go of (their passes forgotten)

    def __len__(self):
        return len(self.trace.events)

    def _check(self, k):
        n = len(self.trace.events)
        if not 0 <= k <= n:
            raise IndexError(f"position {k} is outside the timeline 0..{n}")
        return k

    def first(self):
        """The first position one may travel to: 0, or just after the first kept iteration's start
        once the oldest iterations were forgotten (``Trace.event_budget``)."""
        f = self.trace.forgotten_before
        return f + 1 if f else 0

    def forgotten_message(self):
        """What a moment before ``first()`` is refused with ("" when nothing was forgotten)."""
        n = self.trace.forgotten_iterations
        return f"{forgotten_text(n)} to bound memory" if n else ""

    # -- the trace at a position -------------------------------------------------------------------
    def trace_at(self, k):
        """The trace after its first ``k`` events, a read-only ``TraceAt`` (the same object is
        given again for the same ``k``: what it holds does not change as the trace grows). A
        moment of a forgotten iteration (before ``first()``) is refused: IndexError."""
        self._check(k)
        if k < self.first():
            raise IndexError(f"position {k}: {self.forgotten_message()}")
        if self._last is not None and self._last[0] == k:
            return self._last[1]
        self._scan()
        t = TraceAt(self, k)
        self._last = (k, t)
        return t

    def _passes_at(self, k):
        """trace.passes after ``k`` events: the trace's own Pass objects for passes finished by
        then, a Pass rebuilt from its events for one still running at k (the live one keeps
        growing, and a moment must not)."""
        n = bisect.bisect_left(self._pass_start, k)
        passes = self.trace.passes[:n]
        maybe = {j for j in self._overlapped if j < n}
        if n:
            maybe.add(n - 1)
        events = self.trace.events
        for j in maybe:
            if passes[j].forgotten:
                continue
            mine = self._pass_events[j]
            if not mine or mine[-1] >= k or type(events[mine[-1]]) is not ev.BackwardFinished:
                passes[j] = self._rebuild_pass(j, k)
        return passes

    def _rebuild_pass(self, j, k):
        events = self.trace.events
        start = events[self._pass_start[j]]
        p = Pass(start.pass_index, start.iteration, tuple(start.roots))
        for i in self._pass_events[j]:  # as Trace's handlers build it
            if i >= k:
                break
            e = events[i]
            t = type(e)
            if t is ev.NodeEntered:
                p.order.append(e.node)
                p.grad_outputs[e.node] = e.grad_outputs
            elif t is ev.NodeExited:
                p.grad_inputs[e.node] = e.grad_inputs
            elif t is ev.GradAccumulated:
                p.accumulated[e.tensor] = (e.contribution, e.grad)
            else:
                p.finished = True
        return p

    # -- reading the events --------------------------------------------------------------------------
    def _scan(self):
        trace = self.trace
        events = trace.events
        n = len(events)
        if trace.forgotten_before > self._pruned:
            self._prune()
        if self._scanned < trace.forgotten_before:
            self._catch_up()
        if n == self._scanned:
            return
        for i in range(self._scanned, n):
            e = events[i]
            t = type(e)
            if t is ev.NodeCreated:
                self._ops[e.id] = _short(e.op)
                if e.kind == "accumulate_grad" and e.output is not None:
                    self._node_tensor[e.id] = e.output
                self._nodes.add(e.id, i, e)
            elif t is ev.TensorDescribed:
                if e.name:
                    self._names[e.id] = e.name
                self._tensors.add(e.id, i, e)
            elif t is ev.IterationStarted:
                self._marks.append((i + 1, f"iteration {e.index}"))
                before = self._iterations_after[-1] if self._iterations_after else 0
                self._iteration_pos.append(i)
                self._iterations_after.append(max(before, e.index + 1))
            elif t is ev.BackwardStarted:
                self._marks.append((i + 1, f"pass {e.pass_index} starts"))
                self._pass_of[e.pass_index] = len(self._pass_start)
                self._pass_start.append(i)
                self._pass_events.append([])
            elif t in (ev.NodeEntered, ev.NodeExited, ev.GradAccumulated, ev.BackwardFinished):
                j = self._pass_of.get(e.pass_index)
                if j is not None:  # else an event of no pass: the trace's apply refused it too
                    self._pass_events[j].append(i)
                    if j != len(self._pass_start) - 1:
                        self._overlapped.add(j)  # an older pass still getting events
                if t is ev.BackwardFinished:
                    self._marks.append((i + 1, f"pass {e.pass_index} ends"))
            elif t is ev.OptimizerStep:
                self._step_pos.append(i)
            elif t is ev.ProgramExited:
                self._marks.append((i + 1, "program raised" if _raised(e) else "program exited"))
        born = trace.born
        new = len(born) - len(self._births)
        if new > 0:  # the latest entries, from the end (a slice from the start walks the whole dict)
            self._births.extend(reversed(list(itertools.islice(reversed(born.values()), new))))
        self._scanned = n

    def _catch_up(self):
        """Index what the trace still holds of events forgotten before this timeline read them (a
        long file opened, a window that polled late): the forgotten passes and optimizer steps,
        by count, at the first unread position (any position before ``first()`` serves: none is
        shown), and the nodes and tensors the trace kept, at the position they were born."""
        trace, at = self.trace, self._scanned
        end = trace.forgotten_before
        kept_steps = sum(1 for e in trace.events[end:] if type(e) is ev.OptimizerStep)
        self._step_pos += [at] * (len(trace.steps) - kept_steps - len(self._step_pos))
        for j in range(len(self._pass_start), len(trace.passes)):
            p = trace.passes[j]
            if not p.forgotten:
                break
            self._pass_of[p.index] = j
            self._pass_start.append(at)
            self._pass_events.append([])
        self._iteration_pos.append(at)
        self._iterations_after.append(max(self._iterations_after[-1] if self._iterations_after else 0,
                                          trace.forgotten_iterations))
        born = trace.born
        for nid, e in trace.nodes.items():
            if nid not in self._nodes.by_id and born.get(node_key(nid), end) < end:
                self._ops[nid] = _short(e.op)
                if e.kind == "accumulate_grad" and e.output is not None:
                    self._node_tensor[nid] = e.output
                self._nodes.add(nid, born[node_key(nid)], e)
        for tid, e in trace.tensors.items():  # (one described again later: its latest, from the start)
            if tid not in self._tensors.by_id and min(trace._described_at.get(tid, end),
                                                      born.get(f"t{tid}", end)) < end:
                if e.name:
                    self._names[tid] = e.name
                self._tensors.add(tid, min(trace._described_at.get(tid, at), end - 1), e)
        _sort_history(self._nodes)
        _sort_history(self._tensors)
        self._scanned = end

    def _prune(self):
        """Let go of what the indexes hold of forgotten iterations (gradviz.trace.forget): ids the
        trace let go of, their older events, their marks."""
        trace = self.trace
        end = self._pruned = trace.forgotten_before
        for nid in _prune_history(self._nodes, trace.nodes, end):
            self._ops.pop(nid, None)
            self._node_tensor.pop(nid, None)
        for tid in _prune_history(self._tensors, trace.tensors, end):
            self._names.pop(tid, None)
        passes = trace.passes
        j = self._passes_pruned
        while j < len(self._pass_events) and passes[j].forgotten:
            self._pass_events[j] = []
            self._overlapped.discard(j)
            j += 1
        self._passes_pruned = j
        i = bisect.bisect_right(self._marks, end, key=lambda m: m[0])
        del self._marks[:i]
        self._marks_dropped += i
        # Trace.born is in the order of positions: the entries before end that are still there
        # come first; those from end on are unchanged.
        old = []
        for position in trace.born.values():
            if position >= end:
                break
            old.append(position)
        self._births[:bisect.bisect_left(self._births, end)] = old

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
        if k < self.first():
            return self.forgotten_message()
        if k == 0:
            return "start: nothing recorded yet"
        self._scan()
        e = self.trace.events[k - 1]
        t = type(e)
        if t is ev.IterationStarted:
            return f"iteration {e.index} started"
        if t is ev.SourceText:
            return f"source {e.file.rsplit('/', 1)[-1]}:{e.line}: {e.text.strip()[:60]}"
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
            last = e.error.strip().splitlines()[-1] if e.error and e.error.strip() else ""
            if _raised(e):
                return f"program raised: {last}"
            return f"program exited (status {e.status})" + (f": {last}" if last else "")
        return t.__name__

    def mark_count(self):
        """How many marks were ever made (those of forgotten iterations too: a count that only grows)."""
        self._scan()
        return self._marks_dropped + len(self._marks)

    def marks(self):
        """Positions worth a tick: iteration starts, backward pass starts and ends, the program's
        end; as (position, label), the position just after the event."""
        self._scan()
        return list(self._marks)

    def marks_so_far(self):
        """``marks()`` without the copy: the timeline's own list, which only grows (read it, do not
        change it), in order of position."""
        self._scan()
        return self._marks

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
