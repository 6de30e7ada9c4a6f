"""``gradviz record`` keeps the program's output in the recording, bounded, and the console shows
it without terminal escape codes (issue 19, item 6)."""
import gradviz
from gradviz import cli, events as ev
from gradviz.app.console import Console
from gradviz.debug import session as session_module
from gradviz.trace.gvz import read_events

PROGRAM = """
import sys
import gradviz.engine as torch
print("epoch 1: loss 0.5")
print("\\x1b[31mwarning\\x1b[0m in red", file=sys.stderr)
w = torch.tensor([1.0, 2.0], requires_grad=True)
(w * w).sum().backward()
print("done", flush=True)
"""


def test_a_recording_holds_the_programs_output_and_the_terminal_still_gets_it(tmp_path, capfd):
    script = tmp_path / "train.py"
    script.write_text(PROGRAM)
    out = tmp_path / "run.gvz"
    assert cli.main(["record", str(script), "-o", str(out)]) == 0
    seen = capfd.readouterr()
    assert "epoch 1: loss 0.5" in seen.out and "done" in seen.out and "in red" in seen.err
    trace = gradviz.load(out)
    outputs = [(e.stream, e.text) for e in trace.events if type(e) is ev.ProgramOutput]
    stdout = "".join(t for s, t in outputs if s == "stdout")
    assert "epoch 1: loss 0.5\n" in stdout and "done\n" in stdout
    assert any(s == "stderr" and "in red" in t for s, t in outputs)
    entries = Console().read(trace.events, None)
    assert any("warning in red" in text for _, text in entries)
    assert not any("\x1b" in text for _, text in entries)


def test_the_output_kept_is_bounded(monkeypatch, tmp_path):
    monkeypatch.setattr(session_module, "OUTPUT_LIMIT", 10)
    path = tmp_path / "out.gvz"
    with open(path, "wb") as f:
        s = session_module.Session(f)
        for _ in range(5):
            s.record_output("stdout", "abcd")
        f.flush()
    kept = [e for e in read_events(path) if type(e) is ev.ProgramOutput]
    assert "".join(e.text for e in kept if e.stream == "stdout") == "abcdabcdab"
    assert kept[-1].text == session_module.OUTPUT_CUT


def test_the_console_shows_a_traceback_without_escape_codes():
    events = [ev.ProgramExited(1, "Traceback (most recent call last):\n\x1b[1;35mValueError\x1b[0m: boom\n")]
    entries = Console().read(events, None)
    assert entries == [("exception", "Traceback (most recent call last):\nValueError: boom\n")]
