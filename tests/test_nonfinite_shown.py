"""A NaN or Inf the recorded summaries know of is shown wherever values are (issue 19, item 8):
a node's label, an edge's, ``gradviz info`` (text and JSON), the DOT export; without the anomaly
switch."""
import json

import gradviz
from gradviz import cli
from gradviz.app.graphmodel import edge_labels, leaf_grad_label
from gradviz.app.labels import node_label

PROGRAM = """
import gradviz.engine as torch
w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
y = (w * 2.0).log()          # log of a negative: a NaN in forward
loss = (y * y).sum()
loss.backward()
"""


def _record(tmp_path):
    script = tmp_path / "nan_forward.py"
    script.write_text(PROGRAM)
    out = tmp_path / "run.gvz"
    assert cli.main(["record", str(script), "-o", str(out)]) == 0
    return out


def test_a_forward_nan_shows_in_info_and_its_json(tmp_path, capfd):
    out = _record(tmp_path)
    capfd.readouterr()
    assert cli.main(["info", str(out)]) == 0
    text = capfd.readouterr().out
    assert "NaN or Inf in" in text and "LogBackward0 (forward value): 1 NaN" in text
    assert cli.main(["info", str(out), "--json"]) == 0
    nodes = json.loads(capfd.readouterr().out)["nodes"]
    log = next(n for n in nodes if n["op"] == "LogBackward0")
    assert log["nonfinite"] == {"nan": 1, "inf": 0}
    doubled = next(n for n in nodes if n["op"] == "MulBackward0" and n["iteration"] == 0)
    assert "nonfinite" not in doubled  # w * 2: finite, said by saying nothing


def test_a_forward_nan_shows_in_the_dot_export(tmp_path):
    out = _record(tmp_path)
    dot = tmp_path / "g.dot"
    assert cli.main(["export", str(out), "-o", str(dot)]) == 0
    line = next(s for s in dot.read_text().splitlines() if 'gv_op="LogBackward0"' in s)
    assert "⚠ 1 NaN" in line and "#cc0000" in line


def test_a_forward_nan_and_its_gradients_show_on_nodes_and_edges():
    import gradviz.engine as torch
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    with gradviz.record() as rec:
        y = (w * 2.0).log()
        (y * y).sum().backward()
    g = rec.trace.graph
    log = next(k for k, d in g.nodes(data=True) if d.get("op") == "LogBackward0")
    assert node_label(g.nodes[log], log) == "LogBackward0\n⚠ 1 NaN"
    labels = edge_labels(rec.trace, g)
    assert any("⚠" in text and "NaN" in text for text in labels.values())
    leaf = next(k for k, d in g.nodes(data=True) if d.get("kind") == "leaf")
    assert leaf_grad_label(rec.trace, leaf).startswith(".grad ⚠ 1 NaN")
    assert all(node_label(d, k).count("⚠") == (1 if d.get("nonfinite") else 0) for k, d in g.nodes(data=True))
