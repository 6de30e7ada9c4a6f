"""``gradviz open MODEL.dot``: a torchviz drawing read as a graph without values."""
import os
import subprocess
import sys

import pytest

from gradviz import cli
from gradviz.trace.dot import DotFormatError, load_dot, trace_from_dot

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
RESNET = os.path.join(DATA, "resnet18-autograd.dot")

SMALL = """digraph {
	graph [size="12,12"]
	node [align=left fontname=monospace fontsize=10 height=0.2 ranksep=0.1 shape=box style=filled]
	1 [label="
 (3)" fillcolor=darkolivegreen1]
	2 [label=AddBackward0]
	3 -> 2
	3 [label=MulBackward0]
	4 -> 3
	4 [label=AccumulateGrad]
	5 -> 4
	5 [label="fc.weight
 (3, 4)" fillcolor=lightblue]
	6 -> 2
	6 [label=AccumulateGrad]
	7 -> 6
	7 [label="
 (3)" fillcolor=lightblue]
	2 -> 1
}
"""


def test_a_torchviz_drawing_becomes_the_backward_graph():
    t = trace_from_dot(SMALL)
    g = t.graph
    ops = {d["op"] for _, d in g.nodes(data=True) if d["op"]}
    assert ops == {"AddBackward0", "MulBackward0", "AccumulateGrad"}
    add = next(k for k, d in g.nodes(data=True) if d["op"] == "AddBackward0")
    # the gradient's direction: from the root to the leaves
    assert sorted(g.nodes[k]["op"] for k in g.successors(add)) == ["AccumulateGrad", "MulBackward0"]
    params = {d["name"]: d["shape"] for _, d in g.nodes(data=True) if d["kind"] == "parameter"}
    assert params == {"fc.weight": (3, 4)}
    leaves = [d for _, d in g.nodes(data=True) if d["kind"] == "leaf"]
    assert len(leaves) == 1 and leaves[0]["shape"] == (3,)
    assert g.number_of_nodes() == 6 and not t.passes  # the output tensor is not a graph node


@pytest.mark.skipif(not os.path.exists(RESNET), reason="../shared/data not present")
def test_resnet18_drawing_has_every_node_and_parameter():
    t = load_dot(RESNET)
    kinds = {}
    for _, d in t.graph.nodes(data=True):
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    assert kinds == {"grad_fn": 71, "accumulate_grad": 62, "parameter": 62}
    assert t.graph.nodes[next(k for k, d in t.graph.nodes(data=True) if d.get("name") == "conv1.weight")]["shape"] \
        == (64, 3, 7, 7)
    roots = [k for k in t.graph if t.graph.in_degree(k) == 0]
    assert [t.graph.nodes[k]["op"] for k in roots] == ["SumBackward0"]


@pytest.mark.parametrize("text, message", [
    ("not dot", "not a DOT digraph"),
    ("digraph {}", "no nodes found"),
    ("digraph { a -> b; b -> a }", "cycle"),
    ("digraph { a [label=x fillcolor=lightblue] }", "no autograd nodes"),
])
def test_a_bad_drawing_is_a_clear_error(text, message):
    with pytest.raises(DotFormatError, match=message):
        trace_from_dot(text)
    assert issubclass(DotFormatError, ValueError)


def test_info_and_open_read_a_drawing(tmp_path, capsys):
    path = tmp_path / "m.dot"
    path.write_text(SMALL)
    assert cli.main(["info", str(path)]) == 0
    assert capsys.readouterr().out.startswith("6 nodes (2 accumulate_grad, 2 grad_fn, 1 leaf, 1 parameter)")
    bad = tmp_path / "bad.dot"
    bad.write_text("hello")
    assert cli.main(["info", str(bad)]) == 1
    assert "not a DOT digraph" in capsys.readouterr().err
    png = tmp_path / "m.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "gradviz", "open", str(path), "--screenshot", str(png)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 10000
    out = subprocess.run([sys.executable, "-m", "gradviz", "open", str(bad), "--screenshot", str(png)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and "not a DOT digraph" in out.stderr


def test_the_app_state_of_a_drawing_says_it_has_no_gradients():
    from gradviz.app.state import AppState
    st = AppState(trace=trace_from_dot(SMALL))
    st.poll()
    assert set(st.layout.positions) == set(st.graph) and st.graph.number_of_nodes() == 6
    assert st.status_text() == "graph: 6 nodes, no backward pass recorded (no gradients to show)"
    assert st.selected_value() is None


SHOW_ATTRS = """digraph {
	1 [label="
 ()" fillcolor=darkolivegreen1]
	2 [label="SumBackward0
----------------------
self_sym_sizes: (5, 2)"]
	3 -> 2
	3 [label="MulBackward0
---------------------
other: [saved tensor]"]
	4 -> 3
	4 [label=AccumulateGrad]
	5 -> 4
	5 [label="w
 (3)" fillcolor=lightblue]
	2 -> 1
}
"""

# A custom Function saving its leaf inputs: torchviz draws each again, orange, with the same id,
# linked by a dir=none edge (show_saved) that is not a part of the gradient's flow.
SAVED_LEAF = """digraph {
	10 [label="
 ()" fillcolor=darkolivegreen1]
	11 [label=SumBackward0]
	12 -> 11
	12 [label=FBackward]
	13 -> 12
	14 [label="
 (3)" fillcolor=lightblue]
	14 -> 13
	13 [label=AccumulateGrad]
	15 -> 12
	16 [label="w
 (3)" fillcolor=lightblue]
	16 -> 15
	15 [label=AccumulateGrad]
	12 -> 14 [dir=none]
	14 [label="
 (3)" fillcolor=orange]
	16 -> 12 [dir=none]
	16 [label="w
 (3)" fillcolor=orange]
	11 -> 10
}
"""


def _ops(t):
    return sorted((d["kind"], d["op"] or d["name"]) for _, d in t.graph.nodes(data=True))


def test_drawings_with_attributes_or_saved_leaves_keep_every_node():
    t = trace_from_dot(SHOW_ATTRS)
    assert _ops(t) == [("accumulate_grad", "AccumulateGrad"), ("grad_fn", "MulBackward0"),
                       ("grad_fn", "SumBackward0"), ("parameter", "w")]
    t = trace_from_dot(SAVED_LEAF)
    assert _ops(t) == [("accumulate_grad", "AccumulateGrad"), ("accumulate_grad", "AccumulateGrad"),
                       ("grad_fn", "FBackward"), ("grad_fn", "SumBackward0"), ("leaf", None), ("parameter", "w")]
    f = next(k for k, d in t.graph.nodes(data=True) if d["op"] == "FBackward")
    assert [t.graph.nodes[k]["op"] for k in t.graph.successors(f)] == ["AccumulateGrad", "AccumulateGrad"]


@pytest.mark.parametrize("extra", [
    "subgraph cluster_0 { label=block; 3 }",
    "rankdir=LR",
    "// a comment 9 -> 8\n/* another: 7 */",
    "3 -> 2 -> 1",
])
def test_dot_statements_torchviz_does_not_write_are_understood(extra):
    text = ("digraph {\n graph [rankdir=TB]\n node [shape=box]\n 1 [label=SumBackward0]\n"
            " 2 [label=MulBackward0]\n 3 [label=AddBackward0]\n 3 -> 2\n 2 -> 1\n" + extra + "\n}\n")
    t = trace_from_dot(text)
    assert _ops(t) == [("grad_fn", "AddBackward0"), ("grad_fn", "MulBackward0"), ("grad_fn", "SumBackward0")]
    assert t.graph.number_of_edges() == 2
