"""``Trace``: what a recording holds, built event by event. The events in order; the backward graph
as a networkx DiGraph; each backward pass with its nodes in execution order and the gradients it
carried; value summaries always, full arrays within a memory budget (oldest dropped first)."""
from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field

from gradviz import events as ev
from gradviz.summary import HIST_BINS, Summary
from gradviz.trace.forget import FORGOTTEN, STEPS_PER_ITERATION, forget_step
from gradviz.trace.gvz import write_trace
from gradviz.trace.notes import FileNotes, mib

DEFAULT_BUDGET = 512 * 2**20
# A kept array costs its bytes and its Python objects (the ndarray, the store's entry): counted, so
# that many small arrays are bounded by the budget too (issue 13, item 12).
ARRAY_OVERHEAD = 256
# The second bound: full summaries for the latest DETAIL_EVENTS events; older iterations' values keep
# slim ones (shape, dtype, count, min, max, norm, NaN and Inf counts: what labels, anomaly marks and
# the norm history read), their mean, std, mean |x|, zeros, histogram and full array dropped.
DETAIL_EVENTS = 50_000
# The third bound, whatever the run's length: past EVENT_BUDGET events in detail, the oldest whole
# iterations are forgotten (gradviz.trace.forget): their events become FORGOTTEN, their graph
# nodes, arrays and per-node gradients go; their passes stay as stubs with each tensor's .grad.
EVENT_BUDGET = 1_000_000
SLIM_HIST = tuple([0] * HIST_BINS)  # a slim summary's histogram (this very tuple: ``is_slim``)
_NAN = float("nan")


def slim(s):
    """The slim form of a summary (itself when already slim)."""
    if s.hist is SLIM_HIST:
        return s
    return Summary(s.shape, s.dtype, s.numel, s.min, s.max, _NAN, _NAN, s.norm, s.nan, s.inf, SLIM_HIST, _NAN, _NAN,
                   s.sampled, _NAN, _NAN)


def _range(n):
    return "0" if n == 1 else f"0..{n - 1}"


def forgotten_text(n):
    """What a moment in the first ``n`` iterations, forgotten, is refused with."""
    return f"iteration{'s' if n > 1 else ''} {_range(n)} {'were' if n > 1 else 'was'} forgotten"


def is_slim(s):
    return s.hist is SLIM_HIST


def peer_signature(e):
    """What makes grad_fn nodes of different iterations "the same node": op, module scope and the
    line that made them (``file:line``, "" when unknown). The debugger's child keys its peer
    breakpoints the same way (gradviz.debug.session), so the ranks the app computes are the child's."""
    src = e.source
    return e.op, e.scope, f"{src.file}:{src.line}" if src is not None else ""


def nonfinite(value):
    """(NaN count, Inf count) of a value that holds either, else None: a node's forward output, a
    leaf's value (the graph's ``nonfinite`` attribute, shown wherever values are)."""
    if value is None:
        return None
    s = value.summary
    return (s.nan, s.inf) if s.nan or s.inf else None


def nonfinite_text(counts):
    """'2 NaN', '1 Inf', '2 NaN, 1 Inf' of (NaN count, Inf count)."""
    nan, inf = counts
    return ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)


def node_key(node_id):
    return f"n{node_id}"


def tensor_key(tensor_id):
    return f"t{tensor_id}"


@dataclass
class Pass:
    """One backward pass: its nodes in the order they ran and the gradients they saw."""

    index: int
    iteration: int
    roots: tuple
    order: list = field(default_factory=list)
    grad_outputs: dict = field(default_factory=dict)  # node id -> tuple of Value
    grad_inputs: dict = field(default_factory=dict)  # node id -> tuple of Value
    accumulated: dict = field(default_factory=dict)  # tensor id -> (contribution, new .grad)
    planned: tuple | None = None  # ids of the nodes it will run, when fewer than its roots reach
    finished: bool = False
    buckets: list = field(default_factory=list)  # BucketReduced events (DDP), in launch order
    synchronized: dict = field(default_factory=dict)  # tensor id -> .grad after DDP's all-reduce
    forgotten: bool = False  # a stub of a forgotten iteration's pass: ``accumulated`` .grad only


class ValueStore:
    """Keeps full arrays while their bytes fit the budget, dropping the oldest first."""

    def __init__(self, budget_bytes=DEFAULT_BUDGET):
        if budget_bytes < 0:
            raise ValueError(f"memory budget must be >= 0 bytes, got {budget_bytes}")
        self.budget = budget_bytes
        self.stored_bytes = 0
        self.peak_bytes = 0
        self.dropped = 0  # arrays dropped to stay within the budget
        self.dropped_bytes = 0
        self.discarded = 0  # arrays of iterations made slim (Trace.detail_events)
        self._kept = OrderedDict()

    def add(self, value):
        if value is None or value.array is None or id(value) in self._kept:
            return
        self._kept[id(value)] = value
        self.stored_bytes += value.array.nbytes + ARRAY_OVERHEAD
        while self.stored_bytes > self.budget:
            _, old = self._kept.popitem(last=False)
            self.stored_bytes -= old.array.nbytes + ARRAY_OVERHEAD
            self.dropped += 1
            self.dropped_bytes += old.array.nbytes
            old.array = None
        self.peak_bytes = max(self.peak_bytes, self.stored_bytes)

    def discard(self, value):
        """Drop this value's array now (its iteration keeps slim summaries only)."""
        if self._kept.pop(id(value), None) is not None:
            self.stored_bytes -= value.array.nbytes + ARRAY_OVERHEAD
            self.discarded += 1
            value.array = None


def _note(index, key, place):
    """Add ``place`` to the sorted list ``index[key]`` (places arrive in order but for passes that
    overlap, which a trace file may hold)."""
    places = index.get(key)
    if places is None:
        index[key] = [place]
    elif places[-1] < place:
        places.append(place)
    elif place not in places:
        bisect.insort(places, place)


_UNKNOWN = object()


def _values_of(e):
    t = type(e)
    if t is ev.NodeEntered:
        return e.grad_outputs
    if t is ev.NodeExited:
        return e.grad_inputs
    if t is ev.GradAccumulated:
        return (e.contribution, e.grad)
    if t is ev.BackwardStarted:
        return e.grads
    if t is ev.GradSynchronized:
        return (e.grad,)
    if t in (ev.NodeCreated, ev.TensorDescribed):
        return (e.value,)
    return ()


class Trace:
    def __init__(self, budget_bytes=DEFAULT_BUDGET, detail_events=DETAIL_EVENTS, event_budget=EVENT_BUDGET):
        import networkx as nx
        if event_budget is not None and event_budget < 1:
            raise ValueError(f"event budget must be >= 1 event (or None: unbounded), got {event_budget}")
        self.events = []
        self.detail_events = detail_events  # None: every summary kept whole
        self.event_budget = event_budget  # None: no iteration forgotten
        self.forgotten_before = 0  # events before this position are FORGOTTEN
        self.forgotten_iterations = 0  # iterations 0 .. this - 1 were forgotten
        self._starts = []  # (position, index) of IterationStarted events not yet forgotten
        self._passes_forgotten = 0  # passes[:this] are ForgottenPass stubs
        self._grad_kinds, self._grad_kind_of = [], {}  # their gradients' (shape, dtype) (forget.SlimGrads)
        self._described_at = {}  # tensor id -> position of its latest TensorDescribed
        self.slim_before = 0  # position of the first event whose values' summaries are whole
        self._iteration_starts = []  # positions of the IterationStarted events
        self._handlers = {}  # event type -> its handler (a function of the class), or None
        self.graph = nx.DiGraph()
        self.nodes = {}  # node id -> NodeCreated
        self.tensors = {}  # tensor id -> its latest TensorDescribed
        self.passes = []
        self.steps = []  # OptimizerStep events
        self.iterations = 0
        self.source_texts = {}  # (file, line) -> that line's text, as the program ran it (SourceText)
        self.rank = None  # the latest RankInfo: which rank of a distributed job this is, or None
        self.values = ValueStore(budget_bytes)
        self.file_notes = FileNotes()  # what the trace file said it dropped (gradviz.load)
        # Indexes for time travel and for showing one iteration without scanning the whole graph:
        self.born = {}  # graph key -> position of the event that added it to the graph
        self.iteration_nodes = {}  # iteration -> keys of its grad_fn nodes, in creation order
        self._made_by = {}  # tensor id -> id of the grad_fn node whose output it is
        self._peers = {}  # peer_signature -> ids of grad_fn nodes made so, in creation order
        self._tensor_rank = {}  # tensor id -> rank of its first description (the order read)
        self._pass_place = {}  # pass index -> its place in passes (the latest with that index)
        self._entered_in = {}  # node id -> places in passes of the passes that ran it
        self._accumulated_in = {}  # tensor id -> places in passes of the passes that gave it .grad
        self._iteration_passes = {}  # iteration -> places in passes of its passes

    # -- building --------------------------------------------------------------------------------
    def apply(self, e):
        self.events.append(e)
        for v in _values_of(e):
            self.values.add(v)
        if type(e) is ev.IterationStarted:
            self._iteration_starts.append(len(self.events) - 1)
            if self.event_budget is not None:
                self._starts.append((len(self.events) - 1, e.index))
                for _ in range(STEPS_PER_ITERATION):  # one iteration a step (gradviz.trace.forget)
                    if len(self.events) - self.forgotten_before <= self.event_budget:
                        break
                    if not forget_step(self, _values_of, slim, peer_signature):
                        break
            if self.detail_events is not None and len(self.events) - self.slim_before > self.detail_events:
                self._slim_older()
        cls = type(e)
        handler = self._handlers.get(cls, _UNKNOWN)
        if handler is _UNKNOWN:  # each event type's handler, found once (unbound: no cycle to self)
            handler = self._handlers[cls] = getattr(type(self), "_on_" + cls.__name__, None)
        if handler is not None:
            handler(self, e)

    def extend(self, events):
        for e in events:
            self.apply(e)

    def _on_SourceText(self, e):
        self.source_texts[(e.file, e.line)] = e.text

    def _slim_older(self):
        """Keep whole summaries for (at least) the latest ``detail_events`` events, from an
        iteration's start: the older ones are made slim, one iteration a step, at most
        ``STEPS_PER_ITERATION`` steps at an iteration's start (no long pause: issue 13, item 13)."""
        starts = self._iteration_starts
        limit = len(self.events) - self.detail_events
        events = self.events
        for _ in range(STEPS_PER_ITERATION):
            i = bisect.bisect_right(starts, self.slim_before)
            if i >= len(starts) or starts[i] > limit:
                break
            end = starts[i]
            for k in range(self.slim_before, end):
                for v in _values_of(events[k]):
                    if v is not None:
                        v.summary = slim(v.summary)
                        if v.array is not None:
                            self.values.discard(v)
            self.slim_before = end
            del starts[:i]

    def slim_iterations(self):
        """The iterations whose values keep slim summaries only (all before this one), or 0."""
        if not self.slim_before:
            return 0
        e = self.events[self.slim_before]
        return e.index if type(e) is ev.IterationStarted else self.iterations

    def _on_IterationStarted(self, e):
        self.iterations = max(self.iterations, e.index + 1)

    def _on_TensorDescribed(self, e):
        if e.id not in self._tensor_rank:
            self._tensor_rank[e.id] = len(self._tensor_rank)
        self.tensors[e.id] = e
        self._described_at[e.id] = len(self.events) - 1
        key = tensor_key(e.id)
        if key in self.graph:
            self.graph.nodes[key].update(label=e.name or key, kind=e.kind, name=e.name, nonfinite=nonfinite(e.value))

    def _on_NodeCreated(self, e):
        self.nodes[e.id] = e
        g = self.graph
        key = node_key(e.id)
        position = len(self.events) - 1
        born = self.born
        born.setdefault(key, position)
        if e.kind == "grad_fn":
            self.iteration_nodes.setdefault(e.iteration, []).append(key)
            self._peers.setdefault(peer_signature(e), []).append(e.id)
            if e.output is not None:
                self._made_by[e.output] = e.id
        g.add_node(key, op=e.op, kind=e.kind, label=e.op, scope=e.scope,
                   source=str(e.source) if e.source else "", shape=tuple(e.output_shape), dtype=e.output_dtype,
                   iteration=e.iteration, nonfinite=nonfinite(e.value))
        for index, nxt in enumerate(e.next_nodes):
            if nxt is not None:
                nk = node_key(nxt)
                born.setdefault(nk, position)
                g.add_edge(key, nk, index=index, grad=True)
        if e.kind == "accumulate_grad" and e.output is not None:
            t = self.tensors.get(e.output)
            born.setdefault(tensor_key(e.output), position)
            g.add_node(tensor_key(e.output), op="", kind=t.kind if t else "leaf", label=(t.name if t else None) or
                       tensor_key(e.output), name=t.name if t else None, scope=e.scope, source="",
                       shape=tuple(e.output_shape), dtype=e.output_dtype, iteration=e.iteration,
                       nonfinite=nonfinite(t.value if t else None))
            g.add_edge(key, tensor_key(e.output), index=0, grad=True)
        # Frozen parameters feed the node but get no gradient: drawn, with an edge that carries none.
        for index, tid in enumerate(e.inputs):
            t = self.tensors.get(tid)
            if e.kind == "grad_fn" and t is not None and t.kind == "frozen":
                tk = tensor_key(tid)
                if tk not in g:
                    born.setdefault(tk, position)
                    g.add_node(tk, op="", kind="frozen", label=t.name or tk, name=t.name, scope="", source="",
                               shape=tuple(t.shape), dtype=t.dtype, iteration=e.iteration,
                               nonfinite=nonfinite(t.value))
                g.add_edge(key, tk, index=index, grad=False)

    def _on_BackwardStarted(self, e):
        self._pass_place[e.pass_index] = len(self.passes)
        _note(self._iteration_passes, e.iteration, len(self.passes))
        self.passes.append(Pass(e.pass_index, e.iteration, tuple(e.roots)))

    def _place(self, index):
        j = self._pass_place.get(index)
        if j is None or j >= len(self.passes) or self.passes[j].index != index:
            for j in range(len(self.passes) - 1, -1, -1):  # a trace in the past: an earlier one
                if self.passes[j].index == index:
                    return j
            raise KeyError(f"no backward pass {index} in this trace")
        return j

    def _pass(self, index):
        return self.passes[self._place(index)]

    def _on_NodeEntered(self, e):
        j = self._place(e.pass_index)
        p = self.passes[j]
        p.order.append(e.node)
        p.grad_outputs[e.node] = e.grad_outputs
        _note(self._entered_in, e.node, j)

    def _on_NodeExited(self, e):
        self._pass(e.pass_index).grad_inputs[e.node] = e.grad_inputs

    def _on_GradAccumulated(self, e):
        j = self._place(e.pass_index)
        self.passes[j].accumulated[e.tensor] = (e.contribution, e.grad)
        _note(self._accumulated_in, e.tensor, j)

    def _on_PassPlanned(self, e):
        self._pass(e.pass_index).planned = tuple(e.nodes)

    def _on_BackwardFinished(self, e):
        self._pass(e.pass_index).finished = True

    def _on_RankInfo(self, e):
        self.rank = e

    def _on_BucketReduced(self, e):
        self._pass(e.pass_index).buckets.append(e)

    def _on_GradSynchronized(self, e):
        self._pass(e.pass_index).synchronized[e.tensor] = e.grad

    def _on_OptimizerStep(self, e):
        self.steps.append(e)

    # -- questions -------------------------------------------------------------------------------
    def source_text(self, file, line):
        """The text of ``file``'s line ``line`` as the recording saw it, or None where the trace does
        not carry it (a trace from before SourceText, or a line whose file could not be read)."""
        return self.source_texts.get((file, line))

    def tensor_by_name(self, name):
        for t in reversed(list(self.tensors.values())):
            if t.name == name:
                return t
        raise KeyError(f"no tensor named {name!r} in this trace")

    def _resolve(self, what):
        """A graph key ('n5', 't3'), a node id (int), or a tensor's name: ('node'|'tensor', id)."""
        if isinstance(what, int):
            return "node", what
        if isinstance(what, str):
            if what[:1] in "nt" and what[1:].isdigit():
                return ("node" if what[0] == "n" else "tensor"), int(what[1:])
            return "tensor", self.tensor_by_name(what).id
        raise TypeError(f"expected a node id, a graph key such as 'n5' or 't3', or a tensor name; got {what!r}")

    def grad(self, what, pass_index=-1):
        """The gradient at a node (its grad_outputs[0], as it entered) or a tensor (its ``.grad``
        after the pass), as a ``Value``; ``pass_index`` -1 is the last pass."""
        if not self.passes:
            raise KeyError("this trace has no backward pass")
        p = self.passes[pass_index] if pass_index < 0 else self._pass(pass_index)
        kind, i = self._resolve(what)
        if kind == "tensor" and isinstance(what, str) and not (what[:1] in "nt" and what[1:].isdigit()):
            # A name: the tensor so named that got a gradient in this pass (a leaf made anew each
            # iteration has one a pass), and never one of several picked silently.
            got = [t.id for t in self.tensors.values() if t.name == what and t.id in p.accumulated]
            if len(got) > 1:
                raise KeyError(f"{what!r} names {len(got)} tensors that received a gradient in backward pass "
                               f"{p.index}: {', '.join(tensor_key(t) for t in got)}; ask for one by its key")
            if got:
                i = got[0]
        if kind == "node":
            if i not in p.grad_outputs:
                raise KeyError(f"node n{i} did not run in backward pass {p.index}")
            return p.grad_outputs[i][0]
        if i not in p.accumulated:
            raise KeyError(f"tensor t{i} received no gradient in backward pass {p.index}")
        return p.accumulated[i][1]

    def grad_history(self, what):
        """A tensor's ``.grad`` after every pass that reached it: [(pass index, Value)]."""
        _, i = self._resolve(what)
        return [(p.index, p.accumulated[i][1]) for p in self.passes if i in p.accumulated]

    def iteration_graph(self, iteration):
        """The subgraph of one iteration: its grad_fn nodes, with the AccumulateGrad nodes and
        tensors they reach."""
        g = self.graph
        keep = {k for k in self.iteration_nodes.get(iteration, ()) if k in g}
        for k in list(keep):
            keep.update(self.graph.successors(k))
        for k in list(keep):
            if g.nodes[k].get("kind") == "accumulate_grad":
                keep.update(g.successors(k))
        return g.subgraph(keep)

    def maker(self, tensor_id):
        """The NodeCreated of the grad_fn node whose forward output ``tensor_id`` is, or None (a
        leaf, or made outside the recording)."""
        nid = self._made_by.get(tensor_id)
        return self.nodes.get(nid) if nid is not None else None

    def last_run(self, node_id):
        """The last backward pass that ran (entered) node ``node_id``, or None."""
        return self._last(self._entered_in, node_id, "grad_outputs")

    def last_accumulated(self, tensor_id):
        """The last backward pass that accumulated a gradient into tensor ``tensor_id``, or None."""
        return self._last(self._accumulated_in, tensor_id, "accumulated")

    def _last(self, index, key, field):
        places = index.get(key)
        if not places:
            return None
        passes = self.passes
        for i in range(bisect.bisect_left(places, len(passes)) - 1, -1, -1):
            p = passes[places[i]]
            if key in getattr(p, field):  # a pass cut by a moment in the past may not have it yet
                return p
        return None

    def last_pass_of(self, iteration):
        """The place in ``passes`` of the last backward pass of ``iteration``, or None (without a
        walk over every pass: an iteration whose forward is running has none yet)."""
        places = self._iteration_passes.get(iteration)
        if not places:
            return None
        i = bisect.bisect_left(places, len(self.passes))  # a trace in the past holds a prefix
        return places[i - 1] if i else None

    def peers(self, node_id):
        """The ids of the grad_fn nodes made by the same op at the same line in the same scope as
        ``node_id`` (its counterparts in every iteration), in creation order."""
        n = self.nodes.get(node_id)
        if n is None:
            return []
        return [m for m in self._peers.get(peer_signature(n), ()) if m in self.nodes]

    # -- diagnosis (gradviz.trace.diagnose) --------------------------------------------------------
    def nan_origin(self, what, pass_index=None):
        """Where the NaN or Inf at ``what`` came from: an ``Origin`` (``diagnose.nan_origin``)."""
        from gradviz.trace.diagnose import nan_origin
        return nan_origin(self, what, pass_index)

    def explosion_origin(self, what, k=None, pass_index=None):
        """The first node on the way to ``what`` that grew its gradient more than ``k`` times per
        element (default ``diagnose.DEFAULT_K``): an ``Origin``."""
        from gradviz.trace.diagnose import DEFAULT_K, explosion_origin
        return explosion_origin(self, what, DEFAULT_K if k is None else k, pass_index)

    def dead_units(self, pass_index=-1):
        """ReLU-like nodes of a pass with the fraction of their gradient that is exactly 0."""
        from gradviz.trace.diagnose import dead_units
        return dead_units(self, pass_index)

    def zero_grad_streaks(self):
        """Per parameter, the iterations since its gradient was last non-zero."""
        from gradviz.trace.diagnose import zero_grad_streaks
        return zero_grad_streaks(self)

    def dropped_lines(self):
        """What this trace lacks and why, in sentences: what its file dropped to stay within the file
        budget, and the arrays dropped to stay within the memory budget (empty when nothing was)."""
        notes = getattr(self, "file_notes", None)  # (a trace in the past shares the live one's values)
        out = notes.lines() if notes is not None else []
        gone = getattr(self, "forgotten_iterations", 0)
        if gone:
            out.append(f"{forgotten_text(gone)} to bound memory: {self.event_budget:,} events kept in detail "
                       f"(their graph, values and per-node gradients are gone; each parameter's gradient norm "
                       f"per iteration is kept)")
        slim_to = self.slim_iterations() if getattr(self, "slim_before", 0) else 0
        if slim_to > gone:
            out.append(f"iterations before {slim_to} keep slim summaries (shape, min, max, norm, NaN and Inf counts; "
                       f"no mean, std, histogram or full array), to bound memory: whole ones for the latest "
                       f"{self.detail_events:,} events")
        v = self.values
        if v.dropped:
            out.append(f"{v.dropped} full arrays ({mib(v.dropped_bytes)}) dropped from memory, oldest first, to "
                       f"stay within the memory budget of {mib(v.budget)}; their summaries are kept")
        return out

    def dropped_brief(self):
        """``dropped_lines`` in a few words, for the status line ("" when nothing was dropped)."""
        notes = getattr(self, "file_notes", None)
        parts = notes.brief() if notes is not None else []
        gone = getattr(self, "forgotten_iterations", 0)
        if gone:
            parts.append(f"iterations {_range(gone)} forgotten (memory bound)")
        slim_to = self.slim_iterations() if getattr(self, "slim_before", 0) else 0
        if slim_to > gone:
            parts.append(f"slim summaries before iteration {slim_to} (memory bound)")
        if self.values.dropped:
            parts.append(f"{self.values.dropped} oldest arrays dropped (memory budget)")
        return ", ".join(parts)

    def node_count(self):
        """The number of nodes in ``graph`` (cheap also for a trace in the past)."""
        return self.graph.number_of_nodes()

    def save(self, path):
        write_trace(path, [e for e in self.events if e is not FORGOTTEN])

    def __repr__(self):
        return (f"<Trace: {len(self.events)} events, {self.graph.number_of_nodes()} graph nodes, "
                f"{len(self.passes)} backward passes, {self.iterations} iterations>")
