"""The trace encoder writes each frame's JSON metadata directly (``gvz.event_meta``), not through
``json.dumps`` of a dict: it must write exactly the bytes ``json.dumps(gvz.event_doc(e),
separators=(",", ":"))`` writes (the format's own spelling, as every earlier gradviz wrote it), for
every event, every odd number and every string, and never a stale summary from its caches."""
import contextlib
import io
import json
import math

import numpy as np
import pytest

import gradviz
from gradviz import demos, events as ev
from gradviz.summary import HIST_BINS, summarize
from gradviz.trace import gvz
from gradviz.trace.budget import BudgetedTraceWriter, ValuePolicy

from test_tracefile import synthetic_events


def reference(e, place=None):
    """The metadata and inline arrays as the encoder made them before it wrote JSON itself."""
    arrays = []
    doc = gvz.event_doc(e, place, arrays)
    return json.dumps(doc, separators=(",", ":")).encode(), arrays


def assert_encoded_as_reference(events, place=None, readable=True):
    assert events
    for e in events:
        want, want_arrays = reference(e, place)
        arrays = []
        got = gvz.event_meta(e, place, arrays)
        assert got == want, type(e).__name__
        assert len(arrays) == len(want_arrays) and all(a is b for a, b in zip(arrays, want_arrays))
        if readable:
            assert gvz.decode_event(got, arrays, 0, {}) is not None  # and it reads back


def test_every_event_type_and_corner_is_written_as_json_dumps_writes_it():
    events = synthetic_events()
    assert {type(e).__name__ for e in events} == set(ev.EVENT_TYPES)
    assert_encoded_as_reference(events)


@pytest.mark.parametrize("demo", ["seed", "mlp", "nan", "control-flow", "resnet"])
def test_demo_traces_are_written_as_before(demo):
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        demos.run(demo)
    assert_encoded_as_reference(rec.trace.events)
    # With a budget's placing: array refs, inline arrays and summary-only values, ``place`` asked
    # once a value with an array, in the same order.
    def placing():
        asked = []

        def place(v):
            asked.append(v)
            n = len(asked)
            return gvz.INLINE if n % 3 == 0 else gvz.SUMMARY_ONLY if n % 3 == 1 else n
        return place, asked

    for e in rec.trace.events:
        place, asked = placing()
        want, want_arrays = reference(e, place)
        place2, asked2 = placing()
        arrays = []
        assert gvz.event_meta(e, place2, arrays) == want
        assert [a is b for a, b in zip(asked, asked2)] == [True] * len(asked) and len(asked) == len(asked2)
        assert len(arrays) == len(want_arrays) and all(a is b for a, b in zip(arrays, want_arrays))


def test_a_torch_small_op_trace_is_written_as_before():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 5)
    opt = torch.optim.SGD(cell.parameters(), lr=0.1)
    with gradviz.record() as rec:
        for _ in range(2):
            h = c = torch.zeros(2, 5)
            for _ in range(4):
                h, c = cell(torch.randn(2, 3), (h, c))
            h.pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    events = rec.trace.events
    assert sum(type(e) is ev.NodeEntered for e in events) > 40
    assert_encoded_as_reference(events)


def _summary(**changes):
    s = summarize(np.array([[0.5, -1.25, 3.0], [0.0, 2.0, 7.5]], np.float32))
    for k, v in changes.items():
        setattr(s, k, v)
    return s


ODD_SUMMARIES = {
    "usual": {},
    "negative zero everywhere": {"min": -0.0, "max": -0.0, "mean": -0.0, "zeros": -0.0, "hist_lo": -0.0},
    "NaN and infinities": {"min": math.nan, "max": math.inf, "std": -math.inf, "norm": math.nan, "mean_abs": math.inf},
    "range not the min's float": {"hist_lo": -1.25 + 0.0, "hist_hi": float("7.5")},
    "huge finite floats whose sum overflows": {"min": 1.7e308, "max": 1.7e308, "mean": 1.7e308},
    "ints where floats go": {"min": -2, "max": 7, "mean": 0, "zeros": 0},
    "numpy floats": {"min": np.float64(-1.25), "mean": np.float64(0.1), "zeros": np.float64(0.0)},
    "counts past the table": {"hist": (10**12, 4097, 4096, 0) + (1,) * (HIST_BINS - 4)},
    "histogram as a list": {"hist": [2] * HIST_BINS},
    "shape as a list, 0-d and long shapes": {"shape": [6]},
    "0-d": {"shape": ()},
    "many dims": {"shape": (1,) * 32},
    "dtype needing escapes": {"dtype": 'f"4\\ ü\n'},
    "sampled": {"sampled": True},
    "big ints": {"numel": 2**70, "nan": 2**65, "inf": 3},
    "None where numbers go": {"nan": None, "mean": None},
    "a bool where a count goes": {"inf": True},
}


@pytest.mark.parametrize("name", list(ODD_SUMMARIES))
def test_odd_summaries_are_written_as_json_writes_them(name):
    s = _summary(**ODD_SUMMARIES[name])
    v = ev.Value(s, None)
    e = ev.NodeEntered(0, 1, (v, None, v))
    gvz._summary_json = gvz._SummaryText()  # not from the cache of another test
    # (None or a bool where a number goes: written as json writes them, and refused when read, as ever)
    assert_encoded_as_reference([e, ev.TensorDescribed(1, "x", (2, 3), "<f4", True, "leaf", v)],
                                readable=name not in ("None where numbers go", "a bool where a count goes"))


@pytest.mark.parametrize("change", [{"numel": np.int64(6)}, {"std": np.float32(0.1)}])
def test_what_json_cannot_write_the_encoder_refuses_too(change):
    e = ev.TensorDescribed(1, "x", (2, 3), "<f4", True, "leaf", ev.Value(_summary(**change)))
    gvz._summary_json = gvz._SummaryText()
    with pytest.raises(TypeError):
        reference(e)
    with pytest.raises(TypeError):
        gvz.event_meta(e)


def test_summary_texts_are_never_stale(monkeypatch):
    """The summary cache is by identity, each entry holding its summary: a value given a new summary
    (made slim) is written anew, and once the cache is emptied (kept small here), summaries made
    at freed ones' addresses (CPython reuses them at once) are written as they are."""
    gvz._summary_json = gvz._SummaryText()
    value = ev.Value(summarize(np.arange(6, dtype=np.float64)), None)
    e = ev.TensorDescribed(1, "w", (6,), "<f8", True, "parameter", value)
    assert_encoded_as_reference([e])
    from gradviz.trace.model import slim
    value.summary = slim(value.summary)
    assert_encoded_as_reference([e])
    assert b'"mean":NaN' in gvz.event_meta(e)
    monkeypatch.setattr(gvz, "_CACHE_MAX", 8)
    seen = set()
    for i in range(300):
        s = summarize(np.full(4, float(i)))
        seen.add(id(s))
        v = ev.Value(s, None)
        assert gvz.event_meta(ev.NodeExited(0, 1, (v, v))) == reference(ev.NodeExited(0, 1, (v, v)))[0]
        del s, v
    assert len(seen) < 300  # addresses were reused


def test_the_budgeted_writer_counts_its_waiting_bytes_exactly(tmp_path):
    """The writer keeps the side files' bytes as a running total: equal to their sum at every event,
    while iterations wait, are dropped, flushed at an anomaly and at the end."""
    from test_file_budget import train
    with gradviz.record(values="full") as rec:
        train(12, nan_at=7)
    w = BudgetedTraceWriter(tmp_path / "t.gvz", ValuePolicy(file_budget=1 << 20, last=3, around=2))
    totals = []
    for e in rec.trace.events:
        w.write(e)
        assert w._waiting_bytes() == sum(x.nbytes for x in w._waiting.values())
        totals.append(w._waiting_bytes())
    w.close()
    assert max(totals) > 0 and w._waiting_bytes() == 0
    assert gradviz.load(tmp_path / "t.gvz").iterations == 12
