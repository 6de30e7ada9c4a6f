"""The engine's observer API, in the style of ``torch.autograd.graph`` and the global hooks of
``torch.nn.modules.module`` and ``torch.optim.optimizer``: whoever watches the engine (gradviz's
recorder, a test, a user) registers a hook for a moment and gets a :class:`RemovableHandle`. The
engine knows nothing of who listens.

Every moment has the same shape: a :class:`HookList`. ``hooks.node_created.register(fn)`` adds one
hook; :func:`register_observer` adds an object's methods named after moments, all under one handle.
With nobody registered, a moment costs its hot path one truth test.

=================== ============================================ ==============================
moment              called with                                  when
=================== ============================================ ==============================
node_forward        (node, args, kwargs)                         ``Function.apply`` made a node from these
node_created        (node, inputs, output)                       ``Function.apply`` made a node
backward_started    (root, root_edges, root_grads, planned)      a backward pass begins
node_entered        (node, grad)                                 a backward node is about to run
grad_accumulated    (node, grad, fresh)                          AccumulateGrad added into .grad
node_exited         (node, grad_inputs)                          a backward node has run
backward_finished   (root,)                                      the pass is over
module_entered      (module,)                                    ``Module.__call__`` begins
module_exited       (module,)                                    ``Module.__call__`` ends
optimizer_step      (optimizer, updates)                         ``Optimizer.step`` has updated
array_writing       (array,)                                     ``array`` is about to be written in place
=================== ============================================ ==============================

Arrays are numpy arrays (``grad``: the summed gradient flowing into the node; ``grad_inputs``: one
array or None per ``next_functions`` entry); ``updates``: (parameter, L2 norm of its change) pairs;
``planned``: the nodes the pass will run when fewer than the root reaches (``autograd.grad``), else
None.
``node_forward`` hands over the arguments ``forward`` was called with, as given (tensors and any
other argument), before ``node_created``: enough to run that forward again (a gradient check does).
``array_writing`` comes before every write the engine makes into an array it has handed out (an
in-place op or item assignment, an optimizer's update, ``load_state_dict``, gradient clipping, a
batch norm's running statistics, accumulation into ``.grad``): whoever holds that array, or a view
of its memory, and needs its values as they were, copies it then. (Writes a program makes through
``Tensor.numpy()``'s array are its own and not told.)
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["HookList", "RemovableHandle", "MOMENTS", "register_observer", "node_forward", "node_created",
           "backward_started", "node_entered", "grad_accumulated", "node_exited", "backward_finished",
           "module_entered", "module_exited", "optimizer_step", "array_writing", "writing"]


class RemovableHandle:
    """Takes back what a ``register...`` call added; removing twice is harmless (as in PyTorch)."""

    def __init__(self, hooks: list, hook: Any):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class HookList:
    """The hooks of one moment, called in the order they were registered."""

    __slots__ = ("name", "_hooks")

    def __init__(self, name: str):
        self.name = name
        self._hooks: list[Callable[..., None]] = []

    def register(self, hook: Callable[..., None]) -> RemovableHandle:
        self._hooks.append(hook)
        return RemovableHandle(self._hooks, hook)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __iter__(self) -> Iterator[Callable[..., None]]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def __repr__(self) -> str:
        return f"<HookList {self.name}: {len(self._hooks)} hooks>"


node_forward = HookList("node_forward")
node_created = HookList("node_created")
backward_started = HookList("backward_started")
node_entered = HookList("node_entered")
grad_accumulated = HookList("grad_accumulated")
node_exited = HookList("node_exited")
backward_finished = HookList("backward_finished")
module_entered = HookList("module_entered")
module_exited = HookList("module_exited")
optimizer_step = HookList("optimizer_step")
array_writing = HookList("array_writing")

MOMENTS: dict[str, HookList] = {h.name: h for h in (
    node_forward, node_created, backward_started, node_entered, grad_accumulated, node_exited, backward_finished,
    module_entered, module_exited, optimizer_step, array_writing)}


def writing(array: Any) -> None:
    """Tell ``array_writing``'s hooks that ``array`` is about to be written in place (the engine's
    writers call this only when a hook is registered: ``if hooks.array_writing: hooks.writing(a)``)."""
    for hook in array_writing:
        hook(array)


class _Handles:
    def __init__(self, handles: list[RemovableHandle]):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def register_observer(observer: Any) -> _Handles:
    """Register every method of ``observer`` named after a moment (see the table above); the
    returned handle removes them all. An observer with none of those methods is a mistake."""
    found = [(moment, getattr(observer, name)) for name, moment in MOMENTS.items()
             if callable(getattr(observer, name, None))]
    if not found:
        raise TypeError(f"{type(observer).__name__} has no method named after a moment of the engine "
                        f"({', '.join(MOMENTS)})")
    return _Handles([moment.register(fn) for moment, fn in found])
