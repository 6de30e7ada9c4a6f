import subprocess
import sys

from gradviz import cli


def test_gradviz_seed_runs_the_tutorial_example_in_the_terminal(capsys):
    assert cli.main(["seed"]) == 0
    out = capsys.readouterr().out
    steps = [line.split()[1] for line in out.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 7)}]
    assert steps == ["SubBackward0", "PowBackward0", "AccumulateGrad(b)", "MulBackward0", "PowBackward0",
                     "AccumulateGrad(a)"]
    assert "a.grad = tensor([36., 81.])" in out
    assert "b.grad = tensor([-12., -8.])" in out


def test_gradviz_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "gradviz.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gradviz ")


import json  # noqa: E402

import gradviz  # noqa: E402
from gradviz import demos  # noqa: E402

SCRIPT = """
import sys
import gradviz.engine as torch
w = torch.tensor([1., 2.], requires_grad=True)
scale = float(sys.argv[1])
loss = (w * scale).sum()
loss.backward()
print("grad", w.grad.tolist())
"""


def test_record_a_script_with_arguments(tmp_path, capfd):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "t.gvz"
    assert cli.main(["record", str(script), "3", "-o", str(out)]) == 0
    assert "grad [3.0, 3.0]" in capfd.readouterr().out
    t = gradviz.load(out)
    assert [t.nodes[n].op for n in t.passes[0].order] == ["SumBackward0", "MulBackward0", "AccumulateGrad"]
    assert t.grad("w").array.tolist() == [3.0, 3.0]
    mul = next(n for n in t.nodes.values() if n.op == "MulBackward0")
    assert mul.source.file == str(script) and mul.source.line == 6


def test_record_a_failing_script_keeps_the_trace(tmp_path, capfd):
    script = tmp_path / "bad.py"
    script.write_text(SCRIPT + "\nraise ValueError('boom')\n")
    out = tmp_path / "t.gvz"
    assert cli.main(["record", str(script), "2", "-o", str(out)]) == 1
    assert "ValueError: boom" in capfd.readouterr().err
    assert gradviz.load(out).grad("w").array.tolist() == [2.0, 2.0]


def test_a_recorded_program_exits_as_it_would_alone(tmp_path, capfd):
    # its atexit handlers run (a file it never closed is flushed), and its exit status is kept
    script = tmp_path / "atexit_prog.py"
    script.write_text(SCRIPT + """
import atexit
log = open(sys.argv[2], "w")
log.write("written, never closed")
atexit.register(lambda: print("atexit ran"))
sys.exit(3)
""")
    log = tmp_path / "log.txt"
    assert cli.main(["record", str(script), "1", str(log), "-o", str(tmp_path / "t.gvz")]) == 3
    assert log.read_text() == "written, never closed"
    assert "atexit ran" in capfd.readouterr().out


def test_record_errors_are_clear(tmp_path, capsys):
    assert cli.main(["record", str(tmp_path / "missing.py"), "-o", str(tmp_path / "t.gvz")]) == 2
    assert "no such script" in capsys.readouterr().err
    assert cli.main(["record", "--demo", "nope", "-o", str(tmp_path / "t.gvz")]) == 2
    assert "unknown demo 'nope'" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "missing.gvz")]) == 1
    assert "no such trace file" in capsys.readouterr().err
    bad = tmp_path / "bad.gvz"
    bad.write_bytes(b"not a trace at all")
    assert cli.main(["info", str(bad)]) == 1
    assert "not a valid trace" in capsys.readouterr().err


def test_info_json_is_stable(tmp_path, capfd):
    capsys = capfd
    out = tmp_path / "seed.gvz"
    assert cli.main(["record", "--demo", "seed", "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"format", "nodes", "edges", "passes", "tensors", "steps"}
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert set(next(iter(nodes.values()))) == {"id", "op", "kind", "label", "scope", "source", "shape", "dtype",
                                                "iteration"}
    order = [nodes[i]["op"] or nodes[i]["label"] for i in doc["passes"][0]["order"]]
    assert order == ["SubBackward0", "PowBackward0", "AccumulateGrad", "MulBackward0", "PowBackward0",
                     "AccumulateGrad"]
    assert all(u in nodes and v in nodes for u, v in doc["edges"])
    tensors = {t["name"]: t for t in doc["tensors"]}
    assert tensors["a"]["grad"]["max"] == 81.0 and tensors["b"]["grad"]["min"] == -12.0
    assert tensors["a"]["kind"] == "leaf" and tensors["a"]["shape"] == [2]
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pass 0 (iteration 0), 6 nodes: SubBackward0, PowBackward0, AccumulateGrad" in text


def test_export_dot(tmp_path, capsys):
    out = tmp_path / "seed.gvz"
    cli.main(["record", "--demo", "seed", "-o", str(out)])
    dot = tmp_path / "seed.dot"
    assert cli.main(["export", str(out), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert text.startswith('digraph "gradviz" {') and text.count("->") == 7
    assert 'label="SubBackward0"' in text and 'label="a\\n(2,)"' in text
    from gradviz.trace.dot import read_dot
    g = read_dot(text)
    assert g.number_of_nodes() == 8 and g.number_of_edges() == 7
    assert cli.main(["export", str(out), "-o", str(tmp_path / "x.pdf")]) == 2


def test_demos_are_listed(capsys):
    assert cli.main(["demos"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list(demos.DEMOS)
    # one column for the descriptions, however long a name is (torch-wrong-backward)
    starts = {len(line) - len(line[len(name):].lstrip()) for line, name in zip(lines, names)}
    assert len(starts) == 1
