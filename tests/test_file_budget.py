"""Trace files within a budget (issue 18, item 5): which iterations keep full arrays, what a file
keeps when its summaries outgrow the budget, older files, bad files, and ``load`` applying the
memory budget as it streams."""
import contextlib
import io
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import gradviz
import gradviz.engine as torch
from gradviz import events as ev
from gradviz.engine import nn
from gradviz.trace import gvz
from gradviz.trace.budget import BudgetedTraceWriter, ValuePolicy, parse_iterations, parse_size
from gradviz.trace.gvz import TraceFormatError
from gradviz.trace.model import ARRAY_OVERHEAD


def train(iterations, nan_at=None, width=16):
    """A small MLP trained on random data; the input of iteration ``nan_at`` is all NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(iterations):
        x = torch.randn(4, width)
        if i == nan_at:
            x = x * float("nan")
        y = torch.randint(0, 3, (4,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def arrays_by_iteration(events):
    """{iteration: [(event position, value index, array)]} of the values that hold arrays."""
    out, it = {}, -1
    for k, e in enumerate(events):
        if type(e) is ev.IterationStarted:
            it = e.index
        for j, v in enumerate(gvz.values_of(e)):
            if v is not None and v.array is not None:
                out.setdefault(it, []).append((k, j, v.array))
    return out


def record(path, iterations, **kw):
    nan_at = kw.pop("nan_at", None)
    with gradviz.record(path=path, **kw) as rec:
        train(iterations, nan_at)
    return rec.trace


def test_policy_keeps_full_values_for_first_last_anomaly_and_asked(tmp_path):
    path = tmp_path / "run.gvz"
    budget = 4 << 20
    live = record(path, 20, nan_at=12, file_budget=budget, keep_values="5")
    assert os.path.getsize(path) <= budget
    t = gradviz.load(path)
    assert len(t.events) == len(live.events)  # every event, with its summary
    got = arrays_by_iteration(t.events)
    # first (0), asked (5), around the NaN's onset (10-14: it stays NaN after, no new onset), last two
    assert sorted(got) == [0, 5, 10, 11, 12, 13, 14, 18, 19]
    whole = arrays_by_iteration(live.events)
    for it, kept in got.items():  # exactly the recorded arrays, every one of the iteration
        assert [(k, j) for k, j, _ in kept] == [(k, j) for k, j, _ in whole[it]]
        for (_, _, a), (_, _, b) in zip(kept, whole[it]):
            np.testing.assert_array_equal(a, b)
    for k, e in enumerate(t.events):  # the others: summaries, exactly as recorded
        for v, w in zip(gvz.values_of(e), gvz.values_of(live.events[k])):
            assert (v is None) == (w is None)
            if v is not None:
                assert v.summary.to_dict().keys() == w.summary.to_dict().keys()
                assert v.summary.shape == w.summary.shape and v.summary.nan == w.summary.nan
    assert t.file_notes.full_iterations == [[0, 0], [5, 5], [10, 14], [18, 19]]
    assert t.dropped_lines() == ["full values for iterations 0, 5, 10-14, 18-19; summaries only for the others"]


def test_unbounded_file_keeps_every_array(tmp_path):
    path = tmp_path / "all.gvz"
    record(path, 4, file_budget=None)
    t = gradviz.load(path)
    assert sorted(arrays_by_iteration(t.events)) == [0, 1, 2, 3]
    assert t.dropped_lines() == []
    record(path, 3, file_budget=4 << 20)  # first and last two: every iteration, nothing to say
    t = gradviz.load(path)
    assert sorted(arrays_by_iteration(t.events)) == [0, 1, 2] and t.dropped_lines() == [] and not t.dropped_brief()


def test_a_run_that_outgrows_its_summaries_keeps_the_most_recent(tmp_path):
    path = tmp_path / "long.gvz"
    budget = 96 << 10
    live = record(path, 40, values="summaries", file_budget=budget)
    size = os.path.getsize(path)
    assert size <= budget
    t = gradviz.load(path)
    kept = [e.index for e in t.events if type(e) is ev.IterationStarted]
    assert kept and kept == list(range(kept[0], 40)) and kept[0] > 0  # the most recent, whole
    n = t.file_notes
    assert len(t.events) == len(live.events) - n.events_dropped + _reannounced(t)
    assert n.dropped_iterations == (0, kept[0] - 1)
    assert t.dropped_lines()[0] == (f"the oldest {n.events_dropped} events (iterations 0-{kept[0] - 1}) were "
                                    "dropped to keep the file within its budget of 96 KiB")
    # The kept iterations are whole: each pass ran every node, every leaf's AccumulateGrad is known.
    assert [len(p.order) for p in t.passes] == [len(p.order) for p in live.passes[-len(t.passes):]]
    assert all(nid in t.nodes for p in t.passes for nid in p.order)
    from gradviz.trace.report import info_text, to_json
    assert "What this trace keeps and drops:\n  the oldest" in info_text(t)
    assert to_json(t)["dropped"] == t.dropped_lines()


def _reannounced(t):
    """Events a compacted file re-announces before its first kept iteration (leaves and their
    AccumulateGrad nodes, made once and used in every iteration)."""
    first = next(k for k, e in enumerate(t.events) if type(e) is ev.IterationStarted)
    return first


def test_old_format_files_still_load(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        train(2)
    v1 = gvz._FILE_HEADER.pack(gvz.MAGIC, 1, 0) + b"".join(gvz.encode_event(e, version=1) for e in rec.trace.events)
    path = tmp_path / "v1.gvz"
    path.write_bytes(v1)
    t = gradviz.load(path)
    assert [gvz.encode_event(e) for e in t.events] == [gvz.encode_event(e) for e in rec.trace.events]
    assert t.dropped_lines() == [] and t.file_notes.policy is None
    # Version 1 has no array or note frames: one there is a bad frame, not silently read.
    path.write_bytes(v1 + gvz.encode_note({"note": "end"}))
    with pytest.raises(TraceFormatError, match="bad frame magic"):
        gradviz.load(path)


def _small_v2(tmp_path):
    path = tmp_path / "small.gvz"
    with gradviz.record(path=path, file_budget=1 << 20, keep_values="") as rec:
        train(4, width=4)
    data = path.read_bytes()
    assert gvz.ARRAY_MAGIC in data and gvz.NOTE_MAGIC in data and b'"ref":' in data
    return path, data, rec.trace


def test_truncated_or_corrupt_version_2_files_fail_as_trace_format_error(tmp_path):
    path, data, live = _small_v2(tmp_path)
    cut_path = tmp_path / "cut.gvz"
    for cut in range(0, len(data), max(1, len(data) // 300)):
        cut_path.write_bytes(data[:cut])
        try:
            t = gradviz.load(cut_path)
        except TraceFormatError:
            t = gradviz.load(cut_path, partial=True) if cut >= 12 else None
        if t is not None:  # a prefix of the events, never more, never others
            assert len(t.events) <= len(live.events)
    for at in range(12, len(data), max(1, len(data) // 200)):
        bad = bytearray(data)
        bad[at] ^= 0x5A
        cut_path.write_bytes(bytes(bad))
        with pytest.raises(TraceFormatError):
            gradviz.load(cut_path)
        gradviz.load(cut_path, partial=True)  # keeps what came before, or raises the header's error


def test_array_frames_are_checked(tmp_path):
    head = gvz.file_header()
    s = gradviz.summary.summarize(np.zeros((2, 3), np.float32))
    e = ev.TensorDescribed(1, "w", (2, 3), "<f4", True, "parameter", ev.Value(s, np.zeros((2, 3), np.float32)))
    frame = gvz.encode_event(e, lambda v: 7)
    path = tmp_path / "a.gvz"
    path.write_bytes(head + frame + gvz.encode_array(7, np.ones((3, 2), np.float32)))
    with pytest.raises(TraceFormatError, match=r"array of ref 7 has shape \(3, 2\) but its summary says \(2, 3\)"):
        gradviz.load(path)
    path.write_bytes(head + frame + frame)
    with pytest.raises(TraceFormatError, match="array ref 7 is named by two values"):
        gradviz.load(path)
    path.write_bytes(head + frame + gvz.encode_array(7, np.ones((2, 3), np.float32)))
    t = gradviz.load(path)
    np.testing.assert_array_equal(t.tensors[1].value.array, np.ones((2, 3)))
    assert t.values.stored_bytes == 24 + ARRAY_OVERHEAD  # a late array counts against the memory budget too


def test_load_applies_the_memory_budget_as_it_streams(tmp_path):
    path = tmp_path / "big.gvz"
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record(path=path, file_budget=None, values="full"):
        train(24, width=2048)
    size = os.path.getsize(path)
    assert size > 12 << 20
    budget = 256 << 10
    tracemalloc.start()
    try:
        t = gradviz.load(path, budget_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert t.values.stored_bytes <= budget and t.values.dropped > 0
    assert peak < size / 4, (peak, size)  # never the whole file: a chunk, the budget and the trace
    held = [a for it in arrays_by_iteration(t.events).values() for _, _, a in it]
    assert sum(a.nbytes + ARRAY_OVERHEAD for a in held) == t.values.stored_bytes
    line = t.dropped_lines()[-1]
    assert line.startswith(f"{t.values.dropped} full arrays (") and "memory budget of 256 KiB" in line


def test_the_app_says_what_was_dropped(tmp_path):
    from gradviz.app.state import AppState
    path = tmp_path / "long.gvz"
    record(path, 30, values="summaries", file_budget=64 << 10)
    st = AppState(trace=gradviz.load(path))
    text = st.status_text()
    assert text.startswith("recording: 30 iterations")
    kept = [e.index for e in st.trace.events if type(e) is ev.IterationStarted]
    assert text.endswith(f" · iterations 0-{kept[0] - 1} dropped (file budget), summaries only")


def test_a_file_whose_writer_never_closed_says_so(tmp_path):
    path = tmp_path / "killed.gvz"
    w = BudgetedTraceWriter(path, ValuePolicy(file_budget=1 << 20))
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        train(5, width=4)
    for e in rec.trace.events:
        w.write(e)
    w._f.close()  # killed: the waiting arrays and the end note never written
    t = gradviz.load(path)
    assert len(t.events) == len(rec.trace.events) and sorted(arrays_by_iteration(t.events)) == [0]
    assert "did not end cleanly" in t.dropped_lines()[0]


def test_sizes_and_iterations_parse():
    assert parse_size("512M") == 512 << 20 and parse_size("1.5G") == 3 << 29 and parse_size("100k") == 102400
    assert parse_size("4096") == 4096 and parse_size("2MiB") == 2 << 20
    assert parse_size("none") is None and parse_size("0") is None
    assert parse_iterations("0,10, 100-120") == ((0, 0), (10, 10), (100, 120))
    for bad, msg in (("12Q", "not a size"), ("-5", "not a size")):
        with pytest.raises(ValueError, match=msg):
            parse_size(bad)
    with pytest.raises(ValueError, match="not an iteration or a range"):
        parse_iterations("a-b")
    with pytest.raises(ValueError, match="empty range"):
        parse_iterations("9-3")


def test_record_command_refuses_a_bad_budget_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gradviz.cli", "record", "--demo", "mlp", "--file-budget", "lots",
                          "-o", str(tmp_path / "x.gvz")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "gradviz record: not a size: 'lots' (say e.g. 512M, 2G, 100k, or none)"]
    assert not (tmp_path / "x.gvz").exists()


def test_record_command_keeps_within_its_budget(tmp_path):
    path = tmp_path / "r.gvz"
    out = subprocess.run([sys.executable, "-m", "gradviz.cli", "record", "--demo", "mlp", "--file-budget", "2M",
                          "--keep-values", "2", "-o", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[-1] == "gradviz: full values for iterations 0, 2-4; summaries only for the others"
    assert os.path.getsize(path) <= 2 << 20
    t = gradviz.load(path)
    assert t.file_notes.ended and t.file_notes.policy["keep"] == [[2, 2]]
    assert sorted(arrays_by_iteration(t.events)) == [0, 2, 3, 4]  # first, asked, last two of five
