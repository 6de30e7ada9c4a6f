"""The gradient checks the app shows (``gradviz.debug.check``): Check the paused node, check every
node of a pass (as it runs, with progress), and what each node's verdict is: the graph draws a
failing node red and a passing one with a tick, the inspector its errors. Plain data, no Qt; the
results are the debugger's (``Debugger.checks``), so a restart starts with none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradviz.debug.check import NodeCheck  # noqa: F401 (the type of the results)
from gradviz.debug.debugger import DebuggerError

ACCUMULATE = ("AccumulateGrad", "torch::autograd::AccumulateGrad")

if TYPE_CHECKING:
    from gradviz.app.state import AppState


@dataclass(frozen=True)
class CheckView:
    """What the inspector shows of a node's check: ``verdict`` ok / fail / unchecked / none / checking,
    ``headline``, ``lines`` (the errors and counts), ``can_check`` (the node is paused: Check runs)."""

    verdict: str
    headline: str
    lines: tuple[str, ...]
    can_check: bool
    backward_source: str | None = None
    live: bool = False  # a live debugger: the node could be checked when paused before it


class Checks:
    def __init__(self, state: AppState):
        self.state = state
        self.request: int | None = None  # the check_pass under way
        self.node_request: tuple[int, int, str] | None = None  # the node check under way: (request, node, op)
        self.message = ""  # what the last check command did
        self._seen = 0
        self._dbg = None  # the debugger the pass check was asked of (a restart makes another)
        self._dbg_node = None  # the one the node check was asked of

    @property
    def results(self) -> dict[int, NodeCheck]:
        dbg = self.state.debugger
        return dbg.checks if dbg is not None else {}

    def result(self, key: str | None) -> NodeCheck | None:
        if not key or not key.startswith("n") or not key[1:].isdigit():
            return None
        return self.results.get(int(key[1:]))

    def verdict(self, key: str | None) -> str | None:
        """"fail", "ok", "unchecked" (it could not be checked) or None (no check run)."""
        c = self.result(key)
        if c is None:
            return None
        return "unchecked" if c.ok is None else "ok" if c.ok else "fail"

    def failing(self) -> set[str]:
        return {f"n{n}" for n, c in self.results.items() if c.ok is False}

    def passing(self) -> set[str]:
        return {f"n{n}" for n, c in self.results.items() if c.ok is True}

    def can_check(self) -> bool:
        """Check runs now: paused before a backward node, live (not time travel)."""
        st = self.state
        p, dbg = st.live_pause, st.debugger
        return (dbg is not None and dbg.state == "paused" and st.time is None and p is not None
                and p.phase == "backward" and p.node is not None and self.request is None
                and self.node_request is None)

    def can_check_node(self, key: str | None) -> bool:
        """Check runs now on node ``key``: it is the paused node (the graph's and inspector's entry)."""
        p = self.state.live_pause
        return self.can_check() and p is not None and key == f"n{p.node}"

    def start_check_current(self) -> bool:
        """The window's Check: the paused node's check asked of the child without waiting for it
        (the window stays live; ``message`` says "checking ..."); ``poll`` takes the result in."""
        if not self.can_check():
            self.message = "Check: pause before a backward node first (Step, F10, or a breakpoint)"
            return False
        dbg, p = self.state.debugger, self.state.live_pause
        try:
            request = dbg.start_check_node()
        except DebuggerError as exc:
            self.message = f"Check: {exc}"
            return False
        self.node_request, self._dbg_node = (request, p.node, p.op or ""), dbg
        self.message = f"checking {p.op or 'the node'} (n{p.node}) against finite differences…"
        return True

    def check_current(self) -> NodeCheck | None:
        """The Check action: check the paused node (bounded: about a second). None if it cannot
        run now; ``message`` says why or what came out."""
        if not self.can_check():
            self.message = "Check: pause before a backward node first (Step, F10, or a breakpoint)"
            return None
        try:
            c = self.state.debugger.check_node()
        except DebuggerError as exc:
            self.message = f"Check: {exc}"
            return None
        self.message = f"Check {c.op}: {c.summary()}"
        return c

    def check_pass(self) -> bool:
        """"Check every node of this pass": the program runs on, each node of the pass checked
        before it runs, and pauses when the pass ends; ``poll`` follows the progress."""
        dbg = self.state.debugger
        if dbg is None or dbg.state != "paused" or self.state.time is not None or self.request is not None:
            self.message = "Check pass: the program must be paused (live)"
            return False
        try:
            self.request = dbg.start_check_pass()
        except DebuggerError as exc:
            self.message = f"Check pass: {exc}"
            return False
        self._seen, self._dbg = 0, dbg
        self.message = "Checking every node of this pass…"
        return True

    def poll(self) -> bool:
        """Take in the results that came; True if any did (the graph and inspector redraw)."""
        return self._poll_node() | self._poll_pass()

    def _poll_node(self) -> bool:
        if self.node_request is None:
            return False
        dbg = self.state.debugger
        request, node, op = self.node_request
        if dbg is not self._dbg_node or dbg is None:  # restarted meanwhile
            self.node_request, self.message = None, ""
            return True
        checks, _ = dbg.checks_of(request)
        if checks:
            c = checks[0]
            self.node_request, self.message = None, f"Check {c.op}: {c.summary()}"
            return True
        if dbg.state == "exited":
            self.node_request, self.message = None, f"Check {op} (n{node}): the program ended first"
            return True
        return False

    def _poll_pass(self) -> bool:
        dbg = self.state.debugger
        if self.request is not None and dbg is not self._dbg:  # restarted meanwhile
            self.request, self.message = None, ""
        if self.request is None or dbg is None:
            return False
        checks, done = dbg.checks_of(self.request)
        if len(checks) == self._seen and not done and dbg.state != "exited":
            return False
        self._seen = len(checks)
        checks = [c for c in checks if c.op not in ACCUMULATE]  # (nothing to check in them)
        fails = [c for c in checks if c.ok is False]
        ok = sum(c.ok is True for c in checks)
        if done or dbg.state == "exited":
            self.request = None
            fail_text = f", {len(fails)} FAIL: " + ", ".join(f"{c.op} (n{c.node})" for c in fails[:3]) if fails else ""
            self.message = (f"checked {len(checks)} nodes: {ok} ok{fail_text}" if done else
                            f"Check pass: the program ended after {len(checks)} nodes")
        else:
            self.message = f"Checking the pass: {len(checks)} nodes so far, {ok} ok, {len(fails)} FAIL"
        return True

    def view(self, key: str | None) -> CheckView:
        """The inspector's section for node ``key``."""
        st = self.state
        paused_here = self.can_check() and st.live_pause is not None and key == f"n{st.live_pause.node}"
        live = st.debugger is not None and st.debugger.state != "exited"
        if self.node_request is not None and key == f"n{self.node_request[1]}" and st.debugger is not None \
                and not st.debugger.checks_of(self.node_request[0])[0]:
            return CheckView("checking", "gradient check: checking… (the window stays live)", (), False)
        c = self.result(key)
        if c is None:
            return CheckView("none", "gradient check: not run", (), paused_here, live=live)
        counts = f"{c.directions_checked} of {c.directions_total} directions, {c.evaluations} forward runs"
        if c.ok is None:
            return CheckView("unchecked", "gradient check: cannot check", (c.reason or "",), paused_here,
                             c.backward_source)
        lines = [f"max abs error {c.max_abs_error:.3g}, max rel error {c.max_rel_error:.3g}", counts]
        if c.ok is False:
            if c.reason:
                lines.insert(0, c.reason)
            elif c.worst_input is not None:
                lines.insert(0, f"worst at input {c.worst_input}, " + (f"element {c.worst_element}"
                                                                     if c.worst_element is not None
                                                                     else "a random direction"))
        if c.random_v:
            lines.append("checked with a random v (the grad_outputs it received were all zero)")
        if c.kinks:
            lines.append(f"{c.kinks} directions at kinks skipped")
        head = "gradient check: FAIL, its backward disagrees with finite differences" if c.ok is False \
            else "gradient check: ok ✓"
        return CheckView("fail" if c.ok is False else "ok", head, tuple(lines), paused_here, c.backward_source)
