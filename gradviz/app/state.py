"""What the app shows, as plain data (no Qt): the trace and its layout, where the debugger stands,
what is selected and what its gradient is. Widgets render an ``AppState``; the tests drive it
without a window. Its parts live beside it: the layouts (``layouts``), the breakpoint book
(``breakpoints``), the status line (``status``), the console (``console``) and node labels (``labels``)."""
from __future__ import annotations

import gc
from contextlib import nullcontext

from gradviz.app.breakpoints import BreakpointBook, breakpoint_for
from gradviz.app.checks import Checks
from gradviz.app.console import Console
from gradviz.app.diagnosis import Diagnosis
from gradviz.app.follow import Follow
from gradviz.app.graphmodel import MODULE_PREFIX, GraphModel
from gradviz.app.layouts import LaidOut, LayoutScheduler
from gradviz.app.plots import latest_grad
from gradviz.app.status import status_text
from gradviz.app.timeline import Timeline
from gradviz.debug.debugger import DebuggerError
from gradviz.trace.model import node_key


FREEZE_EVERY = 10_000  # events


class AppState:
    """``launch``: a callable that starts the program anew under a Debugger, taking
    ``breakpoints=`` and, on a restart, the switches ``break_on_backward=`` and
    ``break_on_forward=`` as the user left them (what Restart calls); or ``debugger``: one already
    started; or ``trace``: a recording."""

    def __init__(self, debugger=None, trace=None, launch=None):
        if launch is not None:
            debugger = launch(breakpoints=())
        self._launch = launch
        self.book = BreakpointBook()  # the breakpoints and the anomaly switch, as the user set them
        self.break_on_forward = False
        self._every_node_choice = None  # the Every node switch as the user last set it, if they did
        self.layout_error = None  # why the last layout in the worker thread failed, if it did
        self.message = ""  # what the last command did, for a status line (F9: "Breakpoint set: ...")
        self._attach(debugger, trace)
        if launch is None and getattr(debugger, "link_status", ""):  # attached: what the program already has
            self.book.adopt(debugger.breakpoints.values())
        self.graph_model = GraphModel(self)  # collapsed modules and search: the graph view's state
        self.diagnosis = Diagnosis(self)  # a NaN's origin traced, dead units: drawn over the graph
        self.follow = Follow()  # the view follows the paused node until the user moves it
        self.checks = Checks(self)  # gradient checks: Check, Check every node of this pass

    def _attach(self, debugger, trace):
        self.debugger = debugger
        self.live_trace = debugger.trace if debugger is not None else trace
        self._frozen_at = 0  # the trace's event count when its objects were last frozen (see poll)
        self.timeline = Timeline(self.live_trace) if self.live_trace is not None else None
        self.time = None  # None: the live program; k: the moment after its first k events
        self.layout = None
        self.labels = {}
        self.live_pause = None
        self.selected = None
        self.iteration = None
        self.graph = None  # the graph shown: the latest iteration's
        self._shown_at = None  # the _graph_key() of the graph shown (or being laid out)
        self.layouts = LayoutScheduler()  # keyed by _graph_key(): past moments' layouts are kept
        self._console = Console()
        self._exception_pause = None  # the pause of the program's exception, if it paused on one
        self.stopped = False  # ended by Stop

    # -- the breakpoint book, as the window and the tests read it -------------------------------------
    @property
    def breakpoints(self):
        """breakpoint id -> (Breakpoint, label), as the user set them."""
        return self.book.entries

    @property
    def anomaly_on(self):
        return self.book.anomaly_on

    @property
    def anomaly(self):
        return self.book.anomaly

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
        """Show the moment after ``k`` events (clamped to the timeline and to its kept iterations,
        ``message`` saying so), or the live program for None. Returns what changed, as ``poll()``
        does (``time``, ``pause``, ``graph``)."""
        if k is not None:
            k = max(0, min(int(k), len(self.timeline)))
            if k < self.timeline.first():  # a forgotten iteration (Trace.event_budget): its first kept moment
                self.message = self.timeline.forgotten_message()
                k = self.timeline.first()
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
    def _freeze_history(self, trace):
        """A long run's trace is millions of objects that live as long as the window: every
        FREEZE_EVERY events they are moved out of the garbage collector's sight (gc.freeze), so a
        full collection walks only what came since (1.5 s pauses at 300k events without)."""
        n = len(trace.events)
        if n < self._frozen_at:  # a restart: a new trace
            self._frozen_at = 0
        if n - self._frozen_at >= FREEZE_EVERY:
            gc.freeze()
            self._frozen_at = n

    def poll(self):
        """Take in what arrived since the last call; returns the set of things that changed
        (``graph``, ``pause``)."""
        changed = set()
        dbg = self.debugger
        if dbg is not None:
            self._freeze_history(dbg.trace)
            pause = dbg.poll_pause()
            while pause is not None:
                self.live_pause = pause
                if pause.reason == "exception":
                    self._exception_pause = pause
                changed.add("pause")
                pause = dbg.poll_pause()
            if self.checks.poll():
                changed.add("checks")
        try:
            finished = self.layouts.take_finished()
        except BaseException as exc:  # said in the status line; the pauses taken above are not lost
            self.layout_error = f"{type(exc).__name__}: {exc}"
            return changed
        if finished is not None:
            self._show(finished[1])
            changed.add("graph")
        with self.lock:
            key = self._graph_key()
            if key != self._shown_at and not self.layouts.laying_out:
                self._shown_at = key
                if self.selected is not None and not self._selectable(self.selected):
                    self.selected = None  # forgotten (Trace.event_budget)
                cached = self.layouts.lookup(key)
                if cached is not None:
                    self._show(cached)
                    return changed | {"graph"}
                laid_out = self.layouts.run(key, *self._layout_work())
                if laid_out is not None:
                    self._show(laid_out)
                    changed.add("graph")
        return changed

    def _graph_key(self):
        """What fixes the graph shown: the iteration count and the node count (the trace at any
        moment holds a prefix of the run's nodes)."""
        t = self.trace
        return t.iterations, t.node_count()

    @property
    def laying_out(self):
        """True while a large graph's layout is being computed off the GUI thread."""
        return self.layouts.laying_out

    def wait_layout(self, timeout=60.0):  # None: as long as it takes
        """Block until a layout running off-thread is done and taken in (for scripts and tests)."""
        self.layouts.wait(timeout)
        return self.poll()

    def _layout_work(self):
        """What laying out the latest iteration's graph takes, copied under the trace's lock: each
        forward pass builds its own graph, and the app shows the one being run (parameters and
        their AccumulateGrad nodes appear in every iteration's graph)."""
        t = self.trace
        iteration = t.iterations - 1
        g = (t.iteration_graph(iteration) if iteration >= 0 else t.graph).copy()
        previous = self.layout if iteration == self.iteration else None
        return g, iteration, previous

    def _show(self, laid_out: LaidOut):
        """Show a laid-out graph (kept by the scheduler for a return to the same moment: a graph
        seen again keeps its place on screen, and is not laid out twice)."""
        self.graph, self.iteration, self.labels, self.layout = laid_out

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
        if ps.planned is not None:  # autograd.grad, backward(inputs=...): only the way to the inputs
            reach &= {node_key(n) for n in ps.planned}
        return len(ps.order), max(len(reach), len(ps.order))

    def status_text(self):
        return status_text(self)

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
            self.stopped = True
            self.debugger.terminate()

    def interrupt(self):
        """Pause a running program at its next graph operation."""
        dbg = self.debugger
        return dbg is not None and dbg.state == "running" and self._send("interrupt")

    @property
    def can_restart(self):
        """Whether Restart can start the program again: not one attached to (gradviz attach)."""
        return self._launch is not None

    def restart(self):
        """End the program and start it again, with the same breakpoints and switches."""
        if self._launch is None:
            return False
        if self.debugger is not None:
            self.debugger.close()
        bps = self.book.breakpoints()
        # The switches the user set, in place before the program's first line runs. "Every node"
        # turned off only by Continue comes back as the launch had it (a fresh start pauses where
        # the first one did); turned off or on by the user, it stays as they left it.
        switches = {"break_on_forward": self.break_on_forward}
        if self._every_node_choice is not None:
            switches["break_on_backward"] = self._every_node_choice
        dbg = self._launch(breakpoints=bps, **switches)
        self._attach(dbg, None)
        self.book.renumber(list(dbg.breakpoints))  # the new debugger numbered them afresh, in order
        return True

    def open_trace(self, trace):
        """Show another recording in place of this one (another rank of the same job), keeping
        the collapsed modules and the breakpoint book; a program being debugged is not replaced."""
        if self.debugger is not None:
            raise RuntimeError("a program is being debugged: its trace cannot be replaced")
        self._attach(None, trace)

    def close(self):
        if self.debugger is not None:
            self.debugger.close()

    # -- breakpoints and switches -----------------------------------------------------------------
    def _can_command(self):
        return self.debugger is not None and self.debugger.state in ("running", "paused")

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
            found = breakpoint_for(self.trace, self.graph, key, line)
        if found is None:
            self.message = "Select a node to set a breakpoint on (F9)"
            return False
        if not self._can_command():
            self.message = "The program has ended: Restart (Ctrl+Shift+F5) to set breakpoints"
            return False
        bp, label = found
        have = self.book.find(bp)
        if have is not None:
            self.remove_breakpoint(have[0])
            self.message = f"Breakpoint removed: {have[1]}"
            return False
        try:
            bid = self.debugger.add(bp)
        except DebuggerError as exc:
            self.message = f"Breakpoint not set: {exc}"
            return False
        self.book.entries[bid] = (bp.with_id(bid), label)
        self.message = f"Breakpoint set: {label}"
        return True

    def remove_breakpoint(self, bid):
        self.book.entries.pop(bid, None)
        if self._can_command() and bid in self.debugger.breakpoints:
            self._send("remove_breakpoint", bid)

    def breakpoint_rows(self):
        """(id, label) of every breakpoint, for the list."""
        return self.book.rows()

    def set_anomaly(self, on):
        """The anomaly switch: pause where a NaN or Inf first appears, forward or backward. Kept
        for the next restart when the program has ended; returns whether the program has it now."""
        book = self.book
        book.anomaly_on = bool(on)
        if not self._can_command():
            return False
        if on and book.anomaly is None:
            try:
                book.anomaly = self.debugger.add_breakpoint(anomaly=True)
            except DebuggerError:
                return False
        elif not on and book.anomaly is not None:
            bid, book.anomaly = book.anomaly, None
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
            return self._console.read(self.live_trace.events, self._exception_pause)

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
        return latest_grad(self.trace, key)
