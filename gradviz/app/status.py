"""The status line: where the program stands, in one line of text (a pure function of the state)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from gradviz.app.labels import short_op
from gradviz.app.ranks import bucket_note, rank_note

if TYPE_CHECKING:
    from gradviz.app.state import AppState


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "es" if what.endswith("s") else "s")


def status_text(st: AppState) -> str:
    text = _status_text(st)
    checks = getattr(st, "checks", None)
    if checks is not None and checks.message:
        text = f"{text} · {checks.message}"
    link = getattr(st.debugger, "link_status", "") if st.time is None else ""
    return f"{text} · {link}" if link else text


def _status_text(st: AppState) -> str:
    p = st.pause
    if st.time is not None and st.timeline is not None:
        parts = [f"time travel: event {st.time} of {len(st.timeline)}"]
        pos = st.step_position()
        if p.pass_index is not None and p.phase.startswith("backward") and pos is not None:
            parts.append(f"pass {p.pass_index} step {pos[0]} of {pos[1]}")
        brief = st.live_trace.dropped_brief()  # (iterations forgotten: why the slider stops short)
        return " · ".join(parts + [p.detail] + ([brief] if brief else []))
    if p is None:
        if st.debugger is not None:
            brief = st.live_trace.dropped_brief()
            return "running" + (f" · {brief}" if brief else "")
        t = st.trace
        if not t.passes and not t.steps:  # a drawing (a torchviz DOT), or a forward only
            return f"graph: {t.node_count()} nodes, no backward pass recorded (no gradients to show)"
        per = "an optimizer step" if t.steps else "a backward pass"  # (as the recorder counts them)
        return (f"recording: {_count(t.iterations, 'iteration')}, {_count(len(t.passes), 'backward pass')}, "
                f"{len(t.events)} events; showing iteration {max(t.iterations - 1, 0)}; an iteration is {per}"
                + (f" · {brief}" if (brief := t.dropped_brief()) else ""))
    if p.reason == "exited":
        if st.stopped:
            return "program stopped (Stop); Restart (Ctrl+Shift+F5) runs it again"
        # One line: a traceback's last line (the console holds the whole of it).
        last = next((line.strip() for line in reversed((p.detail or "").splitlines()) if line.strip()), "")
        brief = st.live_trace.dropped_brief()  # (what a long run no longer holds)
        return (f"program exited (status {p.exit_code})" + (f": {last}" if last else "")
                + (f" · {brief}" if brief else ""))
    parts = [rank_note(st.trace)] if rank_note(st.trace) else []  # one rank of a job: which
    if p.pass_index is not None:
        parts.append(f"pass {p.pass_index}")
        pos = st.step_position()
        if pos is not None and p.phase.startswith("backward"):
            parts.append(f"step {pos[0]} of {pos[1]}")
    src = f" ({p.source.file.rsplit('/', 1)[-1]}:{p.source.line})" if p.source else ""
    if p.phase == "forward":  # the forward pass is making the graph: say what it just made
        it = max(st.trace.iterations - 1, 0)
        parts.append(f"iteration {it} forward · made {short_op(p.op) if p.op else 'a node'}{src}")
        parts.append(f"paused ({p.reason})")
    else:
        where = f" at {short_op(p.op)}" if p.op else ""
        parts.append(f"paused ({p.reason}){where}{src}")
    if p.detail and p.reason != "step":
        parts.append(p.detail)
    if p.pass_index is not None and p.phase.startswith("backward"):
        note = bucket_note(st.trace, p.pass_index)  # DistributedDataParallel's reductions so far
        if note:
            parts.append(note)
    brief = st.live_trace.dropped_brief()  # what a long run no longer holds (the memory bounds)
    return " · ".join(parts + ([brief] if brief else []))
