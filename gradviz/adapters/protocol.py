"""What an adapter must answer: the producer (gradviz.recording.producer) asks these questions of
whichever framework made a tensor or a graph node, and knows nothing else of it. Both
``EngineAdapter`` and ``TorchAdapter`` (and ``MultiAdapter``, which routes each object to the one
that owns it) satisfy this protocol; a test checks it."""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gradviz.summary import PendingSummary, Summary


def backward_source(cls: Any) -> str | None:
    """"file:line" of a custom Function's backward, when Python can tell."""
    fn = getattr(cls, "backward", None)
    if fn is None:
        return None
    try:
        fn = inspect.unwrap(fn)
        lines, first = inspect.getsourcelines(fn)
        # the def line, past any decorators (@staticmethod, @once_differentiable)
        at = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith(("def ", "async def "))), 0)
        return f"{os.path.abspath(inspect.getsourcefile(fn) or '?')}:{first + at}"
    except (TypeError, OSError):
        code = getattr(fn, "__code__", None)
        return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None


class NotCheckable(Exception):
    """A node's forward cannot be run again to check its backward; the message says why."""


@dataclass
class Replay:
    """A node's forward, ready to run again in float64 from the inputs it saw (a gradient check):
    ``inputs`` are float64 copies of its differentiable inputs, ``edges[i]`` the index of the
    grad_input (``next_functions`` entry) that belongs to ``inputs[i]``, ``run(arrays)`` the
    node's outputs (float64, one per grad_output) for those inputs in their place, ``outputs``
    what ``run(inputs)`` gave (the adapter ran it once: a forward that draws random numbers is
    refused there, and the program's random state is left as it was)."""

    inputs: list[np.ndarray]
    edges: list[int]
    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    outputs: list[np.ndarray]
    backward_source: str | None = None  # a user-written backward's "file:line"


@runtime_checkable
class Adapter(Protocol):
    source_dirs: Sequence[str]  # frames in these folders are the framework's own, never the user's line

    # identity: the producer's id for an object, kept beside the user's objects, never in them
    # (gradviz.adapters.weak), by each adapter for itself: one adapter serves one producer
    def get_tag(self, obj: Any) -> Any: ...
    def set_tag(self, obj: Any, tag: Any) -> None: ...

    # graph nodes
    def op_name(self, node: Any) -> str: ...
    def next_nodes(self, node: Any) -> list[Any]: ...
    def accumulate_variable(self, node: Any) -> Any | None: ...
    def saved(self, node: Any) -> list[tuple[str, Any]]: ...
    def vjp(self, node: Any, like: list[Any], arrays: list[np.ndarray]) -> list[Any]: ...
    def replay(self, node: Any) -> Replay: ...  # raises NotCheckable, saying why
    def release_forward(self, node: Any) -> None: ...  # what replay needed, let go (the node ran)

    # tensors
    def has_grad_fn(self, tensor: Any) -> bool: ...
    def tensor_meta(self, tensor: Any) -> tuple[tuple[int, ...], str, bool]: ...
    def array(self, tensor: Any) -> Any: ...
    def is_parameter(self, tensor: Any) -> bool: ...
    def given_name(self, tensor: Any) -> str | None: ...

    # values (an adapter's arrays: numpy for the engine, torch tensors for PyTorch)
    def summarize(self, array: Any) -> Summary: ...
    # a Summary now, or a PendingSummary that the next flush() resolves (made on a device, say)
    def summarize_later(self, array: Any) -> Summary | PendingSummary: ...
    def flush(self) -> None: ...
    def memory(self, array: Any) -> tuple[Any, int, int, tuple[int, ...], int | None]: ...
    def view_onto(self, view: Any, owner: Any, snapshot: Any) -> Any | None: ...
    def is_view(self, array: Any) -> bool: ...
    def to_numpy(self, array: Any, copy: bool) -> np.ndarray: ...
    # ``value.array`` is the array ``to_numpy`` was given (no copy): copy it before the framework
    # writes into that memory (an adapter whose to_numpy always copies never hears of it)
    def kept(self, value: Any) -> None: ...
