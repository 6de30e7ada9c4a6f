"""Work the window must not wait for (laying out a large graph), run in a worker thread: a
``Job`` runs one call and hands its result or its exception to whoever polls it. Results reach the
GUI thread only when it asks (``done``/``result``), never by a callback from the worker."""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any


class Job:
    """``fn(*args)`` running in a daemon thread; ``key`` says what it was started for (a caller
    whose wishes changed meanwhile compares keys and drops an overtaken result)."""

    def __init__(self, key: Hashable, fn: Callable[..., Any], args: tuple, name: str):
        self.key = key
        self._result: Any = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name=name)

    def _run(self, fn, args):
        try:
            self._result = fn(*args)
        except BaseException as exc:  # handed to the GUI thread, raised there
            self._error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return self.done

    @property
    def error(self) -> BaseException | None:
        """The exception the call raised, once done (None if it returned)."""
        return self._error if self.done else None

    def result(self) -> Any:
        """What the call returned; raises what it raised. Only once done."""
        if not self.done:
            raise RuntimeError("the job is still running")
        if self._error is not None:
            raise self._error
        return self._result


def start_job(key: Hashable, fn: Callable[..., Any], *args: Any, name: str = "gradviz-worker") -> Job:
    """Run ``fn(*args)`` in a worker thread now."""
    job = Job(key, fn, args, name)
    job.thread.start()
    return job
