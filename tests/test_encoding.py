"""The trace encoder writes each frame's JSON metadata directly (``gvz.event_meta``), not through
``json.dumps`` of a dict. For versions 1 and 2 (summaries as JSON objects) it must write exactly the
bytes ``json.dumps(gvz.event_doc(e), separators=(",", ":"))`` writes (as every earlier gradviz wrote
them), for every event, every odd number and every string; version 3 (summaries as binary records,
what gradviz writes now) must read back to the very same summaries, bit for bit; and neither may
ever write a stale summary from its caches."""
import contextlib
import io
import json
import math
import struct

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


FLOATS = {"min", "max", "mean", "std", "norm", "hist_lo", "hist_hi", "mean_abs", "zeros"}


def summary_bits(s, nan_bits=True):
    """A summary's fields as read back, its floats by their bits (-0.0 told apart, and a NaN's
    payload, which JSON cannot write: version 2 reads every NaN as the one NaN)."""
    out = []
    for k in s.__dataclass_fields__:
        x = getattr(s, k)
        if k in FLOATS and isinstance(x, (int, float)):
            x = float(x)
            x = "NaN" if x != x and not nan_bits else struct.pack("<d", x)
        elif k in ("shape", "hist"):
            x = tuple(x)
        out.append(x)
    return out


def assert_encoded_as_reference(events, place=None, readable=True):
    """Version 2 byte for byte as json.dumps wrote it; version 3 read back to the same summaries."""
    assert events
    for e in events:
        want, want_arrays = reference(e, place)
        arrays = []
        got = gvz.event_meta(e, place, arrays, version=2)
        assert got == want, type(e).__name__
        assert len(arrays) == len(want_arrays) and all(a is b for a, b in zip(arrays, want_arrays))
        if readable:
            for version in (2, 3):
                frame = gvz.encode_event(e, version=version)
                back, = gvz.StreamDecoder().feed(gvz.file_header(version) + frame)
                assert type(back) is type(e)
                for x, y in zip(gvz.values_of(e), gvz.values_of(back)):
                    assert (x is None) == (y is None)
                    if x is not None:
                        assert summary_bits(x.summary, version == 3) == summary_bits(y.summary, version == 3), \
                            (version, type(e).__name__)
                        assert (x.array is None) == (y.array is None)


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
        assert gvz.event_meta(e, place2, arrays, version=2) == want
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
def test_numpy_numbers_are_refused_in_json_and_fit_a_record(change):
    """json cannot write a numpy int or float32, nor can the version 2 encoder (as before); a
    version 3 record holds them as the numbers they are."""
    e = ev.TensorDescribed(1, "x", (2, 3), "<f4", True, "leaf", ev.Value(_summary(**change)))
    gvz._summary_json = gvz._SummaryText()
    with pytest.raises(TypeError):
        reference(e)
    with pytest.raises(TypeError):
        gvz.event_meta(e, version=2)
    back, = gvz.StreamDecoder().feed(gvz.file_header() + gvz.encode_event(e))
    (k, x), = change.items()
    assert getattr(back.value.summary, k) == x and type(getattr(back.value.summary, k)) is (int if k == "numel"
                                                                                             else float)


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
    assert b'"mean":NaN' in gvz.event_meta(e, version=2)
    monkeypatch.setattr(gvz, "_CACHE_MAX", 8)
    seen = set()
    for i in range(300):
        s = summarize(np.full(4, float(i)))
        seen.add(id(s))
        v = ev.Value(s, None)
        assert gvz.event_meta(ev.NodeExited(0, 1, (v, v)), version=2) == reference(ev.NodeExited(0, 1, (v, v)))[0]
        assert_encoded_as_reference([ev.NodeExited(0, 1, (v, v))])
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


# -- version 3: summaries as records ---------------------------------------------------------------
def _record_frame(mangle=None, version=3, meta_change=None):
    """A TensorDescribed frame whose value's summary is a record; ``mangle(record bytes)`` and
    ``meta_change(meta dict)`` spoil it (the checksum made right again)."""
    s = summarize(np.array([1.0, -2.0, 0.0, 4.0], np.float32))
    e = ev.TensorDescribed(1, "w", (4,), "<f4", True, "parameter", ev.Value(s, np.array([1.0, -2.0, 0.0, 4.0],
                                                                                       np.float32)))
    meta, arrays = json.loads(gvz.event_meta(e, None, arrays := [])), arrays
    assert meta["fields"]["value"] == {"summary": {"shape": [4], "dtype": "<f4", "record": 0}, "array": 1}
    assert type(arrays[0]) is bytes and len(arrays[0]) == gvz.RECORD_BYTES
    if mangle is not None:
        arrays[0] = mangle(arrays[0])
    if meta_change is not None:
        meta_change(meta)
    frame = gvz._frame(gvz.FRAME_MAGIC, json.dumps(meta).encode(), arrays)
    return e, gvz.file_header(version) + frame


def test_a_record_holds_every_number_of_its_summary_bit_for_bit():
    s = summarize(np.array([1.0, -2.0, 0.0, 4.0], np.float32))
    e, data = _record_frame()
    back, = gvz.decode_bytes(data)
    assert summary_bits(back.value.summary) == summary_bits(s)
    assert back.value.summary.hist is s.hist  # interned, as a JSON summary's is
    assert back.value.array.tolist() == [1.0, -2.0, 0.0, 4.0]
    odd = ev.Value(_summary(min=-0.0, max=struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0],
                            std=math.inf, sampled=True, hist=(2**32 - 1,) + (0,) * (HIST_BINS - 1)))
    back, = gvz.decode_bytes(gvz.file_header() + gvz.encode_event(ev.NodeExited(0, 1, (odd, None, odd))))
    assert [summary_bits(v.summary) for v in back.grad_inputs if v] == [summary_bits(odd.summary)] * 2
    assert back.grad_inputs[1] is None


def _set(path, value):
    def change(meta):
        at = meta
        for k in path[:-1]:
            at = at[k]
        at[path[-1]] = value
    return change


VALUE = ("fields", "value")


@pytest.mark.parametrize("mangle, meta_change, message", [
    (lambda r: r[:-1], None, "should be 353 bytes"),
    (lambda r: r + b"\0", None, "should be 353 bytes"),
    (lambda r: struct.pack("<q", -1) + r[8:], None, "negative count"),
    (lambda r: r[:96] + b"\x02" + r[97:], None, "'sampled' should be 0 or 1"),
    (None, _set(VALUE + ("summary", "record"), 1), "should be 353 bytes"),
    (None, _set(VALUE + ("summary", "record"), 2), "does not name an unused array"),
    (None, _set(VALUE + ("summary", "record"), -1), "should not be negative"),
    (None, _set(VALUE + ("summary", "record"), "0"), "should be an integer"),
    (None, _set(VALUE + ("summary", "extra"), 1), "missing or unknown fields"),
    (None, _set(VALUE + ("array",), 0), "does not name an unused array"),
    (None, _set(VALUE + ("summary", "shape"), [5]), "has shape"),
], ids=["short", "long", "negative numel", "sampled 2", "record names the value's array", "record past the arrays",
        "negative record", "string record", "unknown key", "array names the record", "shape not the array's"])
def test_bad_records_are_format_errors(mangle, meta_change, message):
    _, data = _record_frame(mangle, meta_change=meta_change)
    with pytest.raises(gvz.TraceFormatError, match=message):
        gvz.decode_bytes(data)


def test_a_record_is_refused_in_a_version_2_file_and_version_2_summaries_load_in_version_3():
    _, data = _record_frame(version=2)
    with pytest.raises(gvz.TraceFormatError, match="binary record, which only format version 3 has"):
        gvz.decode_bytes(data)
    e, _ = _record_frame()
    v2 = gvz.file_header(2) + gvz.encode_event(e, version=2)
    assert b'"hist":[' in v2 and b'"record"' not in v2
    for data in (v2, gvz.file_header(3) + v2[len(gvz.file_header()):]):  # JSON summaries read in version 3 too
        back, = gvz.decode_bytes(data)
        assert summary_bits(back.value.summary) == summary_bits(e.value.summary)


def test_a_version_3_file_is_no_larger_than_version_2():
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record(values="summaries") as rec:
        demos.run("mlp")
    v2 = sum(len(gvz.encode_event(e, version=2)) for e in rec.trace.events)
    v3 = sum(len(gvz.encode_event(e)) for e in rec.trace.events)
    assert v3 < v2  # (a record's 353 bytes against ~600 of JSON, less the array headers and keys)


@pytest.mark.parametrize("keep_arrays", [False, True])
def test_an_event_of_thousands_of_values_reads_back(keep_arrays):
    # The backward node of a cat of 5,000 tensors: 5,000 records (and as many arrays with full
    # values) in one frame, file and stream alike.
    a = np.arange(3, dtype=np.float32)
    s = summarize(a)
    e = ev.NodeExited(0, 1, tuple(ev.Value(s, a if keep_arrays else None) for _ in range(5000)))
    data = gvz.file_header() + gvz.encode_event(e)
    back, = gvz.decode_bytes(data)
    assert len(back.grad_inputs) == 5000
    assert summary_bits(back.grad_inputs[-1].summary) == summary_bits(s)
    if keep_arrays:
        assert back.grad_inputs[4999].array.tolist() == [0.0, 1.0, 2.0]
    decoder = gvz.StreamDecoder()
    got = [x for i in range(0, len(data), 4096) for x in decoder.feed(data[i:i + 4096])]
    assert len(got) == 1 and len(got[0].grad_inputs) == 5000


def test_an_event_too_large_for_a_frame_is_refused_when_written(monkeypatch):
    monkeypatch.setattr(gvz, "MAX_ARRAYS", 8)
    s = summarize(np.ones(2))
    with pytest.raises(ValueError, match="an event with 9 arrays is more than a trace frame holds"):
        gvz.encode_event(ev.NodeExited(0, 1, tuple(ev.Value(s) for _ in range(9))))
