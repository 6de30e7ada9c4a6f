"""``Trace``: what a recording holds, built event by event. The events in order; the backward graph
as a networkx DiGraph; each backward pass with its nodes in execution order and the gradients it
carried; value summaries always, full arrays within a memory budget (oldest dropped first)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from . import events as ev

DEFAULT_BUDGET = 512 * 2**20


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
    finished: bool = False


class ValueStore:
    """Keeps full arrays while their bytes fit the budget, dropping the oldest first."""

    def __init__(self, budget_bytes=DEFAULT_BUDGET):
        if budget_bytes < 0:
            raise ValueError(f"memory budget must be >= 0 bytes, got {budget_bytes}")
        self.budget = budget_bytes
        self.stored_bytes = 0
        self.peak_bytes = 0
        self._kept = OrderedDict()

    def add(self, value):
        if value is None or value.array is None or id(value) in self._kept:
            return
        self._kept[id(value)] = value
        self.stored_bytes += value.array.nbytes
        while self.stored_bytes > self.budget:
            _, old = self._kept.popitem(last=False)
            self.stored_bytes -= old.array.nbytes
            old.array = None
        self.peak_bytes = max(self.peak_bytes, self.stored_bytes)


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
    if t in (ev.NodeCreated, ev.TensorDescribed):
        return (e.value,)
    return ()


class Trace:
    def __init__(self, budget_bytes=DEFAULT_BUDGET):
        import networkx as nx
        self.events = []
        self.graph = nx.DiGraph()
        self.nodes = {}  # node id -> NodeCreated
        self.tensors = {}  # tensor id -> its latest TensorDescribed
        self.passes = []
        self.steps = []  # OptimizerStep events
        self.iterations = 0
        self.values = ValueStore(budget_bytes)
        self._frozen_pending = {}

    # -- building --------------------------------------------------------------------------------
    def apply(self, e):
        self.events.append(e)
        for v in _values_of(e):
            self.values.add(v)
        handler = getattr(self, "_on_" + type(e).__name__, None)
        if handler is not None:
            handler(e)

    def extend(self, events):
        for e in events:
            self.apply(e)

    def _on_IterationStarted(self, e):
        self.iterations = max(self.iterations, e.index + 1)

    def _on_TensorDescribed(self, e):
        self.tensors[e.id] = e
        key = tensor_key(e.id)
        if key in self.graph:
            self.graph.nodes[key].update(label=e.name or key, kind=e.kind, name=e.name)

    def _on_NodeCreated(self, e):
        self.nodes[e.id] = e
        g = self.graph
        key = node_key(e.id)
        g.add_node(key, op=e.op, kind=e.kind, label=e.op, scope=e.scope,
                   source=str(e.source) if e.source else "", shape=tuple(e.output_shape), dtype=e.output_dtype,
                   iteration=e.iteration)
        for index, nxt in enumerate(e.next_nodes):
            if nxt is not None:
                g.add_edge(key, node_key(nxt), index=index, grad=True)
        if e.kind == "accumulate_grad" and e.output is not None:
            t = self.tensors.get(e.output)
            g.add_node(tensor_key(e.output), op="", kind=t.kind if t else "leaf", label=(t.name if t else None) or
                       tensor_key(e.output), name=t.name if t else None, scope=e.scope, source="",
                       shape=tuple(e.output_shape), dtype=e.output_dtype, iteration=e.iteration)
            g.add_edge(key, tensor_key(e.output), index=0, grad=True)
        # Frozen parameters feed the node but get no gradient: drawn, with an edge that carries none.
        for index, tid in enumerate(e.inputs):
            t = self.tensors.get(tid)
            if e.kind == "grad_fn" and t is not None and t.kind == "frozen":
                tk = tensor_key(tid)
                if tk not in g:
                    g.add_node(tk, op="", kind="frozen", label=t.name or tk, name=t.name, scope="", source="",
                               shape=tuple(t.shape), dtype=t.dtype, iteration=e.iteration)
                g.add_edge(key, tk, index=index, grad=False)

    def _on_BackwardStarted(self, e):
        self.passes.append(Pass(e.pass_index, e.iteration, tuple(e.roots)))

    def _pass(self, index):
        for p in reversed(self.passes):
            if p.index == index:
                return p
        raise KeyError(f"no backward pass {index} in this trace")

    def _on_NodeEntered(self, e):
        p = self._pass(e.pass_index)
        p.order.append(e.node)
        p.grad_outputs[e.node] = e.grad_outputs

    def _on_NodeExited(self, e):
        self._pass(e.pass_index).grad_inputs[e.node] = e.grad_inputs

    def _on_GradAccumulated(self, e):
        self._pass(e.pass_index).accumulated[e.tensor] = (e.contribution, e.grad)

    def _on_BackwardFinished(self, e):
        self._pass(e.pass_index).finished = True

    def _on_OptimizerStep(self, e):
        self.steps.append(e)

    # -- questions -------------------------------------------------------------------------------
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
        keep = {k for k, d in self.graph.nodes(data=True) if d.get("kind") == "grad_fn" and d.get("iteration") == iteration}
        for k in list(keep):
            keep.update(self.graph.successors(k))
        for k in list(keep):
            if self.graph.nodes[k].get("kind") == "accumulate_grad":
                keep.update(self.graph.successors(k))
        return self.graph.subgraph(keep)

    def save(self, path):
        from .tracefile import write_trace
        write_trace(path, self.events)

    def __repr__(self):
        return (f"<Trace: {len(self.events)} events, {self.graph.number_of_nodes()} graph nodes, "
                f"{len(self.passes)} backward passes, {self.iterations} iterations>")
