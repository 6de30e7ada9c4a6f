"""What the app shows, as plain data (no Qt): the trace and its layout, where the debugger stands,
what is selected and what its gradient is. Widgets render an ``AppState``; the tests drive it
without a window."""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import nullcontext

from gradviz import events as ev
from gradviz.debug.debugger import DebuggerError
from gradviz.app.graphmodel import MODULE_PREFIX
from gradviz.layout.layered import layout as compute_layout
from gradviz.app.timeline import Timeline
from gradviz.trace.model import node_key

# Graphs up to this many nodes are laid out at once, in the caller's thread (stepping stays
# instant); larger ones in a worker thread, so the window never waits on a layout.
INLINE_LAYOUT_NODES = 400
# Layouts kept for time travel (a drag back and forth lays each graph out once): at most this many,
# holding at most LAYOUT_CACHE_NODES nodes together (each holds its graph: a big model's would weigh).
LAYOUT_CACHE = 64
LAYOUT_CACHE_NODES = 50_000

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
    """``launch``: a callable that starts the program anew under a Debugger, taking
    ``breakpoints=`` and, on a restart, the switches ``break_on_backward=`` and
    ``break_on_forward=`` as the user left them (what Restart calls); or ``debugger``: one already
    started; or ``trace``: a recording."""

    def __init__(self, debugger=None, trace=None, launch=None):
        if launch is not None:
            debugger = launch(breakpoints=())
        self._launch = launch
        self.breakpoints = {}  # breakpoint id -> (spec, label), as the user set them
        self.anomaly_on = False  # the anomaly switch (kept across restarts)
        self.anomaly = None  # its breakpoint's id in the running program
        self.break_on_forward = False
        self._every_node_choice = None  # the Every node switch as the user last set it, if they did
        self.layout_error = None  # why the last layout in the worker thread failed, if it did
        self.message = ""  # what the last command did, for a status line (F9: "Breakpoint set: ...")
        self._attach(debugger, trace)
        from gradviz.app.graphmodel import GraphModel
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
        self._shown_at = None  # the _graph_key() of the graph shown (or being laid out)
        self._job = None  # a layout being computed off this thread: (thread, result box, node count)
        self._layouts = OrderedDict()  # (iteration, node count) -> laid-out result, past moments
        # The console: (stream, text) entries, append-only, taken from the trace's events.
        self._console = []
        self._console_scanned = 0
        self._exception = None  # the traceback shown in the console, once
        self._exception_pause = None  # the pause of the program's exception, if it paused on one
        self._stopped = False  # ended by Stop

    @property
    def lock(self):
        """Held while reading the trace: the debugger's reader thread writes it (a moment in the past
        is a view of the same trace). A no-op for a recording."""
        return self.debugger.lock if self.debugger is not None else nullcontext()

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
        with self.lock:
            if self.selected is not None and not self._selectable(self.selected):
                self.selected = None  # not made yet at that moment
            stale = self._shown_at != self._graph_key()
        if stale:
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
                if pause.reason == "exception":
                    self._exception_pause = pause
                changed.add("pause")
                pause = dbg.poll_pause()
        job = self._job
        if job is not None and not job[0].is_alive():
            self._job = None
            if "error" in job[1]:  # said in the status line; the pauses taken above are not lost
                exc = job[1]["error"]
                self.layout_error = f"{type(exc).__name__}: {exc}"
                return changed
            self._take(job[1]["result"], job[2])
            changed.add("graph")
        with self.lock:
            key = self._graph_key()
            if key != self._shown_at and self._job is None:
                self._shown_at = key
                cached = self._layouts.get(key)
                if cached is not None:
                    self._layouts.move_to_end(key)
                    self._take(cached, key)
                    return changed | {"graph"}
                work = self._layout_work()
                if len(work[1]) <= INLINE_LAYOUT_NODES:
                    self._take(work[0](*work[1:]), key)
                    changed.add("graph")
                else:
                    box = {}
                    thread = threading.Thread(target=_run_into, args=(box, *work), daemon=True,
                                              name="gradviz-layout")
                    self._job = (thread, box, key)
                    thread.start()
        return changed

    def _graph_key(self):
        """What fixes the graph shown: the iteration count and the node count (the trace at any
        moment holds a prefix of the run's nodes)."""
        t = self.trace
        return t.iterations, t.node_count()

    @property
    def laying_out(self):
        """True while a large graph's layout is being computed off the GUI thread."""
        return self._job is not None

    def wait_layout(self, timeout=60.0):  # None: as long as it takes
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

    def _take(self, result, key):
        """Show a laid-out graph, and keep it for a return to the same moment (time travel: a
        graph seen again keeps its place on screen, and is not laid out twice)."""
        self.graph, self.iteration, self.labels, self.layout = result
        self._layouts[key] = result
        while len(self._layouts) > 1 and (len(self._layouts) > LAYOUT_CACHE or
                                          sum(r[0].number_of_nodes() for r in self._layouts.values()) > LAYOUT_CACHE_NODES):
            self._layouts.popitem(last=False)

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
            if not t.passes and not t.steps:  # a drawing (a torchviz DOT), or a forward only
                return f"graph: {t.node_count()} nodes, no backward pass recorded (no gradients to show)"
            return (f"recording: {_count(t.iterations, 'iteration')}, {_count(len(t.passes), 'backward pass')}, "
                    f"{len(t.events)} events; showing iteration {max(t.iterations - 1, 0)}")
        if p.reason == "exited":
            if self._stopped:
                return "program stopped (Stop); Restart (Ctrl+Shift+F5) runs it again"
            # One line: a traceback's last line (the console holds the whole of it).
            last = next((line.strip() for line in reversed((p.detail or "").splitlines()) if line.strip()), "")
            return f"program exited (status {p.exit_code})" + (f": {last}" if last else "")
        parts = []
        if p.pass_index is not None:
            parts.append(f"pass {p.pass_index}")
            pos = self.step_position()
            if pos is not None and p.phase.startswith("backward"):
                parts.append(f"step {pos[0]} of {pos[1]}")
        src = f" ({p.source.file.rsplit('/', 1)[-1]}:{p.source.line})" if p.source else ""
        if p.phase == "forward":  # the forward pass is making the graph: say what it just made
            it = max(self.trace.iterations - 1, 0)
            parts.append(f"iteration {it} forward · made {p.op.replace(_SHORT, '') if p.op else 'a node'}{src}")
            parts.append(f"paused ({p.reason})")
        else:
            where = f" at {p.op.replace(_SHORT, '')}" if p.op else ""
            parts.append(f"paused ({p.reason}){where}{src}")
        if p.detail and p.reason != "step":
            parts.append(p.detail)
        return " · ".join(parts)

    # -- commands ---------------------------------------------------------------------------------
    def _dbg(self, method, *args, **kw):
        """Send a command; False if the program cannot take it (not paused, or gone meanwhile:
        it may die between the check and the send, and the window must not see an exception)."""
        if self.debugger is None or self.debugger.state != "paused":
            return False
        return self._send(method, *args, **kw)

    def _send(self, method, *args, **kw):
        try:
            getattr(self.debugger, method)(*args, **kw)
            return True
        except DebuggerError:
            return False

    def step(self):
        return self._dbg("step")

    def resume(self):
        """Continue: run to the next breakpoint (leaving the pause-at-every-node mode)."""
        if self.debugger is not None and self.debugger.state == "paused" and self.debugger.break_on_backward:
            self._send("configure", break_on_backward=False)
        return self._dbg("resume")

    @property
    def break_on_backward(self):
        return self.debugger is not None and self.debugger.break_on_backward

    def set_break_on_backward(self, on):
        """Backward stepping: pause before every backward node (the user's choice, kept across
        restarts)."""
        self._every_node_choice = bool(on)
        return self._can_command() and self._send("configure", break_on_backward=bool(on))

    def stop(self):
        if self.debugger is not None and self.debugger.state != "exited":
            self._stopped = True
            self.debugger.terminate()

    def interrupt(self):
        """Pause a running program at its next graph operation."""
        dbg = self.debugger
        return dbg is not None and dbg.state == "running" and self._send("interrupt")

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
        # The switches the user set, in place before the program's first line runs. "Every node"
        # turned off only by Continue comes back as the launch had it (a fresh start pauses where
        # the first one did); turned off or on by the user, it stays as they left it.
        switches = {"break_on_forward": self.break_on_forward}
        if self._every_node_choice is not None:
            switches["break_on_backward"] = self._every_node_choice
        dbg = self._launch(breakpoints=specs, **switches)
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

    def breakpoint_for(self, key, line=False):
        """The breakpoint F9 sets on a graph node: for a backward node, that node in every
        iteration (a ``peer`` breakpoint: where a node id is one iteration's), or with ``line`` a
        line breakpoint at the code that made it (every backward node of that line); the node
        itself when no line is known; for a leaf or its AccumulateGrad, a breakpoint on its
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
            if src is None:
                return {"node": int(key[1:])}, f"{op} ({key})"
            if not line:
                # This node in every iteration: the rank-th node of its op, scope and line (a
                # model's whole forward is often one line; a node id holds for one iteration only).
                alike = [m for m in self.trace.peers(node.id) if self.trace.nodes[m].iteration == node.iteration]
                rank = alike.index(node.id)
                where = f" in {node.scope}" if node.scope else ""
                nth = f" · {rank + 1} of {len(alike)} alike" if len(alike) > 1 else ""
                return ({"peer": {"op": node.op, "scope": node.scope, "source": f"{src.file}:{src.line}",
                                  "rank": rank}},
                        f"{op}{where} · {src.file.rsplit('/', 1)[-1]}:{src.line}{nth}, every iteration")
            # A line breakpoint stops at every backward node that line made: the label names them.
            line = f"line {src.file.rsplit('/', 1)[-1]}:{src.line}"
            same = f"{src.file}:{src.line}"  # what the child matches: any function on that line
            shown = self.graph if self.graph is not None and key in self.graph else g
            ops = [(dd.get("op") or k).replace(_SHORT, "") for k, dd in shown.nodes(data=True)
                   if dd.get("kind") == "grad_fn" and (dd.get("source") or "").split(" in ")[0] == same]
            if len(ops) <= 1:
                return {"source": f"{src.file}:{src.line}"}, f"{op} · {line}"
            names = ", ".join(sorted(set(ops), key=ops.index))
            return {"source": f"{src.file}:{src.line}"}, f"{line} · {len(ops)} backward nodes: {names}"
        if kind == "accumulate_grad":
            leaf = next(iter(g.successors(key)), None)
            key = leaf if leaf is not None else key
            d = g.nodes[key]
        if key.startswith("t"):
            name = d.get("name")
            return {"tensor": name or int(key[1:])}, f"{name or key}.grad accumulated"
        return None

    def toggle_breakpoint(self, key=None, line=False):
        """F9: set the breakpoint for ``key`` (default: the selection, else the paused node), or
        remove it if set: for a backward node, that node in every iteration; with ``line``, every
        backward node its line made. Returns True if one is now set; ``message`` says what
        happened."""
        key = key or self.selected or self.current
        if key is not None and key.startswith(MODULE_PREFIX):
            self.message = "A module box has no breakpoint: double-click it to expand, then F9 on a node"
            return False
        with self.lock:
            found = self.breakpoint_for(key, line)
        if found is None:
            self.message = "Select a node to set a breakpoint on (F9)"
            return False
        if not self._can_command():
            self.message = "The program has ended: Restart (Ctrl+Shift+F5) to set breakpoints"
            return False
        spec, label = found
        for bid, (have, had) in list(self.breakpoints.items()):
            if have == spec:
                self.remove_breakpoint(bid)
                self.message = f"Breakpoint removed: {had}"
                return False
        try:
            bid = self.debugger.add_breakpoint(**spec)
        except DebuggerError as exc:
            self.message = f"Breakpoint not set: {exc}"
            return False
        self.breakpoints[bid] = (spec, label)
        self.message = f"Breakpoint set: {label}"
        return True

    def remove_breakpoint(self, bid):
        self.breakpoints.pop(bid, None)
        if self._can_command() and bid in self.debugger.breakpoints:
            self._send("remove_breakpoint", bid)

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
            try:
                self.anomaly = self.debugger.add_breakpoint(anomaly=True)
            except DebuggerError:
                return False
        elif not on and self.anomaly is not None:
            bid, self.anomaly = self.anomaly, None
            if bid in self.debugger.breakpoints:
                return self._send("remove_breakpoint", bid)
        return True

    def set_break_on_forward(self, on):
        """Forward stepping: pause as each op is made, to watch the graph grow."""
        self.break_on_forward = bool(on)
        return self._can_command() and self._send("configure", break_on_forward=self.break_on_forward)

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
        """The program's stdout and stderr as (stream, text) in order and, where it raised, the
        traceback with the backward node it was in (stream ``exception``), once. Append-only (a
        window shows what is past its last length); each call reads only the new events."""
        with self.lock:
            events = self.live_trace.events  # all of it, also while showing the past
            exited = None
            for i in range(self._console_scanned, len(events)):
                e = events[i]
                t = type(e)
                if t is ev.ProgramOutput:
                    self._console.append((e.stream, e.text))
                elif t is ev.ProgramExited and e.error:
                    exited = e
            self._console_scanned = len(events)
        p = self._exception_pause
        tb = p.traceback if p is not None else None
        if not tb and exited is not None:
            tb = exited.error
        if tb and tb != self._exception:
            self._exception = tb
            where = ""
            if p is not None and p.op:
                src = f", made at {p.source.file}:{p.source.line}" if p.source else ""
                where = f"in backward node {p.op.replace(_SHORT, '')} ({node_key(p.node)}){src}\n"
            self._console.append(("exception", where + tb))
        return self._console

    # -- selection --------------------------------------------------------------------------------
    def _selectable(self, key):
        """A node of the trace shown, or a collapsed module's box."""
        if key.startswith(MODULE_PREFIX):
            return key[len(MODULE_PREFIX):] in self.graph_model.collapsed
        return key in self.trace.graph

    def select(self, key):
        with self.lock:
            self.selected = key if key is None or self._selectable(key) else None

    def selected_value(self):
        """The gradient at the selected node (what flowed into it in the last pass it ran in) or
        at the selected tensor (its .grad), as a Value; the paused node's own grad_outputs if
        nothing is selected."""
        key = self.selected or self.current
        if key is None:
            return None
        from gradviz.app.plots import latest_grad
        return latest_grad(self.trace, key)


def _count(n, what):
    return f"{n} {what}" + ("" if n == 1 else "es" if what.endswith("s") else "s")


def _compute(g, iteration, previous):
    labels = {k: node_label(d, k) for k, d in g.nodes(data=True)}
    lay = compute_layout(g, node_size=lambda k: node_size(labels[k]), previous=previous)
    return g, iteration, labels, lay


def _run_into(box, fn, *args):
    try:
        box["result"] = fn(*args)
    except BaseException as exc:  # handed to the GUI thread, raised there
        box["error"] = exc
