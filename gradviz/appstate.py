"""What the app shows, as plain data (no Qt): the trace and its layout, where the debugger stands,
what is selected and what its gradient is. Widgets render an ``AppState``; the tests drive it
without a window."""
from __future__ import annotations

from .layout import layout as compute_layout
from .trace import node_key

_SHORT = "torch::autograd::"


def node_label(data, key):
    """The label a node is drawn with: the op as PyTorch names it (torchviz's short form for
    AccumulateGrad), a leaf's name with its shape."""
    kind = data.get("kind")
    if kind in ("parameter", "leaf", "frozen", "input"):
        shape = tuple(data.get("shape", ()))
        return f"{data.get('name') or key}\n{shape}"
    return (data.get("op") or key).replace(_SHORT, "")


def node_size(label):
    lines = label.split("\n")
    return (max(60.0, 7.2 * max(len(line) for line in lines) + 18.0), 14.0 * len(lines) + 12.0)


class AppState:
    def __init__(self, debugger=None, trace=None):
        self.debugger = debugger
        self.trace = debugger.trace if debugger is not None else trace
        self.layout = None
        self.labels = {}
        self.pause = None
        self.selected = None
        self.iteration = None
        self.graph = None  # the graph shown: the latest iteration's
        self._laid_out = -1

    # -- following the program --------------------------------------------------------------------
    def poll(self):
        """Take in what arrived since the last call; returns the set of things that changed
        (``graph``, ``pause``)."""
        changed = set()
        dbg = self.debugger
        if dbg is not None:
            pause = dbg.poll_pause()
            while pause is not None:
                self.pause = pause
                changed.add("pause")
                pause = dbg.poll_pause()
        lock = dbg.lock if dbg is not None else _NoLock()
        with lock:
            n = self.trace.graph.number_of_nodes()
            if n != self._laid_out:
                self._relayout()
                changed.add("graph")
        return changed

    def _relayout(self):
        """Lay out the graph of the latest iteration: each forward pass builds its own graph, and
        the app shows the one being run (parameters and their AccumulateGrad nodes appear in every
        iteration's graph)."""
        t = self.trace
        iteration = t.iterations - 1
        g = (t.iteration_graph(iteration) if iteration >= 0 else t.graph).copy()
        previous = self.layout if iteration == self.iteration else None
        self.iteration = iteration
        self.graph = g
        self.labels = {k: node_label(d, k) for k, d in g.nodes(data=True)}
        self.layout = compute_layout(g, node_size=lambda k: node_size(self.labels[k]), previous=previous)
        self._laid_out = t.graph.number_of_nodes()

    # -- where the debugger stands ----------------------------------------------------------------
    @property
    def current(self):
        """The graph key of the node the program is paused at, or None."""
        p = self.pause
        return node_key(p.node) if p is not None and p.node is not None else None

    def ran(self):
        """Graph keys of the nodes the current backward pass has run so far."""
        if not self.trace.passes:
            return set()
        order = self.trace.passes[-1].order
        done = [node_key(n) for n in order]
        p = self.pause
        if p is not None and p.phase == "backward" and done and done[-1] == self.current:
            done = done[:-1]  # paused before it: it has not run yet
        return set(done)

    def step_position(self):
        """(k, N): the node about to run is the k-th of the N the pass will run."""
        if not self.trace.passes:
            return None
        ps = self.trace.passes[-1]
        g = self.trace.graph
        reach, stack = set(), [node_key(r) for r in ps.roots]
        while stack:
            k = stack.pop()
            if k in reach or k not in g or g.nodes[k].get("kind") not in ("grad_fn", "accumulate_grad"):
                continue
            reach.add(k)
            stack.extend(g.successors(k))
        return len(ps.order), max(len(reach), len(ps.order))

    def status_text(self):
        p = self.pause
        if p is None:
            if self.debugger is not None:
                return "running"
            t = self.trace
            return (f"recording: {t.iterations} iterations, {len(t.passes)} backward passes, "
                    f"{len(t.events)} events; showing iteration {max(t.iterations - 1, 0)}")
        if p.reason == "exited":
            return f"program exited (status {p.exit_code})" + (f": {p.detail}" if p.detail else "")
        parts = []
        if p.pass_index is not None:
            parts.append(f"pass {p.pass_index}")
            pos = self.step_position()
            if pos is not None and p.phase.startswith("backward"):
                parts.append(f"step {pos[0]} of {pos[1]}")
        where = f" at {p.op.replace(_SHORT, '')}" if p.op else ""
        src = f" ({p.source.file.rsplit('/', 1)[-1]}:{p.source.line})" if p.source else ""
        parts.append(f"paused ({p.reason}){where}{src}")
        if p.detail and p.reason != "step":
            parts.append(p.detail)
        return " · ".join(parts)

    # -- commands ---------------------------------------------------------------------------------
    def _dbg(self, method):
        if self.debugger is not None and self.debugger.state == "paused":
            getattr(self.debugger, method)()
            return True
        return False

    def step(self):
        return self._dbg("step")

    def resume(self):
        return self._dbg("resume")

    def stop(self):
        if self.debugger is not None:
            self.debugger.terminate()

    # -- selection --------------------------------------------------------------------------------
    def select(self, key):
        self.selected = key if key is None or key in self.trace.graph else None

    def selected_value(self):
        """The gradient at the selected node (what flowed into it in the last pass it ran in) or
        at the selected tensor (its .grad), as a Value; the paused node's own grad_outputs if
        nothing is selected."""
        key = self.selected or self.current
        if key is None:
            return None
        try:
            return self.trace.grad(key)
        except KeyError:
            return None


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
