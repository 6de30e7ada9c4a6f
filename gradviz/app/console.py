"""The console: the program's stdout and stderr, and its exception with the backward node it was
in, read incrementally from the trace's events."""
from __future__ import annotations

import re

from gradviz import events as ev
from gradviz.app.labels import short_op
from gradviz.trace.model import node_key


# Terminal escape sequences (colours, cursor moves; OSC titles and links): shown as text they
# are noise, so the console shows what they leave.
_ANSI = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def plain(text: str) -> str:
    """``text`` without its terminal escape sequences."""
    return _ANSI.sub("", text) if "\x1b" in text else text


class Console:
    """Append-only (stream, text) entries; ``read`` takes in only the events new since last time."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.scanned = 0  # events of the live trace read so far
        self._exception: str | None = None  # the traceback shown, once

    def read(self, events, exception_pause) -> list[tuple[str, str]]:
        """``events``: the live trace's (all of them, also while the window shows the past), read
        under its lock; ``exception_pause``: the pause on the program's exception, if any."""
        exited = None
        for i in range(self.scanned, len(events)):
            e = events[i]
            t = type(e)
            if t is ev.ProgramOutput:
                self.entries.append((e.stream, plain(e.text)))
            elif t is ev.ProgramExited and e.error:
                exited = e
        self.scanned = len(events)
        p = exception_pause
        tb = p.traceback if p is not None else None
        if not tb and exited is not None:
            tb = exited.error
        if tb and tb != self._exception:
            self._exception = tb
            where = ""
            if p is not None and p.op:
                src = f", made at {p.source.file}:{p.source.line}" if p.source else ""
                where = f"in backward node {short_op(p.op)} ({node_key(p.node)}){src}\n"
            self.entries.append(("exception", where + plain(tb)))
        return self.entries
