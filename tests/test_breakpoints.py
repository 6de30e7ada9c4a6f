"""Breakpoints: their conditions, what each matches, their wire form, and the app's book of them."""
import json

import pytest

from gradviz import Debugger
from gradviz.app.breakpoints import BreakpointBook
from gradviz.debug.breakpoints import Breakpoint, Peer

PEER = Peer(op="MulBackward0", scope="net.0", source="/src/x.py:3", rank=1)


def _node(bp, node=7, op="MulBackward0", source="/src/x.py:3", peer=(("MulBackward0", "net.0", "/src/x.py:3"), 1),
          norms=(1.0,)):
    return bp.matches_node(node, op, source, peer, norms)


@pytest.mark.parametrize("bp, hit, miss", [
    (Breakpoint(op="MulBackward0"), {}, {"op": "AddBackward0"}),
    (Breakpoint(node=7), {}, {"node": 8}),
    (Breakpoint(source="/src/x.py:3"), {}, {"source": "/src/x.py:4"}),
    (Breakpoint(source="x.py:3"), {}, {"source": "/src/y.py:3"}),  # matched on the file's name
    (Breakpoint(source="x.py:3"), {}, {"source": None}),  # a node with no known line
    (Breakpoint(peer=PEER), {}, {"peer": (("MulBackward0", "net.0", "/src/x.py:3"), 0)}),
    (Breakpoint(peer=PEER), {}, {"peer": (("MulBackward0", "net.1", "/src/x.py:3"), 1)}),
    (Breakpoint(peer=PEER), {}, {"peer": None}),
    (Breakpoint(peer=Peer("MulBackward0", "net.0", "x.py:3", 1)), {}, {"peer": (("MulBackward0", "net.0", ""), 1)}),
    (Breakpoint(grad_norm_above=5.0), {"norms": (1.0, 6.0)}, {"norms": (1.0, 5.0)}),
    (Breakpoint(grad_norm_above=5), {"norms": (5.5,)}, {"norms": ()}),
])
def test_a_node_breakpoint_matches_its_node_only(bp, hit, miss):
    assert _node(bp, **hit)
    assert not _node(bp, **miss)


def test_tensor_and_anomaly_breakpoints_match_no_backward_node():
    for bp in (Breakpoint(tensor="a"), Breakpoint(anomaly=True)):
        assert not _node(bp) and not _node(bp, norms=(1e9,))
    assert not Breakpoint(op="MulBackward0").matches_tensor(3, "a")


@pytest.mark.parametrize("want, tensor, name, hit", [
    ("a", 3, "a", True), ("a", 3, "b", False), ("a", 3, None, False),
    (3, 3, "a", True), (3, 4, "a", False), ("t3", 3, None, True), ("t3", 4, None, False),
])
def test_a_tensor_breakpoint_matches_by_name_or_id(want, tensor, name, hit):
    assert Breakpoint(tensor=want).matches_tensor(tensor, name) is hit


def test_the_pause_detail_names_the_breakpoint_and_its_condition():
    assert Breakpoint(id=2, op="MulBackward0").node_detail() == "breakpoint 2"
    assert Breakpoint(id=2, source="x.py:3").node_detail() == "breakpoint 2: made at x.py:3"
    assert Breakpoint(id=2, peer=PEER).node_detail() == "breakpoint 2: MulBackward0 made at /src/x.py:3"
    assert Breakpoint(id=2, grad_norm_above=5.0).node_detail() == "breakpoint 2: gradient norm above 5.0"


EVERY_KIND = [
    ({"op": "MulBackward0", "id": 1}, Breakpoint(id=1, op="MulBackward0")),
    ({"node": 7, "id": 2}, Breakpoint(id=2, node=7)),
    ({"source": "x.py:3", "id": 3}, Breakpoint(id=3, source="x.py:3")),
    ({"peer": {"op": "MulBackward0", "scope": "net.0", "source": "/src/x.py:3", "rank": 1}, "id": 4},
     Breakpoint(id=4, peer=PEER)),
    ({"tensor": "a", "id": 5}, Breakpoint(id=5, tensor="a")),
    ({"tensor": 3, "id": 6}, Breakpoint(id=6, tensor=3)),
    ({"anomaly": True, "id": 7}, Breakpoint(id=7, anomaly=True)),
    ({"grad_norm_above": 50.0, "id": 8}, Breakpoint(id=8, grad_norm_above=50.0)),
]


@pytest.mark.parametrize("wire, bp", EVERY_KIND)
def test_the_wire_form_is_the_json_object_it_always_was(wire, bp):
    assert bp.to_wire() == wire  # what older pipes and traces carry
    back = Breakpoint.from_wire(json.loads(json.dumps(bp.to_wire())))
    assert back == bp and back.id == bp.id and back.to_wire() == wire


@pytest.mark.parametrize("wire, message", [
    ({"op": "MulBackward0", "colour": "red", "id": 1}, "unknown field 'colour'"),
    ({"op": "MulBackward0", "node": 3, "id": 1}, "exactly one of"),
    ({"id": 1}, "exactly one of"),
    ({"node": "3", "id": 1}, "node must be an int, not str"),
    ({"node": True, "id": 1}, "node must be an int, not bool"),
    ({"grad_norm_above": "big", "id": 1}, "grad_norm_above must be a number"),
    ({"tensor": [1], "id": 1}, "tensor must be a string or an int"),
    ({"anomaly": "yes", "id": 1}, "anomaly must be True"),
    ({"op": "MulBackward0", "id": "1"}, "id must be an int"),
    ({"peer": {"op": "MulBackward0", "source": "x.py:3"}, "id": 1}, r"missing \['rank', 'scope'\]"),
    ({"peer": {"op": "MulBackward0", "scope": "", "source": "x.py:3", "rank": "1"}, "id": 1},
     "peer breakpoint's rank must be an int"),
    ({"peer": "MulBackward0", "id": 1}, "peer breakpoint is a dict"),
    (["op", "MulBackward0"], "a JSON object, not list"),
])
def test_from_wire_rejects_bad_input_naming_what_is_wrong(wire, message):
    with pytest.raises(ValueError, match=message):
        Breakpoint.from_wire(wire)


def test_the_debugger_keeps_its_errors_for_bad_breakpoints():
    dbg = Debugger()
    with pytest.raises(ValueError, match=r"^a breakpoint takes exactly one of op, node, source, peer, tensor, "
                                         r"anomaly, grad_norm_above; got \{'op': 'Mul', 'node': 3, "):
        dbg.add_breakpoint(op="Mul", node=3)
    with pytest.raises(ValueError, match="exactly one of"):
        dbg.add_breakpoint()
    with pytest.raises(ValueError, match=r"exactly one of .*; got \{'op': 'Mul', 'colour': 'red'\}"):
        Debugger()._new_breakpoint({"op": "Mul", "colour": "red"})
    assert dbg.breakpoints == {}
    # a dict spec, a Breakpoint and an op name are all numbered afresh
    ids = [dbg._new_breakpoint(s).id for s in ({"tensor": "a", "id": 40}, Breakpoint(id=41, node=3))]
    assert ids == [1, 2] and dbg.breakpoints == {1: Breakpoint(tensor="a"), 2: Breakpoint(node=3)}
    assert [bp.id for bp in dbg.breakpoints.values()] == [1, 2]


def test_remove_by_arguments_finds_the_breakpoint_added_with_them():
    dbg = Debugger()
    dbg._send = lambda msg: None  # no program: the bookkeeping only
    dbg.state = "running"
    a = dbg.add_breakpoint(peer={"op": "MulBackward0", "scope": "", "source": "x.py:3", "rank": 0})
    b = dbg.add_breakpoint(tensor="w")
    dbg.remove_breakpoint(peer={"op": "MulBackward0", "scope": "", "source": "x.py:3", "rank": 0})
    assert list(dbg.breakpoints) == [b]
    with pytest.raises(KeyError):
        dbg.remove_breakpoint(a)
    dbg.remove_breakpoint(tensor="w")
    assert dbg.breakpoints == {}


def test_the_book_finds_a_breakpoint_by_its_condition_whatever_its_id():
    book = BreakpointBook()
    book.entries[3] = (Breakpoint(id=3, peer=PEER), "mul")
    book.entries[4] = (Breakpoint(id=4, tensor="a"), "a.grad")
    assert Breakpoint(id=3, peer=PEER) == Breakpoint(peer=PEER) == Breakpoint(id=9, peer=PEER)
    assert book.find(Breakpoint(peer=PEER)) == (3, "mul")
    assert book.find(Breakpoint(id=12, tensor="a")) == (4, "a.grad")
    assert book.find(Breakpoint(tensor="b")) is None
    book.anomaly_on = True
    assert book.breakpoints() == [Breakpoint(peer=PEER), Breakpoint(tensor="a"), Breakpoint(anomaly=True)]
    book.renumber([1, 2, 3])
    assert [(bid, bp.id, label) for bid, (bp, label) in book.entries.items()] == [(1, 1, "mul"), (2, 2, "a.grad")]
    assert book.anomaly == 3 and book.rows()[-1][0] == 3


def test_a_breakpoint_is_frozen_and_hashable():
    bp = Breakpoint(op="MulBackward0")
    with pytest.raises(AttributeError):
        bp.op = "AddBackward0"
    assert {bp, bp.with_id(5)} == {bp} and bp.with_id(5).id == 5 and bp.id is None
    assert bp.condition() == {"op": "MulBackward0"} and bp.kind == "op"
    assert Breakpoint(peer=PEER).condition() == {"peer": {"op": "MulBackward0", "scope": "net.0",
                                                          "source": "/src/x.py:3", "rank": 1}}
