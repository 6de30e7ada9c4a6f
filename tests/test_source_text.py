"""A trace carries the text of the source lines it names (``SourceText``), so that it shows its code
where the file is not: the text round-trips through a .gvz file and shows in the inspector after the
script is gone; a trace without it still shows the file's line; a line is told once, and a file that
is not a regular file is never read."""
import linecache
import os
import runpy
import threading

import pytest

import gradviz
from gradviz import events as ev
from gradviz.trace.files import load
from gradviz.trace.gvz import read_events, write_trace

SCRIPT = """\
import gradviz.engine as torch


def train(steps):
    w = torch.tensor([1., 2.], requires_grad=True)
    for _ in range(steps):
        h = w * 3  # the product ✓
        loss = (h - 1).sum()
        loss.backward()
"""


def _record_script(tmp_path, steps=3):
    script = tmp_path / "train_me.py"
    script.write_text(SCRIPT, encoding="utf-8")
    train = runpy.run_path(str(script))["train"]
    with gradviz.record() as rec:
        train(steps)
    return str(script), rec.trace


def _node_made_at(trace, file, line):
    return next(n for n in trace.nodes.values()
                if n.kind == "grad_fn" and n.source is not None and (n.source.file, n.source.line) == (file, line))


def test_a_recording_tells_each_line_once_before_the_node_it_made(tmp_path):
    script, trace = _record_script(tmp_path, steps=3)
    texts = [e for e in trace.events if type(e) is ev.SourceText]
    assert [(e.line, e.text) for e in texts] == [(7, "        h = w * 3  # the product ✓"),
                                                 (8, "        loss = (h - 1).sum()")]
    assert all(e.file == script for e in texts)
    assert trace.source_text(script, 7) == "        h = w * 3  # the product ✓"
    assert trace.source_text(script, 99) is None
    # Told before the first node that names it, not again in later iterations.
    first = next(i for i, e in enumerate(trace.events) if type(e) is ev.NodeCreated and e.source.line == 7)
    told = next(i for i, e in enumerate(trace.events) if type(e) is ev.SourceText and e.line == 7)
    assert told < first
    from gradviz.app.timeline import Timeline
    assert Timeline(trace).describe(told + 1) == "source train_me.py:7: h = w * 3  # the product ✓"
    assert sum(type(e) is ev.NodeCreated and e.op == "MulBackward0" for e in trace.events) == 3


def test_the_text_round_trips_through_a_file_and_shows_after_the_script_is_gone(tmp_path, qtbot):
    from gradviz.app.state import AppState
    from gradviz.trace.model import node_key
    from gradviz.ui.inspector import Inspector

    script, trace = _record_script(tmp_path, steps=1)
    path = tmp_path / "run.gvz"
    trace.save(path)
    os.remove(script)
    linecache.checkcache(script)  # nothing of the file left in this process either
    told = [(e.file, e.line, e.text) for e in trace.events if type(e) is ev.SourceText]
    assert [(e.file, e.line, e.text) for e in read_events(path) if type(e) is ev.SourceText] == told
    assert len(told) == 2
    loaded = load(path)
    assert loaded.source_text(script, 8) == "        loss = (h - 1).sum()"
    ins = Inspector(AppState(trace=loaded))
    qtbot.addWidget(ins)
    ins.show_key(node_key(_node_made_at(loaded, script, 7).id))
    text = ins.toPlainText()
    assert f"{script}:7 in train" in text and "h = w * 3  # the product ✓" in text  # as written
    # Time travel shows it too: a moment of the trace has the texts the trace has.
    from gradviz.app.timeline import Timeline
    assert Timeline(loaded).trace_at(len(loaded.events)).source_text(script, 7) == "        h = w * 3  # the product ✓"


def test_a_trace_without_source_text_still_shows_the_files_line(tmp_path, qtbot):
    from gradviz.app.state import AppState
    from gradviz.ui.inspector import Inspector

    script, trace = _record_script(tmp_path, steps=1)
    old = tmp_path / "old.gvz"
    write_trace(old, [e for e in trace.events if type(e) is not ev.SourceText])  # as traces were before
    loaded = load(old)
    assert loaded.source_texts == {}
    node = _node_made_at(loaded, script, 8)
    ins = Inspector(AppState(trace=loaded))
    qtbot.addWidget(ins)
    ins.show_key(f"n{node.id}")
    assert "loss = (h - 1).sum()" in ins.toPlainText()
    # The trace's own text wins over the file's, which may have changed since.
    (tmp_path / "train_me.py").write_text(SCRIPT.replace("(h - 1)", "(h - 2)"), encoding="utf-8")
    linecache.checkcache(script)
    ins.show_key(f"n{node.id}")
    assert "(h - 2)" in ins.toPlainText()
    fresh = load(_saved(trace, tmp_path / "new.gvz"))
    ins2 = Inspector(AppState(trace=fresh))
    qtbot.addWidget(ins2)
    ins2.show_key(f"n{node.id}")
    assert "(h - 1)" in ins2.toPlainText() and "(h - 2)" not in ins2.toPlainText()


def _saved(trace, path):
    trace.save(path)
    return path


def test_code_python_holds_in_linecache_is_told(tmp_path):
    # A notebook cell or code given to exec: no file, but linecache has its lines.
    name = "<cell-gradviz-test-1>"
    code = ("import gradviz.engine as torch\nw = torch.tensor([2.], requires_grad=True)\n"
            "y = (w * w).sum()  # in a cell\n")
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    try:
        with gradviz.record() as rec:
            exec(compile(code, name, "exec"), {})
    finally:
        linecache.cache.pop(name, None)
    assert rec.trace.source_text(name, 3) == "y = (w * w).sum()  # in a cell"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_program_whose_code_names_a_fifo_is_recorded_without_reading_it(tmp_path):
    fifo = tmp_path / "code.py"
    os.mkfifo(fifo)
    code = "import gradviz.engine as torch\nw = torch.tensor([2.], requires_grad=True)\ny = (w * w).sum()\n"
    done = {}

    def run():
        with gradviz.record() as rec:
            exec(compile(code, str(fifo), "exec"), {})
        done["trace"] = rec.trace

    worker = threading.Thread(target=run, daemon=True)  # opening a FIFO would block it for good
    worker.start()
    worker.join(30)
    assert "trace" in done, "recording blocked on the FIFO its code names"
    t = done["trace"]
    assert any(n.source is not None and n.source.file == str(fifo) for n in t.nodes.values())
    assert t.source_texts == {}


def test_a_debugged_program_streams_its_source_text(tmp_path):
    from gradviz import Debugger

    script = tmp_path / "prog.py"
    script.write_text(SCRIPT + "\ntrain(2)\n", encoding="utf-8")
    with Debugger.launch(script=str(script), break_on_backward=False) as dbg:
        p = dbg.wait_paused(timeout=30)
        assert p.reason == "exited", p
        with dbg.lock:
            texts = dict(dbg.trace.source_texts)
    assert texts == {(str(script), 7): "        h = w * 3  # the product ✓",
                     (str(script), 8): "        loss = (h - 1).sum()"}


def test_a_node_whose_output_was_never_seen_claims_no_shape(qtbot):
    # lstm_cell makes its inner nodes where no mode sees them: their output's shape is unknown,
    # and "()" would say a scalar.
    torch = pytest.importorskip("torch")
    import gradviz
    from gradviz.app.state import AppState
    from gradviz.trace.model import node_key
    from gradviz.ui.inspector import Inspector

    cell = torch.nn.LSTMCell(2, 3)
    with gradviz.record(values="summaries") as rec:
        h, c = cell(torch.randn(4, 2))
        h.sum().backward()
    made = {e.op: e for e in rec.trace.events if type(e) is ev.NodeCreated and e.kind == "grad_fn"}
    ins = Inspector(AppState(trace=rec.trace))
    qtbot.addWidget(ins)
    ins.show_key(node_key(made["SigmoidBackward0"].id))
    text = ins.toPlainText()
    head = text.split("made at")[0]
    assert "output\nnot seen (made inside another op" in head and "shape" not in head
    ins.show_key(node_key(made["SumBackward0"].id))  # made under the mode: its output was seen
    head = ins.toPlainText().split("made at")[0]
    assert "shape\n()\ndtype\nfloat32" in head and "not seen" not in head
