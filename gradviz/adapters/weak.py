"""Bookkeeping kept beside the user's objects, never in them: ``WeakTable`` answers a value for an
object, by identity, for as long as that object lives. A tensor's id, or its name, stored in its
``__dict__`` would travel with it: into ``pickle`` and ``torch.save`` (which a plain PyTorch could
then not load with ``weights_only=True``), ``copy.deepcopy`` (a copy that passed for the original),
and any code that reads ``__dict__``; and it would stay after the recording ended.

``NAMES``: the names given with ``gradviz.name(tensor, label)``, for whichever recording reads them.
"""
from __future__ import annotations

import weakref
from typing import Any


class _Entry(weakref.ref):
    """A weak reference to an object in a table, with its key there."""

    __slots__ = ("key",)


class WeakTable:
    """id(obj) -> value while obj lives. An entry leaves the table when its object dies (its weak
    reference's callback, which CPython runs before the object's memory, and so its id, can be
    reused): an id in the table is always its live object's. Objects that cannot be weakly
    referenced are not kept (``set`` returns False)."""

    __slots__ = ("_values", "_refs", "_forget")

    def __init__(self) -> None:
        values: dict[int, Any] = {}
        refs: dict[int, _Entry] = {}
        self._values, self._refs = values, refs

        def forget(entry: Any) -> None:
            if refs.get(entry.key) is entry:
                del refs[entry.key]
                values.pop(entry.key, None)
        self._forget = forget

    def __len__(self) -> int:
        return len(self._values)

    def get(self, obj: Any) -> Any:
        # (the hottest call of a recording: every tensor and node met is looked up)
        return self._values.get(id(obj))

    def set(self, obj: Any, value: Any) -> bool:
        try:
            e = _Entry(obj, self._forget)
        except TypeError:  # not weak-referenceable
            return False
        e.key = key = id(obj)
        self._refs[key] = e  # (one set before for this object: its entry is let go, uncalled)
        self._values[key] = value
        return True

    def clear(self) -> None:
        """Forget every entry (and drop the weak references from the objects)."""
        self._refs.clear()
        self._values.clear()


NAMES = WeakTable()  # tensor -> the label given with gradviz.name
