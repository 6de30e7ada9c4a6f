"""What the app shows, as plain data (no Qt): the trace and its layout, where the debugger stands,
what is selected and what its gradient is. Widgets render an ``AppState``; the tests drive it
without a window."""
from __future__ import annotations

import threading
from contextlib import nullcontext

from . import events as ev
from .debugger import DebuggerError
from .layout import layout as compute_layout
from .timeline import Timeline
from .trace import node_key

# Graphs up to this many nodes are laid out at once, in the caller's thread (stepping stays
# instant); larger ones in a worker thread, so the window never waits on a layout.
INLINE_LAYOUT_NODES = 400

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
    """``launch``: a callable that starts the program anew under a Debugger (what Restart calls);
    or ``debugger``: one already started; or ``trace``: a recording."""

    def __init__(self, debugger=None, trace=None, launch=None):
        if launch is not None:
            debugger = launch(breakpoints=())
        self._launch = launch
        self.breakpoints = {}  # breakpoint id -> (spec, label), as the user set them
        self.anomaly_on = False  # the anomaly switch (kept across restarts)
        self.anomaly = None  # its breakpoint's id in the running program
        self.break_on_forward = False
        self._attach(debugger, trace)
        from .graphmodel import GraphModel
        self.graph_model = GraphModel(self)  # collapsed modules and search: the graph view's state

    def _attach(self, debugger, trace):
        self.debugger = debugger
        self.live_trace = debugger.trace if debugger is not None else trace
        self.timeline = Timeline(self.live_trace) if self.live_trace is not None else None
        self.time = None  # None: the live program; k: the moment after its first k events
        self.layout = None
        self.labels = {}
        self.live_pause = None
        self.selected = None
        self.iteration = None
        self.graph = None  # the graph shown: the latest iteration's
        self._laid_out = -1
        self._job = None  # a layout being computed off this thread: (thread, result box, node count)

    # -- the moment shown: live, or the past (time travel) --------------------------------------------
    @property
    def trace(self):
        """The trace as shown: the live one, or as it was after ``time`` events."""
        return self.live_trace if self.time is None else self.timeline.trace_at(self.time)

    @property
    def pause(self):
        """Where the debugger stands, or stood at ``time`` (a Pause with reason ``history``)."""
        return self.live_pause if self.time is None else self.timeline.pause_at(self.time)

    def set_time(self, k):
        """Show the moment after ``k`` events (clamped to the timeline), or the live program for
        None. Returns what changed, as ``poll()`` does (``time``, ``pause``, ``graph``)."""
        if k is not None:
            k = max(0, min(int(k), len(self.timeline)))
        if k == self.time:
            return set()
        self.time = k
        changed = {"time", "pause"}
        if self.selected is not None and self.selected not in self.trace.graph:
            self.selected = None  # not made yet at that moment
        with self.debugger.lock if self.debugger is not None and k is None else nullcontext():
            n = self.trace.graph.number_of_nodes()
        if n != self._laid_out:
            changed |= self.poll()
        return changed

    # -- following the program --------------------------------------------------------------------
    def poll(self):
        """Take in what arrived since the last call; returns the set of things that changed
        (``graph``, ``pause``)."""
        changed = set()
        dbg = self.debugger
        if dbg is not None:
            pause = dbg.poll_pause()
            while pause is not None:
                self.live_pause = pause
                changed.add("pause")
                pause = dbg.poll_pause()
        job = self._job
        if job is not None and not job[0].is_alive():
            self._job = None
            if "error" in job[1]:
                raise job[1]["error"]
            self._take(job[1]["result"])
            changed.add("graph")
        lock = dbg.lock if dbg is not None else nullcontext()
        with lock:
            n = self.trace.graph.number_of_nodes()
            if n != self._laid_out and self._job is None:
                work = self._layout_work()
                self._laid_out = n
                if len(work[1]) <= INLINE_LAYOUT_NODES:
                    self._take(work[0](*work[1:]))
                    changed.add("graph")
                else:
                    box = {}
                    thread = threading.Thread(target=_run_into, args=(box, *work), daemon=True,
                                              name="gradviz-layout")
                    self._job = (thread, box)
                    thread.start()
        return changed

    @property
    def laying_out(self):
        """True while a large graph's layout is being computed off the GUI thread."""
        return self._job is not None

    def wait_layout(self, timeout=60.0):
        """Block until a layout running off-thread is done and taken in (for scripts and tests)."""
        if self._job is not None:
            self._job[0].join(timeout)
        return self.poll()

    def _layout_work(self):
        """What laying out the latest iteration's graph takes, copied under the trace's lock: each
        forward pass builds its own graph, and the app shows the one being run (parameters and
        their AccumulateGrad nodes appear in every iteration's graph)."""
        t = self.trace
        iteration = t.iterations - 1
        g = (t.iteration_graph(iteration) if iteration >= 0 else t.graph).copy()
        previous = self.layout if iteration == self.iteration else None
        return _compute, g, iteration, previous

    def _take(self, result):
        self.graph, self.iteration, self.labels, self.layout = result

    # -- where the debugger stands ----------------------------------------------------------------
    @property
    def current(self):
        """The graph key of the node the program is paused at, or None."""
        p = self.pause
        return node_key(p.node) if p is not None and p.node is not None else None

    def ran(self):
        """Graph keys of the nodes the current backward pass has run so far: none while a new
        iteration's forward runs (its AccumulateGrad nodes are the last iteration's too)."""
        t = self.trace
        if not t.passes or t.passes[-1].iteration != t.iterations - 1:
            return set()
        order = t.passes[-1].order
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
        if self.time is not None:
            parts = [f"time travel: event {self.time} of {len(self.timeline)}"]
            pos = self.step_position()
            if p.pass_index is not None and p.phase.startswith("backward") and pos is not None:
                parts.append(f"pass {p.pass_index} step {pos[0]} of {pos[1]}")
            return " · ".join(parts + [p.detail])
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
        """Continue: run to the next breakpoint (leaving the pause-at-every-node mode)."""
        if self.debugger is not None and self.debugger.state == "paused" and self.debugger.break_on_backward:
            self.debugger.configure(break_on_backward=False)
        return self._dbg("resume")

    @property
    def break_on_backward(self):
        return self.debugger is not None and self.debugger.break_on_backward

    def set_break_on_backward(self, on):
        """Backward stepping: pause before every backward node."""
        if self._can_command():
            self.debugger.configure(break_on_backward=bool(on))
            return True
        return False

    def stop(self):
        if self.debugger is not None:
            self.debugger.terminate()

    def interrupt(self):
        """Pause a running program at its next graph operation."""
        dbg = self.debugger
        if dbg is not None and dbg.state == "running":
            dbg.interrupt()
            return True
        return False

    @property
    def can_restart(self):
        return self._launch is not None

    def restart(self):
        """End the program and start it again, with the same breakpoints and switches."""
        if self._launch is None:
            return False
        if self.debugger is not None:
            self.debugger.close()
        specs = [spec for spec, _ in self.breakpoints.values()]
        if self.anomaly_on:
            specs.append({"anomaly": True})
        dbg = self._launch(breakpoints=specs)
        if self.break_on_forward:
            dbg.configure(break_on_forward=True)
        old = {bid: label for bid, (_, label) in self.breakpoints.items()}
        self._attach(dbg, None)
        # The new debugger numbered the breakpoints afresh, in the order given.
        ids = sorted(dbg.breakpoints)
        self.breakpoints = {new: (dict(specs[i]), list(old.values())[i]) for i, new in enumerate(ids[:len(old)])}
        self.anomaly = ids[len(old)] if self.anomaly_on and len(ids) > len(old) else None
        return True

    def close(self):
        if self.debugger is not None:
            self.debugger.close()

    # -- breakpoints and switches -----------------------------------------------------------------
    def _can_command(self):
        return self.debugger is not None and self.debugger.state in ("running", "paused")

    def breakpoint_for(self, key):
        """The breakpoint F9 sets on a graph node: a line breakpoint at the code that made a
        backward node (it holds in every iteration, where a node is one iteration's), the node
        itself when no line is known, and for a leaf or its AccumulateGrad a breakpoint on its
        gradient being accumulated. Returns (spec, label) or None."""
        g = self.trace.graph
        if key is None or key not in g:
            return None
        d = g.nodes[key]
        kind = d.get("kind")
        if kind == "grad_fn":
            op = (d.get("op") or key).replace(_SHORT, "")
            node = self.trace.nodes.get(int(key[1:]))
            src = node.source if node is not None else None
            if src is not None:
                return {"source": f"{src.file}:{src.line}"}, f"{op} · line {src.file.rsplit('/', 1)[-1]}:{src.line}"
            return {"node": int(key[1:])}, f"{op} ({key})"
        if kind == "accumulate_grad":
            leaf = next(iter(g.successors(key)), None)
            key = leaf if leaf is not None else key
            d = g.nodes[key]
        if key.startswith("t"):
            name = d.get("name")
            return {"tensor": name or int(key[1:])}, f"{name or key}.grad accumulated"
        return None

    def toggle_breakpoint(self, key=None):
        """F9: set the breakpoint for ``key`` (default: the selection, else the paused node), or
        remove it if set. Returns True if one is now set."""
        found = self.breakpoint_for(key or self.selected or self.current)
        if found is None or not self._can_command():
            return False
        spec, label = found
        for bid, (have, _) in list(self.breakpoints.items()):
            if have == spec:
                self.remove_breakpoint(bid)
                return False
        bid = self.debugger.add_breakpoint(**spec)
        self.breakpoints[bid] = (spec, label)
        return True

    def remove_breakpoint(self, bid):
        self.breakpoints.pop(bid, None)
        if self._can_command() and bid in self.debugger.breakpoints:
            self.debugger.remove_breakpoint(bid)

    def breakpoint_rows(self):
        """(id, label) of every breakpoint, for the list."""
        rows = [(bid, label) for bid, (_, label) in sorted(self.breakpoints.items())]
        if self.anomaly is not None:
            rows.append((self.anomaly, "anomaly: NaN or Inf anywhere"))
        return rows

    def set_anomaly(self, on):
        """The anomaly switch: pause where a NaN or Inf first appears, forward or backward. Kept
        for the next restart when the program has ended; returns whether the program has it now."""
        self.anomaly_on = bool(on)
        if not self._can_command():
            return False
        if on and self.anomaly is None:
            self.anomaly = self.debugger.add_breakpoint(anomaly=True)
        elif not on and self.anomaly is not None:
            bid, self.anomaly = self.anomaly, None
            if bid in self.debugger.breakpoints:
                self.debugger.remove_breakpoint(bid)
        return True

    def set_break_on_forward(self, on):
        """Forward stepping: pause as each op is made, to watch the graph grow."""
        self.break_on_forward = bool(on)
        if self._can_command():
            self.debugger.configure(break_on_forward=self.break_on_forward)
            return True
        return False

    def saved_tensors(self):
        """What the node the program is paused at saved for its backward, as [(name, array)],
        fetched once per pause from the live program; [] when not paused inside a backward node."""
        p = self.pause
        dbg = self.debugger
        if p is None or self.time is not None or dbg is None or dbg.state != "paused" or \
                p.phase != "backward" or p.node is None:
            return []
        cached = getattr(self, "_saved", None)
        if cached is None or cached[0] is not p:
            try:
                items = dbg.saved_tensors(timeout=5.0)
            except (KeyError, DebuggerError, TimeoutError):
                items = []
            self._saved = cached = (p, items)
        return cached[1]

    # -- the program's output ---------------------------------------------------------------------
    def console(self):
        """The program's stdout and stderr as (stream, text) in order, then, if it raised, the
        traceback and the node it was in (stream ``exception``)."""
        with self.debugger.lock if self.debugger is not None else nullcontext():
            events = self.live_trace.events  # all of it, also while showing the past
            out = [(e.stream, e.text) for e in events if type(e) is ev.ProgramOutput]
            exited = next((e for e in reversed(events) if type(e) is ev.ProgramExited), None)
        p = self.live_pause
        tb = p.traceback if p is not None and p.reason == "exception" else (exited.error if exited else None)
        if tb:
            where = ""
            if p is not None and p.reason == "exception" and p.op:
                src = f", made at {p.source.file}:{p.source.line}" if p.source else ""
                where = f"in backward node {p.op.replace(_SHORT, '')} ({node_key(p.node)}){src}\n"
            out.append(("exception", where + tb))
        return out

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
        from .plots import latest_grad
        return latest_grad(self.trace, key)


def _compute(g, iteration, previous):
    labels = {k: node_label(d, k) for k, d in g.nodes(data=True)}
    lay = compute_layout(g, node_size=lambda k: node_size(labels[k]), previous=previous)
    return g, iteration, labels, lay


def _run_into(box, fn, *args):
    try:
        box["result"] = fn(*args)
    except BaseException as exc:  # handed to the GUI thread, raised there
        box["error"] = exc
