"""A breakpoint: where the debugged program pauses. The parent builds and checks them
(``Debugger.add_breakpoint``), sends them to the child in their wire form (``to_wire``: the JSON
object ``{"id": ..., <condition>: <value>}``) and the child reads them back (``from_wire``) and asks
each whether it holds at a backward node (``matches_node``) or a gradient accumulation
(``matches_tensor``); the anomaly breakpoint is a flag the child checks itself."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

CONDITIONS = ("op", "node", "source", "peer", "tensor", "anomaly", "grad_norm_above")
PEER_KEYS = ("op", "scope", "source", "rank")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def same_line(want: str, have: str | None) -> bool:
    """A line breakpoint ``file:line`` (or ``name.py:line``, matched on the file's name) against a
    node's ``file:line``."""
    if have is None:
        return False
    if want == have:
        return True
    wfile, _, wline = want.rpartition(":")
    hfile, _, hline = have.rpartition(":")
    return wline == hline and os.sep not in wfile and os.path.basename(hfile) == wfile


@dataclass(frozen=True)
class Peer:
    """"This node in every iteration": the ``rank``-th backward node of ``op`` made at ``source``
    (``file:line``) in module ``scope``, in each iteration."""
    op: str
    scope: str
    source: str
    rank: int

    def __post_init__(self):
        for name, ok, kind in (("op", isinstance(self.op, str), "a string"),
                               ("scope", isinstance(self.scope, str), "a string"),
                               ("source", isinstance(self.source, str), "a string"),
                               ("rank", _is_int(self.rank), "an int")):
            if not ok:
                raise ValueError(f"a peer breakpoint's {name} must be {kind}, not {type(getattr(self, name)).__name__}")

    @classmethod
    def of(cls, peer: Any) -> Peer:
        """A Peer from a mapping with op, scope, source and rank (other keys are ignored)."""
        if isinstance(peer, Peer):
            return peer
        if not isinstance(peer, dict):
            raise ValueError(f"a peer breakpoint is a dict of op, scope, source and rank, not {type(peer).__name__}")
        missing = set(PEER_KEYS) - set(peer)
        if missing:
            raise ValueError(f"a peer breakpoint needs op, scope, source and rank; missing {sorted(missing)}")
        return cls(**{k: peer[k] for k in PEER_KEYS})

    def to_wire(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PEER_KEYS}

    def matches(self, have) -> bool:
        """``have``: a node's ((op, scope, "file:line"), rank among such nodes in its iteration), or None."""
        if have is None:
            return False
        (op, scope, line), rank = have
        return self.op == op and self.scope == scope and self.rank == rank and \
            (self.source == line or bool(line) and same_line(self.source, line))


# What each condition's value must be (anomaly: True; a value of None, False or 0 means "not given").
_TYPES = {
    "op": (lambda v: isinstance(v, str), "a string"),
    "node": (_is_int, "an int"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "peer": (lambda v: isinstance(v, Peer), "a peer"),
    "tensor": (lambda v: isinstance(v, str) or _is_int(v), "a string or an int"),
    "anomaly": (lambda v: v is True, "True"),
    "grad_norm_above": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
}


def _given(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k in CONDITIONS and v not in (None, False)}


@dataclass(frozen=True)
class Breakpoint:
    """One breakpoint: exactly one condition, and ``id``, the number the running program knows it by
    (None until a debugger numbers it). Two breakpoints are equal when their conditions are."""
    id: int | None = field(default=None, compare=False)
    op: str | None = None
    node: int | None = None
    source: str | None = None
    peer: Peer | None = None
    tensor: str | int | None = None
    anomaly: bool = False
    grad_norm_above: float | None = None

    def __post_init__(self):
        given = _given({k: getattr(self, k) for k in CONDITIONS})
        if len(given) != 1:
            raise ValueError(f"a breakpoint takes exactly one of {', '.join(CONDITIONS)}; got {given}")
        (name, value), = given.items()
        ok, kind = _TYPES[name]
        if not ok(value):
            raise ValueError(f"a breakpoint's {name} must be {kind}, not {type(value).__name__} {value!r}")
        if self.id is not None and not _is_int(self.id):
            raise ValueError(f"a breakpoint's id must be an int, not {type(self.id).__name__} {self.id!r}")

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Breakpoint:
        """A breakpoint from keyword-style ``spec`` (what ``Debugger.add_breakpoint`` takes; a key
        set to None or False is not given; ``peer`` may be a dict; an ``id`` key is kept)."""
        peer = spec.get("peer")
        if peer is not None and peer is not False:
            spec = {**spec, "peer": Peer.of(peer)}
        unknown = set(spec) - set(CONDITIONS) - {"id"}
        if unknown or len(_given(spec)) != 1:
            shown = {**spec, "peer": spec["peer"].to_wire()} if isinstance(spec.get("peer"), Peer) else spec
            raise ValueError(f"a breakpoint takes exactly one of {', '.join(CONDITIONS)}; got {shown}")
        return cls(id=spec.get("id"), **_given(spec))

    @property
    def kind(self) -> str:
        """The name of its condition: one of ``CONDITIONS``."""
        return next(iter(self.condition()))

    def condition(self) -> dict[str, Any]:
        """Its condition as ``Debugger.add_breakpoint``'s keyword argument (a peer as a dict)."""
        (name, value), = _given({k: getattr(self, k) for k in CONDITIONS}).items()
        return {name: value.to_wire() if isinstance(value, Peer) else value}

    def with_id(self, bp_id: int | None) -> Breakpoint:
        return dataclasses.replace(self, id=bp_id)

    # -- the wire ----------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """The JSON object the child is sent: the condition and the id."""
        wire = self.condition()
        if self.id is not None:
            wire["id"] = self.id
        return wire

    @classmethod
    def from_wire(cls, d: Any) -> Breakpoint:
        """A breakpoint from ``to_wire``'s object, checked: ValueError naming what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"a breakpoint on the wire is a JSON object, not {type(d).__name__}")
        unknown = sorted(set(d) - set(CONDITIONS) - {"id"})
        if unknown:
            raise ValueError(f"a breakpoint on the wire has an unknown field {unknown[0]!r}: {d}")
        if "peer" in d and d["peer"] is not None:
            d = {**d, "peer": Peer.of(d["peer"])}
        return cls(**d)

    # -- matching ----------------------------------------------------------------------------------
    def matches_node(self, node: int, op: str, source: str | None = None, peer=None,
                     grad_norms=()) -> bool:
        """Whether it pauses before backward node ``node`` (of ``op``, made at ``source``
        ``file:line``; ``peer``: its ((op, scope, "file:line"), rank), see ``Peer.matches``)
        whose incoming gradients have norms ``grad_norms``."""
        if self.op is not None:
            return self.op == op
        if self.node is not None:
            return self.node == node
        if self.source is not None:
            return same_line(self.source, source)
        if self.peer is not None:
            return self.peer.matches(peer)
        if self.grad_norm_above is not None:
            return any(n > self.grad_norm_above for n in grad_norms)
        return False

    def node_detail(self) -> str:
        """What a pause at a backward node it matched says."""
        if self.source is not None:
            return f"breakpoint {self.id}: made at {self.source}"
        if self.peer is not None:
            return f"breakpoint {self.id}: {self.peer.op} made at {self.peer.source}"
        if self.grad_norm_above is not None:
            return f"breakpoint {self.id}: gradient norm above {self.grad_norm_above}"
        return f"breakpoint {self.id}"

    def matches_tensor(self, tensor: int, name: str | None) -> bool:
        """Whether it pauses when tensor id ``tensor`` (named ``name``) gets its gradient accumulated."""
        return self.tensor is not None and self.tensor in (tensor, name, f"t{tensor}")
