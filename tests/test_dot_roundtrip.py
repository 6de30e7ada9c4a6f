"""gradviz's own DOT reads back as the graph it was written from (issue 19, item 7): ``gradviz
export run.gvz -o g.dot`` then ``gradviz open g.dot`` shows the same nodes, kinds, ops, names and
edges, each the way it ran (torchviz's drawings are read as before: tests/test_dot_open.py)."""
import gradviz
from gradviz import cli, demos
from gradviz.trace.dot import to_dot, trace_from_dot
from gradviz.trace.files import load_any

FIELDS = ("kind", "op", "name", "scope", "shape", "dtype", "label", "iteration")


def _same_graph(g, back):
    assert set(back.nodes) == set(g.nodes)
    assert set(back.edges) == set(g.edges)  # each edge, each way as it was
    for k in g.nodes:
        assert {f: back.nodes[k].get(f) for f in FIELDS} == {f: g.nodes[k].get(f) for f in FIELDS}, k
    for u, v in g.edges:
        assert back.edges[u, v].get("grad", True) == g.edges[u, v].get("grad", True)


def test_an_exported_recording_opens_as_the_graph_it_was(tmp_path, capsys):
    gvz, dot = tmp_path / "run.gvz", tmp_path / "g.dot"
    with gradviz.record(path=gvz) as rec:
        demos.run("mlp")
    g = rec.trace.graph
    assert g.number_of_edges() == 81
    assert cli.main(["export", str(gvz), "-o", str(dot)]) == 0
    back = load_any(str(dot)).graph
    _same_graph(g, back)
    # the parameters stay leaves: they take gradients, they hand none on
    params = [k for k, d in back.nodes(data=True) if d["kind"] == "parameter"]
    assert params and all(back.out_degree(k) == 0 and back.in_degree(k) == 1 for k in params)
    assert {back.nodes[k]["name"] for k in params} >= {"0.weight", "4.bias"}


def test_a_torch_graph_with_frozen_parameters_round_trips():
    import pytest
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    with gradviz.record() as rec:
        model(torch.randn(5, 3)).pow(2).sum().backward()
    g = rec.trace.graph
    assert any(not d.get("grad", True) for _, _, d in g.edges(data=True))  # the frozen weight's edge
    _same_graph(g, trace_from_dot(to_dot(g)).graph)


def test_a_drawing_missing_its_closing_brace_is_told_so():
    # (issue 19, item 9: it was told it should start with 'digraph {', which it did)
    import pytest
    from gradviz.trace.dot import DotFormatError
    with pytest.raises(DotFormatError, match=r"closing '\}' is missing"):
        trace_from_dot('digraph {\n  a [label="Add}"]\n  b -> a\n')
    with pytest.raises(DotFormatError, match="should start with 'digraph {'"):
        trace_from_dot("graph { a -- b }")
