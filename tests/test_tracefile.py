"""The ``.gvz`` trace file format keeps its promises: an exact round trip, a versioned header, a
``TraceFormatError`` (never another exception, never a hang, never a huge allocation, never code
run) for every bad input, ``partial=True`` keeping every complete event before a cut, and a file
still being written followed frame by frame.

The frame layout is re-read here by an independent reader of the documented layout (``parse_frame``)
and crafted by ``build_frame``, so these tests check the documented format, not the decoder against
itself.
"""
import contextlib
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gradviz
from gradviz import demos, events as ev
from gradviz.trace import gvz as tf
from gradviz.summary import summarize as _summarize
from gradviz.trace.gvz import TraceFormatError

HEADER = struct.Struct("<8sHH")
FRAME = struct.Struct("<4sIII")
DEMOS = ["seed", "mlp", "nan", "control-flow"]


# -- traces and frames ---------------------------------------------------------------------------
_recorded = {}


def recorded(name, values="full"):
    """The Trace of a demo recorded once per test session (callers must not change it)."""
    key = (name, values)
    if key not in _recorded:
        with contextlib.redirect_stdout(io.StringIO()), gradviz.record(values=values) as rec:
            demos.run(name)
        _recorded[key] = rec.trace
    return _recorded[key]


class Encoded:
    """A trace's events, their frames, the whole file's bytes and where each frame ends."""

    def __init__(self, events):
        self.events = list(events)
        self.frames = [tf.encode_event(e) for e in self.events]
        self.data = tf.file_header() + b"".join(self.frames)
        self.starts, self.ends = [], []
        at = HEADER.size
        for f in self.frames:
            self.starts.append(at)
            at += len(f)
            self.ends.append(at)

    def whole_frames_before(self, offset):
        """How many frames end at or before ``offset``."""
        return sum(1 for end in self.ends if end <= offset)

    def frame_at(self, offset):
        """Index of the frame holding byte ``offset``."""
        return next(i for i, end in enumerate(self.ends) if offset < end)


_encoded = {}


def encoded(name, values="full"):
    key = (name, values)
    if key not in _encoded:
        _encoded[key] = Encoded(recorded(name, values).events)
    return _encoded[key]


def build_frame(meta, arrays=(), *, magic=b"GVEV", meta_len=None, n_arrays=None, crc=None):
    """A frame as the module docstring lays it out: ``arrays`` are (dtype code, shape, raw bytes)."""
    if not isinstance(meta, bytes):
        meta = json.dumps(meta).encode()
    parts = [meta]
    for code, shape, raw in arrays:
        parts.append(struct.pack("<BB", code, len(shape)) + struct.pack(f"<{len(shape)}Q", *shape) + raw)
    body = b"".join(parts)
    return FRAME.pack(magic, len(meta) if meta_len is None else meta_len,
                      len(arrays) if n_arrays is None else n_arrays,
                      zlib.crc32(body) if crc is None else crc) + body


def parse_frame(frame):
    """(metadata dict, [(dtype code, shape, raw bytes)]): an independent reader of the layout."""
    magic, meta_len, n_arrays, crc = FRAME.unpack_from(frame)
    assert magic == b"GVEV" and crc == zlib.crc32(frame[FRAME.size:])
    meta = json.loads(frame[FRAME.size:FRAME.size + meta_len].decode("utf-8"))
    at, arrays = FRAME.size + meta_len, []
    for _ in range(n_arrays):
        code, ndim = frame[at], frame[at + 1]
        shape = struct.unpack_from(f"<{ndim}Q", frame, at + 2)
        at += 2 + 8 * ndim
        nbytes = np.dtype(tf._DTYPES[code]).itemsize * math.prod(shape)
        arrays.append((code, shape, frame[at:at + nbytes]))
        at += nbytes
    assert at == len(frame)
    return meta, arrays


def decode(data, partial=False):
    return tf.decode_bytes(data, partial=partial)


def decode_frame(frame):
    """Decode a single crafted frame behind a good header."""
    return decode(tf.file_header() + frame)


def same_frames(events, frames):
    """Decoded events re-encode to exactly these frames (a byte-exact round trip)."""
    return [tf.encode_event(e) for e in events] == list(frames)


def summarize(a):
    with np.errstate(all="ignore"):  # float16 and extreme values overflow on the way: expected here
        return _summarize(a)


# -- exact comparison ----------------------------------------------------------------------------
def same_scalar(x, y):
    if type(x) is float and type(y) is float:
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return x == y and math.copysign(1, x) == math.copysign(1, y)
    return type(x) is type(y) and x == y


def assert_same_plain(x, y, where):
    if isinstance(x, tuple):
        assert isinstance(y, tuple) and len(x) == len(y), (where, x, y)
        for i, (a, b) in enumerate(zip(x, y)):
            assert_same_plain(a, b, f"{where}[{i}]")
    else:
        assert same_scalar(x, y), (where, x, y)


def assert_same_array(a, b, where):
    """Equal bit for bit (NaN payloads, signs of zeros included), as a little-endian C array."""
    expected = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")  # (ascontiguousarray makes 0-d 1-d)
    assert b.dtype == expected.dtype, (where, a.dtype, b.dtype)
    assert b.shape == expected.shape, (where, a.shape, b.shape)
    assert b.tobytes() == expected.tobytes(), where
    assert b.flags.c_contiguous and b.flags.writeable, where  # a copy, not a view of the file buffer


def assert_same_value(a, b, where):
    if a is None:
        assert b is None, where
        return
    assert isinstance(b, ev.Value), where
    for name in a.summary.__dataclass_fields__:
        assert_same_plain(getattr(a.summary, name), getattr(b.summary, name), f"{where}.summary.{name}")
    if a.array is None:
        assert b.array is None, where
    else:
        assert b.array is not None, where
        assert_same_array(a.array, b.array, where)


def assert_same_event(a, b, where="event"):
    assert type(a) is type(b), (where, a, b)
    for name in ev.event_fields(type(a)):
        x, y, w = getattr(a, name), getattr(b, name), f"{where} {type(a).__name__}.{name}"
        if isinstance(x, ev.Value) or (x is None and isinstance(y, ev.Value)):
            assert_same_value(x, y, w)
        elif isinstance(x, tuple) and any(isinstance(v, ev.Value) for v in x):
            assert isinstance(y, tuple) and len(x) == len(y), w
            for i, (u, v) in enumerate(zip(x, y)):
                assert_same_value(u, v, f"{w}[{i}]")
        elif isinstance(x, ev.Source):
            assert type(y) is ev.Source and x == y, w
        else:
            assert_same_plain(x, y, w)


def assert_same_events(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert_same_event(x, y, f"event {i}")


def all_values(events):
    for e in events:
        for name in ev.event_fields(type(e)):
            x = getattr(e, name)
            for v in (x if isinstance(x, tuple) else (x,)):
                if isinstance(v, ev.Value):
                    yield v


# -- 1. round trip -------------------------------------------------------------------------------
def graph_answers(t):
    return (sorted((k, sorted(d.items())) for k, d in t.graph.nodes(data=True)),
            sorted((u, v, sorted(d.items())) for u, v, d in t.graph.edges(data=True)))


@pytest.mark.parametrize("values", ["full", "summaries"])
@pytest.mark.parametrize("demo", DEMOS)
def test_demo_traces_round_trip(demo, values, tmp_path):
    original = recorded(demo, values)
    path = tmp_path / f"{demo}.gvz"
    original.save(path)
    loaded = gradviz.load(path)
    assert len(loaded.events) == len(original.events) > 10
    assert_same_events(original.events, loaded.events)
    kept = [v for v in all_values(loaded.events) if v.array is not None]
    assert (len(kept) > 10) if values == "full" else (kept == [])
    # The loaded trace answers the same questions.
    assert [(p.index, p.iteration, p.roots, p.order, p.finished) for p in loaded.passes] == \
        [(p.index, p.iteration, p.roots, p.order, p.finished) for p in original.passes]
    assert loaded.passes and all(p.finished and p.order for p in loaded.passes)
    assert graph_answers(loaded) == graph_answers(original)
    assert loaded.graph.number_of_nodes() == original.graph.number_of_nodes() > 3
    assert loaded.iterations == original.iterations
    assert [(s.index, s.params, s.update_norms, s.lr) for s in loaded.steps] == \
        [(s.index, s.params, s.update_norms, s.lr) for s in original.steps]
    names = {t.name for t in original.tensors.values() if t.name}
    for p in original.passes:
        for name in names:
            try:
                want = original.grad(name, p.index)
            except KeyError:
                with pytest.raises(KeyError):
                    loaded.grad(name, p.index)
                continue
            assert_same_value(want, loaded.grad(name, p.index), f"grad({name!r}) in pass {p.index}")
        for node in p.order:
            assert_same_value(original.grad(node, p.index), loaded.grad(node, p.index), f"grad(n{node})")


def test_seed_round_trip_real_values(tmp_path):
    path = tmp_path / "seed.gvz"
    recorded("seed").save(path)
    t = gradviz.load(path)
    assert t.grad("a").array.tolist() == [36.0, 81.0]  # 9 * a**2
    assert t.grad("b").array.tolist() == [-12.0, -8.0]  # -2 * b
    assert t.grad("a").array.dtype == np.float32
    assert t.grad("a").summary.norm == pytest.approx(math.hypot(36, 81))
    assert [t.nodes[n].op for n in t.passes[0].order] == \
        ["SubBackward0", "PowBackward0", "AccumulateGrad", "MulBackward0", "PowBackward0", "AccumulateGrad"]
    summaries = tmp_path / "seed-summaries.gvz"
    recorded("seed", "summaries").save(summaries)
    s = gradviz.load(summaries)
    assert s.grad("a").array is None and s.grad("a").summary.max == 81.0 and s.grad("a").summary.min == 36.0
    assert os.path.getsize(summaries) < os.path.getsize(path)


def test_recording_straight_to_a_file(tmp_path):
    path = tmp_path / "live.gvz"
    # (file_budget=None: every array, as recorded; the default budget's policy is tests/test_file_budget.py's)
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record(path=path, file_budget=None) as rec:
        demos.run("control-flow")
    assert_same_events(rec.trace.events, gradviz.load(path).events)


def test_a_program_ending_with_sys_exit_true_leaves_a_readable_trace(tmp_path):
    script = tmp_path / "exit_true.py"
    script.write_text("import sys\nsys.exit(True)\n")
    out = tmp_path / "t.gvz"
    subprocess.run([sys.executable, "-m", "gradviz.debug.session", "--output", str(out), "--values", "full", "--",
                    str(script)], capture_output=True, timeout=120)
    exited = [e for e in gradviz.load(out).events if isinstance(e, ev.ProgramExited)]
    assert [e.status for e in exited] == [1]


def test_nan_demo_keeps_nan_and_inf_bit_for_bit(tmp_path):
    path = tmp_path / "nan.gvz"
    recorded("nan").save(path)
    t = gradviz.load(path)
    arrays = [v.array for v in all_values(t.events) if v.array is not None]
    assert any(np.isnan(a).any() for a in arrays) and any(np.isinf(a).any() for a in arrays)
    assert any(v.summary.nan > 0 for v in all_values(t.events))
    assert any(v.summary.inf > 0 for v in all_values(t.events))
    grad = t.grad("p")  # the demo's p.grad: [[-0.6, -0.8], [nan, nan], [0.6, 0.8]]
    g = grad.array
    assert np.isnan(g[1]).all() and grad.summary.nan == 2
    assert g[0].tolist() == pytest.approx([-0.6, -0.8]) and g[2].tolist() == pytest.approx([0.6, 0.8])


def _arrays():
    i64 = np.iinfo(np.int64)
    return {
        "f32": np.array([1.5, -0.0, np.nan, np.inf, -np.inf, 1e-45, 3.4028235e38], np.float32),
        "f64": np.array([[0.1, -0.0], [np.nan, -np.inf], [5e-324, 1.7976931348623157e308]], np.float64),
        "f16": np.array([0.5, np.nan, -np.inf, 65504.0], np.float16),
        "f32 NaN payloads": np.array([0x7FC00001, 0xFFC00000, 0x7F800001, 0xFFFFFFFF], np.uint32).view(np.float32),
        "f64 NaN payloads": np.array([0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000001],
                                     np.uint64).view(np.float64),
        "i64": np.array([i64.min, -1, 0, 1, i64.max], np.int64),
        "i32": np.array([[-(2**31), 2**31 - 1]], np.int32),
        "i16": np.array([-(2**15), 7], np.int16),
        "i8": np.array([-128, 127], np.int8),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "bool": np.array([[True, False, True], [False, False, True]]),
        "c64": np.array([1 + 2j, np.nan - 1j, complex(np.inf, 0)], np.complex64),
        "c128": np.array([[0.1 - 0.0j], [5e-324 + 1.7976931348623157e308j]], np.complex128),
        "0-d f32": np.array(3.25, np.float32),
        "0-d f64 nan": np.array(np.nan),
        "0-d i64": np.array(-7, np.int64),
        "0-d bool": np.array(True),
        "empty f32": np.zeros((0,), np.float32),
        "empty 3-d f64": np.zeros((3, 0, 2), np.float64),
        "empty i64": np.zeros((0, 5), np.int64),
        "empty bool": np.zeros((2, 0), np.bool_),
        "strided": np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "big-endian": np.array([1.5, -2.0, np.inf], ">f8"),
        "many dims": np.ones((1,) * 32, np.float32),
    }


def synthetic_events():
    """Every event type, with values of every storable dtype and corner: a consistent trace."""
    vals = {k: ev.Value(summarize(a), a) for k, a in _arrays().items()}
    out = [ev.IterationStarted(0)]
    for i, (k, v) in enumerate(vals.items()):
        out.append(ev.TensorDescribed(i + 1, k, v.array.shape, v.array.dtype.str, False, "input", v))
    out.append(ev.TensorDescribed(2**70, None, (2, 3), "<f4", True, "leaf",
                                  ev.Value(summarize(np.ones((2, 3), np.float32)))))  # a summary only
    src = ev.Source("/tmp/ünïcode dir/prog.py", 12, "<module>")
    shared = vals["f32"]
    out += [
        ev.SourceText(src.file, src.line, "    y = (w * x).sum()  # ünïcode ✓ \t tab"),
        ev.NodeCreated(100, "MulBackward0", "grad_fn", 0, (1, 2), 50, (101, None), (7,), "<f4", "model.fc", src,
                       shared),
        ev.NodeCreated(101, "AccumulateGrad", "accumulate_grad", 0, (2**70,), 2**70, (), (2, 3), "<f4"),
        ev.NodeCreated(102, "SumBackward0", "grad_fn", 0, (), None, ()),
        ev.BackwardStarted(0, 0, (100,), (vals["0-d f32"], None)),
        ev.NodeEntered(0, 100, (shared, None, vals["i64"])),
        ev.NodeExited(0, 100, (vals["bool"], None)),
        ev.NodeEntered(0, 101, ()),
        ev.GradAccumulated(0, 101, 2**70, shared, shared),  # one Value in two fields
        ev.GradAccumulated(0, 101, 2**70, None, vals["empty 3-d f64"]),
        ev.NodeExited(0, 101, ()),
        ev.PassPlanned(0, (100, 101)),
        ev.BucketReduced(0, 1, (2**70, 1), 101),
        ev.BucketReduced(0, 0, (), None),
        ev.GradSynchronized(0, 2**70, vals["f64"]),
        ev.BackwardFinished(0),
        ev.OptimizerStep(0, "SGD", (1, 2**70), (float("nan"), float("inf"), -0.0, 5e-324, 1e308), 0.1),
        ev.OptimizerStep(1, "Adam", (), (), None),
        ev.RankInfo(3, 8, 1, "gloo"),
        ev.RankInfo(0, 1, 0),
        ev.ProgramOutput("stdout", "héllo ✓ 🎉 \x00 tab\t \"quoted\" \\ \udcff lone surrogate\n"),
        ev.ProgramOutput("stderr", ""),
        ev.Paused("breakpoint", "backward", 100, 0, (vals["f64"], None), (None,), "detail ✓", "Traceback..."),
        ev.Paused("entry", "program"),
        ev.TensorValue(1, vals["u8"]),
        ev.TensorValue(2, None, "no such tensor"),
        ev.NodeChecked(3, 100, '{"ok": true}'),
        ev.ProgramExited(-9, "Traceback (most recent call last):\n  ...\nRuntimeError: boom"),
        ev.ProgramExited(0),
    ]
    return out


def test_every_event_type_dtype_and_corner_round_trips(tmp_path):
    events = synthetic_events()
    assert {type(e).__name__ for e in events} == set(ev.EVENT_TYPES)
    assert {np.dtype(a.dtype.newbyteorder("<")).str for a in _arrays().values()} >= set(tf._DTYPES.values())
    path = tmp_path / "synthetic.gvz"
    tf.write_trace(path, events)
    back = tf.read_events(path)
    assert_same_events(events, back)
    assert same_frames(back, [tf.encode_event(e) for e in events])  # re-encoding is byte-identical
    # Spot checks of real values, beyond "equal to what went in".
    by_name = {e.name: e.value for e in back if isinstance(e, ev.TensorDescribed) and e.name}
    assert by_name["i64"].array.tolist() == [-(2**63), -1, 0, 1, 2**63 - 1]
    assert by_name["bool"].array.dtype == np.bool_ and by_name["bool"].array.tolist() == [[True, False, True],
                                                                                          [False, False, True]]
    assert by_name["0-d f32"].array.shape == () and by_name["0-d f32"].array.item() == 3.25
    assert by_name["empty 3-d f64"].array.shape == (3, 0, 2) and by_name["empty 3-d f64"].summary.numel == 0
    assert math.isnan(by_name["empty f32"].summary.min)
    assert by_name["f64 NaN payloads"].array.view(np.uint64).tolist() == \
        [0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000001]
    assert by_name["f32"].summary.nan == 1 and by_name["f32"].summary.inf == 2
    assert by_name["big-endian"].array.dtype == np.dtype("<f8") and by_name["big-endian"].array.tolist() == \
        [1.5, -2.0, math.inf]
    assert by_name["strided"].array.tolist() == [[0, 2, 4], [5, 7, 9], [10, 12, 14], [15, 17, 19]]
    shared = next(e for e in events if isinstance(e, ev.NodeCreated)).value
    assert shared.array is not None and shared.array.dtype == np.float32
    ga = next(e for e in back if isinstance(e, ev.GradAccumulated))
    assert ga.contribution is not ga.grad  # two copies of one value, each exact
    assert_same_value(shared, ga.contribution, "shared")
    assert_same_value(shared, ga.grad, "shared")
    out = next(e for e in back if isinstance(e, ev.ProgramOutput))
    assert out.text.endswith("\udcff lone surrogate\n")
    step = next(e for e in back if isinstance(e, ev.OptimizerStep))
    assert math.isnan(step.update_norms[0]) and step.update_norms[1:3] == (math.inf, 0.0)
    assert math.copysign(1, step.update_norms[2]) == -1 and step.update_norms[3] == 5e-324
    # As a Trace too.
    t = gradviz.load(path)
    assert t.passes[0].order == [100, 101] and t.passes[0].finished
    assert_same_value(shared, t.grad(100), "grad at n100")
    leaf_grad = t.grad("t" + str(2**70))
    assert leaf_grad.array.shape == (3, 0, 2) and leaf_grad.array.dtype == np.float64
    assert [s.lr for s in t.steps] == [0.1, None]
    assert [(b.bucket, b.params, b.after_node) for b in t.passes[0].buckets] == [(1, (2**70, 1), 101), (0, (), None)]
    assert t.passes[0].synchronized[2**70].summary.shape == (3, 2)  # the "f64" value
    assert (t.rank.rank, t.rank.world_size, t.rank.local_rank, t.rank.backend) == (0, 1, 0, "")


def test_object_arrays_cannot_be_written_and_the_dtype_table_has_none():
    assert not any(np.dtype(d).hasobject for d in tf._DTYPES.values())
    assert all(np.dtype(d).kind in "fiubc" for d in tf._DTYPES.values())
    for bad in (np.array([object(), 1], dtype=object), np.array(["text"]), np.array([1], np.uint32),
                np.array(["2020-01-01"], "datetime64[D]")):
        e = ev.TensorDescribed(1, "x", bad.shape, bad.dtype.str, False, "input",
                               ev.Value(summarize(np.zeros(bad.shape)), bad))
        with pytest.raises(TypeError, match="cannot store an array of dtype"):
            tf.encode_event(e)


# -- 2. the header -------------------------------------------------------------------------------
def test_header_layout_and_version():
    data = encoded("seed").data
    magic, version, flags = HEADER.unpack_from(data)
    assert magic == b"GRADVIZ\x00" and version == tf.FORMAT_VERSION == 3 and flags == 0
    assert data[HEADER.size:HEADER.size + 4] == b"GVEV"
    assert parse_frame(encoded("seed").frames[0])[0] == {"type": "IterationStarted", "fields": {"index": 0}}


@pytest.mark.parametrize("version", [0, 4, 0xFFFF])
@pytest.mark.parametrize("partial", [False, True])
def test_another_format_version_is_refused_naming_both(version, partial, tmp_path):
    path = tmp_path / "v.gvz"
    path.write_bytes(HEADER.pack(b"GRADVIZ\x00", version, 0) + encoded("seed").data[HEADER.size:])
    with pytest.raises(TraceFormatError) as info:
        gradviz.load(path, partial=partial)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"version {version}" in msg and f"version {tf.FORMAT_VERSION}" in msg, msg
    assert "not supported" in msg


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa",
    b"hello, this is a text file\nwith two lines\n",
    b'{"type": "IterationStarted", "fields": {"index": 0}}',
    b"PK\x03\x04" + bytes(40),  # a zip
    b"\x80\x04\x95" + pickle.dumps([1, 2, 3])[3:],  # a pickle
    b"x",
    b"GRADVIZ!" + bytes(4),  # close, but not the magic
    b"GVEV" + bytes(20),  # a frame without the file header
], ids=["png", "text", "json", "zip", "pickle", "one byte", "near magic", "bare frame"])
def test_non_gradviz_files_are_refused(content, tmp_path):
    path = tmp_path / "x.gvz"
    path.write_bytes(content)
    for partial in (False, True):
        with pytest.raises(TraceFormatError, match="not a gradviz trace") as info:
            gradviz.load(path, partial=partial)
        assert info.value.offset == 0


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gvz"
    path.write_bytes(b"")
    with pytest.raises(TraceFormatError, match="not a gradviz trace file: it is empty"):
        gradviz.load(path)
    # A file cut inside its header holds no event; partial=True gives an empty trace for it.
    assert gradviz.load(path, partial=True).events == []


def test_unknown_header_flags_are_refused(tmp_path):
    path = tmp_path / "f.gvz"
    path.write_bytes(HEADER.pack(b"GRADVIZ\x00", tf.FORMAT_VERSION, 4) + encoded("seed").data[HEADER.size:])
    for partial in (False, True):
        with pytest.raises(TraceFormatError, match="unknown trace header flags 0x4"):
            gradviz.load(path, partial=partial)


# -- 3. bad input --------------------------------------------------------------------------------
def test_every_truncation_point_of_a_real_trace():
    enc = encoded("seed")
    data = enc.data
    for cut in range(len(data)):
        cut_data = data[:cut]
        k = enc.whole_frames_before(cut)
        at_boundary = cut >= HEADER.size and (cut == HEADER.size or cut in enc.ends)
        if at_boundary:
            # The format has no end marker (a file being written is read as it grows): a cut
            # between frames is a shorter trace, not an error.
            assert same_frames(decode(cut_data), enc.frames[:k])
        else:
            with pytest.raises(TraceFormatError) as info:
                decode(cut_data)
            exc = info.value
            if cut < HEADER.size:
                assert exc.offset == cut and "not a gradviz trace file" in str(exc)
            else:
                start = enc.starts[k]  # the frame the cut falls in
                assert exc.offset == start and f"at byte offset {start}" in str(exc), (cut, str(exc))
                assert "truncated" in str(exc)
        got = decode(cut_data, partial=True)
        assert len(got) == k, cut
        # (Re-encoding every event at every cut would be slow: the last one, and all at some cuts.)
        if cut % 97 == 0 or at_boundary:
            assert same_frames(got, enc.frames[:k]), cut
        elif k:
            assert same_frames(got[-1:], enc.frames[k - 1:k]), cut


def test_truncated_files_through_load(tmp_path):
    enc = encoded("control-flow")
    path = tmp_path / "cut.gvz"
    cuts = sorted({HEADER.size + 3, enc.ends[0] + 1, enc.ends[3] - 1, enc.ends[10] + 17, enc.ends[-2] + 5,
                   len(enc.data) - 1} | set(range(enc.starts[20] + 1, enc.ends[20], 7)))
    for cut in cuts:
        path.write_bytes(enc.data[:cut])
        with pytest.raises(TraceFormatError, match=r"at byte offset \d+"):
            gradviz.load(path)
        t = gradviz.load(path, partial=True)
        k = enc.whole_frames_before(cut)
        assert len(t.events) == k and same_frames(t.events, enc.frames[:k])
    # A cut in the middle of the trace keeps the passes that were complete, and the graph.
    path.write_bytes(enc.data[:enc.ends[-2] + 5])
    t = gradviz.load(path, partial=True)
    full = recorded("control-flow")
    assert [p.order for p in t.passes] == [p.order for p in full.passes]
    assert [p.finished for p in t.passes] == [True] * (len(full.passes) - 1) + [False]


def test_partial_keeps_the_events_before_a_corrupt_frame_in_the_same_chunk(tmp_path):
    # All of a small file is one read: the events decoded before a bad frame must not be lost.
    enc = encoded("seed")
    for i in (0, 1, 5, len(enc.frames) - 1):
        bad = bytearray(enc.data)
        bad[enc.starts[i] + FRAME.size + 3] ^= 0x20
        path = tmp_path / "bad.gvz"
        path.write_bytes(bytes(bad))
        with pytest.raises(TraceFormatError, match=f"checksum mismatch.*at byte offset {enc.starts[i]}"):
            gradviz.load(path)
        t = gradviz.load(path, partial=True)
        assert same_frames(t.events, enc.frames[:i])


def _first_array_header(frame):
    """Offset in ``frame`` of its first array header (dtype code, ndim, dims) that is not a summary's
    record (version 3: u8, ``RECORD_BYTES`` long), or of its first array when all are."""
    _, meta_len, n_arrays, _ = FRAME.unpack_from(frame)
    assert n_arrays >= 1
    at = first = FRAME.size + meta_len
    for _ in range(n_arrays):
        code, ndim = frame[at], frame[at + 1]
        dims = struct.unpack_from(f"<{ndim}Q", frame, at + 2)
        if (code, dims) != (8, (tf.RECORD_BYTES,)):
            return at
        at += 2 + 8 * ndim + math.prod(dims)
    return first


def _frame_with_array(enc, ndim=1):
    return next(i for i, f in enumerate(enc.frames)
                if FRAME.unpack_from(f)[2] >= 1 and f[_first_array_header(f)] != 8 and
                f[_first_array_header(f) + 1] == ndim)


def test_a_100_GB_array_claim_is_refused_at_once_without_allocating(tmp_path):
    enc = encoded("seed")
    i = _frame_with_array(enc)
    frame = bytearray(enc.frames[i])
    at = _first_array_header(frame)
    assert frame[at] == 1  # float32
    claim = 25 * 10**9  # float32 elements: 100 GB
    struct.pack_into("<Q", frame, at + 2, claim)
    data = enc.data[:enc.starts[i]] + bytes(frame) + enc.data[enc.ends[i]:]
    path = tmp_path / "huge.gvz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(TraceFormatError) as info:
            gradviz.load(path)
        elapsed = time.perf_counter() - t0
        t = gradviz.load(path, partial=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert f"shape [{claim}]" in msg and f"claims {4 * claim} bytes" in msg, msg
    assert f"at byte offset {enc.starts[i]}" in msg
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)
    assert same_frames(t.events, enc.frames[:i])


def test_a_stream_decoder_holds_only_bytes_received():
    """A stream (no known size) cannot refuse a claim that may yet arrive, but holds only what came."""
    enc = encoded("seed")
    i = _frame_with_array(enc)
    frame = bytearray(enc.frames[i])
    struct.pack_into("<Q", frame, _first_array_header(frame) + 2, 25 * 10**9)
    dec = tf.StreamDecoder()
    got = dec.feed(enc.data[:enc.starts[i]])
    assert same_frames(got, enc.frames[:i])
    assert dec.feed(bytes(frame)) == [] and dec.pending_bytes() == len(frame)
    with pytest.raises(TraceFormatError, match=f"truncated event.*at byte offset {enc.starts[i]}"):
        dec.finish()


@pytest.mark.parametrize("shape", [(2**40, 2**40), (0, 2**63), (0, 2**64 - 1), (0, 2**40, 2**40), (2**64 - 1,)],
                         ids=["overflow", "empty huge", "empty max", "empty 3-d huge", "max"])
def test_impossible_array_shapes_are_refused(shape):
    # An empty array with absurd other dimensions has no bytes to claim, but numpy cannot make it.
    meta = {"type": "TensorValue", "fields": {"request": 1, "error": None, "name": None, "value": {
        "summary": summarize(np.zeros(0, np.float32)).to_dict() | {"shape": list(shape)}, "array": 0}}}
    data = tf.file_header() + build_frame(meta, [(1, shape, b"")])
    for size in (len(data), None):  # a file, and a stream that could still grow
        with pytest.raises(TraceFormatError, match=rf"an array of shape \[{shape[0]}, .*larger than any array can be"
                           if len(shape) > 1 else "claims|larger than any") as info:
            tf.StreamDecoder(total_size=size).feed(data)
        assert info.value.offset == HEADER.size + FRAME.size + len(json.dumps(meta))


def _meta_frame(fields_, arrays=(), type_="TensorValue"):
    return build_frame({"type": type_, "fields": fields_}, arrays)


def _value_dict(a, index):
    return {"summary": summarize(a).to_dict(), "array": index}


F32 = np.array([1.0, 2.0], np.float32)
F32_RAW = (1, (2,), F32.tobytes())


def test_a_crafted_frame_decodes():
    got = decode_frame(_meta_frame({"request": 3, "value": _value_dict(F32, 0), "error": None, "name": None}, arrays=[F32_RAW]))
    assert len(got) == 1 and got[0].request == 3 and got[0].value.array.tolist() == [1.0, 2.0]


BAD_FRAMES = {
    "not json": build_frame(b"{not json"),
    "not utf-8": build_frame(b'{"type": "\xff\xfe"}'),
    "empty meta": build_frame(b""),
    "json list": build_frame([1, 2]),
    "json null": build_frame(b"null"),
    "no fields": build_frame({"type": "IterationStarted"}),
    "extra key": build_frame({"type": "IterationStarted", "fields": {"index": 0}, "more": 1}),
    "fields not a dict": build_frame({"type": "IterationStarted", "fields": [0]}),
    "deep nesting": build_frame(b"[" * 200000 + b"]" * 200000),
    "huge int": build_frame(b'{"type": "IterationStarted", "fields": {"index": ' + b"9" * 5000 + b"}}"),
    "huge float": build_frame({"type": "OptimizerStep", "fields": {"index": 0, "optimizer": "SGD", "params": [],
                                                                  "update_norms": [], "lr": 10**400}}),
    "unknown type": build_frame({"type": "Foo", "fields": {}}),
    "type not a string": build_frame({"type": 7, "fields": {}}),
    "dunder type": build_frame({"type": "__class__", "fields": {}}),
    "Value is not an event": build_frame({"type": "Value", "fields": {"summary": None, "array": None}}),
    "missing field": build_frame({"type": "NodeEntered", "fields": {"pass_index": 0, "node": 1}}),
    "unknown field": build_frame({"type": "IterationStarted", "fields": {"index": 0, "extra": 1}}),
    "array index out of range": _meta_frame({"request": 1, "value": _value_dict(F32, 1), "error": None, "name": None}, [F32_RAW]),
    "negative array index": _meta_frame({"request": 1, "value": _value_dict(F32, -1), "error": None, "name": None}, [F32_RAW]),
    "array index, no arrays": _meta_frame({"request": 1, "value": _value_dict(F32, 0), "error": None, "name": None}),
    "array index a string": _meta_frame({"request": 1, "value": _value_dict(F32, "0"), "error": None, "name": None}, [F32_RAW]),
    "array index a bool": _meta_frame({"request": 1, "value": _value_dict(F32, False), "error": None, "name": None}, [F32_RAW]),
    "array used twice": build_frame({"type": "GradAccumulated", "fields": {
        "pass_index": 0, "node": 1, "tensor": 2, "contribution": _value_dict(F32, 0), "grad": _value_dict(F32, 0)}},
        [F32_RAW]),
    "array of no value": _meta_frame({"request": 1, "value": _value_dict(F32, 0), "error": None, "name": None},
                                     [F32_RAW, F32_RAW]),
    "shape disagrees with summary": _meta_frame({"request": 1, "value": _value_dict(F32, 0), "error": None, "name": None},
                                                [(1, (1, 2), F32.tobytes())]),
    "0-d array, 1-element summary": _meta_frame({"request": 1, "value": _value_dict(np.zeros(1, np.float32), 0),
                                                 "error": None, "name": None}, [(1, (), bytes(4))]),
    "ndim too large": _meta_frame({"request": 1, "value": None, "error": None, "name": None}, [(1, (1,) * 33, bytes(4))]),
    "too many arrays": build_frame(b"{}", n_arrays=tf.MAX_ARRAYS + 1),
    "meta too long": build_frame(b"{}", meta_len=tf.MAX_META_BYTES + 1),
    "bad crc": build_frame({"type": "IterationStarted", "fields": {"index": 0}}, crc=12345),
    "bad frame magic": build_frame({"type": "IterationStarted", "fields": {"index": 0}}, magic=b"GVEX"),
    "summary missing a field": _meta_frame({"request": 1, "error": None, "value": {
        "summary": {k: v for k, v in summarize(F32).to_dict().items() if k != "norm"}, "array": None}}),
    "summary with 63 bins": _meta_frame({"request": 1, "error": None, "value": {
        "summary": summarize(F32).to_dict() | {"hist": [0] * 63}, "array": None}}),
    "negative count": _meta_frame({"request": 1, "error": None, "value": {
        "summary": summarize(F32).to_dict() | {"nan": -1}, "array": None}}),
    "negative dimension": _meta_frame({"request": 1, "error": None, "value": {
        "summary": summarize(F32).to_dict() | {"shape": [-2]}, "array": None}}),
    "null where an int is due": build_frame({"type": "NodeEntered", "fields": {
        "pass_index": 0, "node": None, "grad_outputs": []}}),
    "null pass index": build_frame({"type": "BackwardFinished", "fields": {"pass_index": None}}),
    "source too short": build_frame({"type": "NodeCreated", "fields": {
        "id": 1, "op": "X", "kind": "grad_fn", "iteration": 0, "inputs": [], "output": None, "next_nodes": [],
        "output_shape": [], "output_dtype": "", "scope": "", "source": ["f.py", 1], "value": None}}),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frames_are_format_errors(name):
    enc = encoded("seed")
    frame = BAD_FRAMES[name]
    data = enc.data[:enc.ends[2]] + frame + enc.data[enc.ends[2]:]
    with pytest.raises(TraceFormatError) as info:
        decode(data)
    assert info.value.offset is not None and info.value.offset >= enc.ends[2]
    assert f"at byte offset {info.value.offset}" in str(info.value)
    assert same_frames(decode(data, partial=True), enc.frames[:3])


@pytest.mark.parametrize("name, pattern", [
    ("not json", "not valid JSON"), ("unknown type", "unknown event type 'Foo'"),
    ("missing field", r"missing fields \['grad_outputs'\]"), ("array index out of range", "array index 1"),
    ("shape disagrees with summary", r"shape \(1, 2\) but its summary says \(2,\)"),
    ("huge float", "too large"), ("null where an int is due", "'node' of a NodeEntered event should not be null"),
    ("bad crc", "checksum mismatch"), ("ndim too large", "33 dimensions"),
])
def test_bad_frame_messages_say_what_is_wrong(name, pattern):
    with pytest.raises(TraceFormatError, match=pattern):
        decode_frame(BAD_FRAMES[name])


def test_every_dtype_code_outside_the_table_is_refused():
    allowed = set(tf._DTYPES)
    assert allowed == set(range(1, 12))
    for code in range(256):
        frame = _meta_frame({"request": 1, "value": _value_dict(np.zeros(8, np.uint8), 0), "error": None, "name": None},
                            [(code, (8,), bytes(64))])
        if code in allowed:
            continue
        with pytest.raises(TraceFormatError, match=f"unknown dtype code {code}"):
            decode_frame(frame)


_PWNED = []


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_where_an_array_should_be_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)), protocol=2)
    assert marker.exists() is False
    calls = []
    for mod, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (np, "load")):
        monkeypatch.setattr(mod, name, lambda *a, _n=name, **k: calls.append(_n))
    # An object array's code does not exist: numpy's object type number (17), 'O', the pickle opcode.
    for code in (0, 17, ord("O"), 0x80, 255):
        frame = _meta_frame({"request": 1, "value": _value_dict(np.zeros(len(payload), np.uint8), 0),
                             "error": None, "name": None}, [(code, (len(payload),), payload)])
        with pytest.raises(TraceFormatError, match="unknown dtype code"):
            decode_frame(frame)
    # As uint8 data the payload is just bytes.
    frame = _meta_frame({"request": 1, "value": _value_dict(np.zeros(len(payload), np.uint8), 0), "error": None, "name": None},
                        [(8, (len(payload),), payload)])
    path = tmp_path / "pickle.gvz"
    path.write_bytes(tf.file_header() + frame)
    (e,) = gradviz.load(path).events
    assert e.value.array.dtype == np.uint8 and e.value.array.tobytes() == payload
    # The pickle in the metadata, as a string: text.
    meta = {"type": "ProgramOutput", "fields": {"stream": "stdout", "text": payload.decode("latin-1")}}
    (e,) = decode_frame(build_frame(meta))
    assert e.text.encode("latin-1") == payload
    assert not marker.exists() and calls == []


def _sample_of_every_event_type():
    """One real (or synthetic) event of each type, its frame parsed."""
    seen = {}
    for e in recorded("mlp").events + synthetic_events():
        name = type(e).__name__
        has_values = any(isinstance(v, ev.Value) for v in all_values([e]))
        if name not in seen or (has_values and not seen[name][1]):
            seen[name] = (e, has_values)
    assert set(seen) == set(ev.EVENT_TYPES)
    return {name: parse_frame(tf.encode_event(e)) for name, (e, _) in seen.items()}


NULLABLE = {"TensorDescribed": {"name", "value"}, "NodeCreated": {"output", "source", "value"},
            "GradAccumulated": {"contribution", "grad"}, "OptimizerStep": {"lr"}, "ProgramExited": {"error"},
            "Paused": {"node", "pass_index", "traceback"}, "TensorValue": {"value", "error", "name"},
            "BucketReduced": {"after_node"}, "GradSynchronized": {"grad"}, "NodeChecked": {"node"}}


def _wrong(x):
    """JSON values of the wrong type for a place that holds ``x``."""
    if x is None:
        return [True, {"z": 1}]
    if type(x) is bool:
        return [1, 0, "true", [x], {}]
    if type(x) is int:
        return ["1", 1.5, True, [x], {}]
    if type(x) is float:
        return [str(x), True, [x], {}]
    if type(x) is str:
        return [1, 1.5, True, [x], {}]
    if type(x) is list:
        return ["x", 1, True, {}]
    return ["x", 1, True, []]


def _mutations(doc, path=()):
    """(path, replacement) for every place in ``doc`` and every wrong value for it, recursively."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        for w in _wrong(v):
            yield path + (k,), w
        if isinstance(v, (dict, list)):
            yield from _mutations(v, path + (k,))


def _replaced(doc, path, value):
    doc = json.loads(json.dumps(doc))
    at = doc
    for k in path[:-1]:
        at = at[k]
    at[path[-1]] = value
    return doc


def test_wrong_field_types_missing_and_unknown_fields_are_refused():
    tried = 0
    for name, (meta, arrays) in _sample_of_every_event_type().items():
        assert decode_frame(build_frame(meta, arrays))  # the sample itself is good
        fields_ = meta["fields"]
        for f in fields_:
            # null is a value only where the event's field is Optional
            frame = build_frame(_replaced(meta, ("fields", f), None), arrays)
            if f not in NULLABLE.get(name, ()):
                with pytest.raises(TraceFormatError, match="should not be null|should be"):
                    decode_frame(frame)
            elif isinstance(fields_[f], dict) and fields_[f]["array"] is not None:
                left = 1 + ("record" in fields_[f]["summary"])  # (and its summary's record, version 3)
                with pytest.raises(TraceFormatError, match=f"{left} arrays of this frame belong to no value"):
                    decode_frame(frame)  # its array is left over
            else:
                assert getattr(decode_frame(frame)[0], f) is None
            missing = json.loads(json.dumps(meta))
            del missing["fields"][f]
            with pytest.raises(TraceFormatError, match="missing fields"):
                decode_frame(build_frame(missing, arrays))
        for path, wrong in _mutations(fields_, ("fields",)):
            with pytest.raises(TraceFormatError):
                decode_frame(build_frame(_replaced(meta, path, wrong), arrays))
            tried += 1
        extra = json.loads(json.dumps(meta))
        extra["fields"]["zzz"] = 1
        with pytest.raises(TraceFormatError, match=r"unknown fields \['zzz'\]"):
            decode_frame(build_frame(extra, arrays))
    assert tried > 500


# -- 4. fuzzing ----------------------------------------------------------------------------------
FUZZ = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
traces = st.sampled_from(["seed", "mlp"])


def check_mutant(enc, mutant, *, exact=True, aligned_deletion=None):
    """``mutant`` (the bytes of a changed real trace) decodes to every complete frame before its
    first changed byte, or raises TraceFormatError; never anything else."""
    data = enc.data
    first = next((i for i, (a, b) in enumerate(zip(data, mutant)) if a != b), min(len(data), len(mutant)))
    header_ok = mutant[:HEADER.size] == data[:HEADER.size]
    try:
        whole = decode(mutant)
    except TraceFormatError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(mutant)
        whole = None
    try:
        got = decode(mutant, partial=True)
    except tf.TraceHeaderError:
        assert not header_ok and not data.startswith(mutant)  # only a wrong header raises
        assert whole is None
        return
    except TraceFormatError:  # pragma: no cover - the property failing
        raise AssertionError("partial=True raised for a file with a good header") from None
    if not header_ok and len(mutant) >= HEADER.size and mutant[:8] + mutant[10:12] == data[:8] + data[10:12] and \
            1 <= HEADER.unpack_from(mutant)[1] < tf.FORMAT_VERSION:
        return  # an older version's header: read as such, to its first frame it cannot read (checked above)
    if not header_ok:
        assert data.startswith(mutant) and got == [] and whole is None  # cut inside the header
        return
    k = enc.whole_frames_before(first)
    assert len(got) >= k and same_frames(got[:k], enc.frames[:k])
    # Whatever decoded came from exactly those bytes of the mutant.
    assert mutant.startswith(tf.file_header() + b"".join(tf.encode_event(e) for e in got))
    if aligned_deletion is not None:
        a, b = aligned_deletion
        assert same_frames(got, enc.frames[:a] + enc.frames[b:])
        assert whole is not None and same_frames(whole, enc.frames[:a] + enc.frames[b:])
    elif exact:
        assert len(got) == k
        if whole is not None:  # only when the mutant is a shorter trace
            assert same_frames(whole, enc.frames[:k]) and len(mutant) == HEADER.size + sum(map(len, enc.frames[:k]))
    if whole is not None:
        assert same_frames(whole, [tf.encode_event(e) for e in got])


@settings(FUZZ, max_examples=300)
@given(traces, st.data())
def test_fuzz_truncation(name, data):
    enc = encoded(name)
    cut = data.draw(st.integers(0, len(enc.data) - 1) | st.sampled_from(enc.ends[:-1]), label="cut")
    check_mutant(enc, enc.data[:cut])


@settings(FUZZ, max_examples=600)
@given(traces, st.data())
def test_fuzz_single_bit_flip(name, data):
    enc = encoded(name)
    pos = data.draw(st.integers(0, len(enc.data) - 1), label="pos")
    mutant = bytearray(enc.data)
    mutant[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    check_mutant(enc, bytes(mutant))


@FUZZ
@given(traces, st.data())
def test_fuzz_several_bit_flips(name, data):
    enc = encoded(name)
    n = len(enc.data)
    near = data.draw(st.booleans(), label="clustered")
    base = data.draw(st.integers(0, n - 1), label="base")
    positions = data.draw(st.lists(st.integers(base, min(n - 1, base + 64)) if near else st.integers(0, n - 1),
                                   min_size=2, max_size=12), label="positions")
    mutant = bytearray(enc.data)
    for p in positions:
        mutant[p] ^= 1 << data.draw(st.integers(0, 7))
    check_mutant(enc, bytes(mutant))


@settings(FUZZ, max_examples=300)
@given(traces, st.data())
def test_fuzz_inserted_bytes(name, data):
    enc = encoded(name)
    pos = data.draw(st.integers(0, len(enc.data)) | st.sampled_from(enc.ends), label="pos")
    extra = data.draw(st.binary(min_size=1, max_size=40) | st.sampled_from([b"GVEV", b"GV", bytes(16)]),
                      label="extra")
    check_mutant(enc, enc.data[:pos] + extra + enc.data[pos:])


@FUZZ
@given(traces, st.data())
def test_fuzz_deleted_range(name, data):
    enc = encoded(name)
    n = len(enc.data)
    i = data.draw(st.integers(0, n - 1) | st.sampled_from(enc.starts), label="i")
    j = data.draw(st.integers(i + 1, min(n, i + 5000)) | st.sampled_from([e for e in enc.ends if e > i] or [n]),
                  label="j")
    check_mutant(enc, enc.data[:i] + enc.data[j:], aligned_deletion=whole_frame_deletion(enc, i, j))


def whole_frame_deletion(enc, i, j):
    """(a, b) where deleting bytes [i, j) leaves exactly what deleting frames a..b-1 would: when
    i and j are frame boundaries, or (some frames of a trace are identical) the same distance into
    two frames with the same bytes before it."""
    bounds = [HEADER.size] + enc.ends
    for a, start in enumerate(bounds[:-1]):
        if start > i:
            break
        other = j - (i - start)
        if other in bounds and enc.data[start:i] == enc.data[other:j]:
            return a, bounds.index(other)
    # or the same distance before the ends of two frames with the same bytes after it: the frame
    # holding i keeps its head and takes the other's identical tail
    import bisect
    fa, fb = bisect.bisect_right(bounds, i) - 1, bisect.bisect_right(bounds, j) - 1
    if fb + 1 < len(bounds) and fa + 1 < len(bounds):
        ea, eb = bounds[fa + 1], bounds[fb + 1]
        if ea - i == eb - j and enc.data[i:ea] == enc.data[j:eb]:
            return fa + 1, fb + 1
    return None


@FUZZ
@given(traces, st.data())
def test_fuzz_overwritten_range(name, data):
    enc = encoded(name)
    n = len(enc.data)
    i = data.draw(st.integers(0, n - 1), label="i")
    new = data.draw(st.binary(min_size=1, max_size=64) | st.sampled_from([b"\x00" * 8, b"\xff" * 8]), label="new")
    check_mutant(enc, enc.data[:i] + new + enc.data[i + len(new):])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**80), 2**80) | st.floats() |
    st.text(max_size=8) | st.sampled_from([10**400, -(10**400), 2**64, -1, 0, "", "NodeEntered"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
# Values that break a naive reader, drawn as often as all other JSON values together.
edge_values = st.sampled_from([10**400, -(10**400), 10**309, 2**64, 2**63, -1, 0, 1.5, float("nan"), float("inf"),
                               None,
                               True, False, "", "x", [], {}, [None], [-1], [2**70], {"summary": None, "array": None}])
replacement_values = st.one_of(edge_values, json_values)
edge_dims = st.sampled_from([0, 1, 2, 3, 2**31, 2**32 + 1, 2**40, 2**62, 2**63, 2**64 - 1])


@settings(FUZZ, max_examples=800)
@given(st.data())
def test_fuzz_metadata_with_good_checksums(data):
    """Frames whose checksum is right but whose metadata is mangled: decode_event's checks."""
    samples = _samples()
    name = data.draw(st.sampled_from(sorted(samples)), label="type")
    meta, arrays = samples[name]
    # Each place once (of a histogram's 64 counts, two), so every kind of field is drawn often.
    places = sorted({(p, None) for p, _ in _mutations(meta) if not (len(p) > 2 and p[-2] == "hist" and p[-1] > 1)},
                    key=repr)
    how = data.draw(st.sampled_from(["replace", "replace", "delete", "add", "bytes"]), label="how")
    if how == "replace":
        path, _ = data.draw(st.sampled_from(places), label="path")
        meta = _replaced(meta, path, data.draw(replacement_values, label="value"))
    elif how == "delete":
        path, _ = data.draw(st.sampled_from(places), label="path")
        meta = json.loads(json.dumps(meta))
        at = meta
        for k in path[:-1]:
            at = at[k]
        del at[path[-1]]
    elif how == "add":
        dict_paths = [()] + sorted({p for p, _ in places if isinstance(_get(meta, p), dict)}, key=repr)
        path = data.draw(st.sampled_from(dict_paths), label="path")
        grown = dict(_get(meta, path))
        grown[data.draw(st.text(max_size=6), label="key")] = data.draw(replacement_values, label="value")
        meta = _replaced(meta, path, grown) if path else grown
    raw = json.dumps(meta).encode()
    if how == "bytes":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:pos] + data.draw(st.binary(min_size=0, max_size=4)) + raw[pos + 1:]
    if data.draw(st.booleans(), label="mangle arrays") and arrays:
        k = data.draw(st.integers(0, len(arrays) - 1))
        code, shape, body = arrays[k]
        code = data.draw(st.sampled_from([code, 1, 2, 4, 8, 9, 0, 77]), label="code")
        shape = tuple(data.draw(st.lists(edge_dims | st.integers(0, 2**64 - 1), max_size=4), label="shape"))
        if code in tf._DTYPES:  # the data to match the new shape, where that is small enough to give
            nbytes = np.dtype(tf._DTYPES[code]).itemsize * math.prod(shape)
            if nbytes <= 1 << 16:
                body = ((body or b"\x01") * (nbytes // max(len(body), 1) + 1))[:nbytes]
        arrays = arrays[:k] + [(code, shape, body)] + arrays[k + 1:]
    check_decodes_or_format_error(build_frame(raw, arrays))


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


_samples_cache = []


def _samples():
    if not _samples_cache:
        _samples_cache.append(_sample_of_every_event_type())
    return _samples_cache[0]


def check_decodes_or_format_error(frame):
    data = tf.file_header() + frame
    try:
        got = decode(data)
    except TraceFormatError as exc:
        assert HEADER.size <= exc.offset < len(data)  # somewhere in the frame
        got = []
    else:
        assert len(got) == 1 and type(got[0]).__name__ in ev.EVENT_TYPES
    # What decodes is a well-formed event: it encodes again, and decodes to the same bytes.
    again = [tf.encode_event(e) for e in got]
    assert same_frames(decode(tf.file_header() + b"".join(again)), again)
    assert same_frames(decode(data, partial=True), again)


@settings(FUZZ, max_examples=150)
@given(st.data())
def test_fuzz_through_load_on_files(tmp_path_factory, data):
    enc = encoded("seed")
    n = len(enc.data)
    how = data.draw(st.sampled_from(["cut", "flip", "insert", "delete", "overwrite"]))
    i = data.draw(st.integers(0, n - 1))
    blob = data.draw(st.binary(min_size=1, max_size=16))
    mutant = {"cut": enc.data[:i],
              "flip": enc.data[:i] + bytes([enc.data[i] ^ 0x10]) + enc.data[i + 1:],
              "insert": enc.data[:i] + blob + enc.data[i:],
              "delete": enc.data[:i] + enc.data[i + len(blob):],
              "overwrite": enc.data[:i] + blob + enc.data[i + len(blob):]}[how]
    path = tmp_path_factory.getbasetemp() / "fuzz.gvz"
    path.write_bytes(mutant)
    try:
        t = gradviz.load(path)
        assert len(t.events) <= len(enc.events)
    except TraceFormatError as exc:
        assert "offset" in str(exc) or "consistent" in str(exc)
    try:
        t = gradviz.load(path, partial=True)
    except tf.TraceHeaderError:
        assert i < HEADER.size
    else:
        first = next((j for j, (a, b) in enumerate(zip(enc.data, mutant)) if a != b), min(n, len(mutant)))
        k = enc.whole_frames_before(first)
        assert len(t.events) >= k and same_frames(t.events[:k], enc.frames[:k])


# -- 5. following a file being written -----------------------------------------------------------
def test_follower_sees_exactly_the_completed_events(tmp_path):
    enc = encoded("seed")
    path = tmp_path / "live.gvz"
    f = open(path, "wb")  # noqa: SIM115 (the writer and the follower share it; closed below)
    writer = tf.TraceWriter(f)
    follower = tf.TraceFollower(path)
    try:
        assert follower.poll() == []
        i = _frame_with_array(enc)
        assert i >= 1
        for j, e in enumerate(enc.events[:i]):
            writer.write(e)
            got = follower.poll()
            assert len(got) == 1 and same_frames(got, [enc.frames[j]])
            assert follower.poll() == []
        # A frame split at every kind of place: in the magic, the frame header, the metadata, an
        # array header, the array data; nothing comes until its last byte does.
        frame = enc.frames[i]
        at = _first_array_header(frame)
        cuts = [0, 2, 4, 15, 16, 40, at, at + 1, at + 5, at + 10, len(frame) - 1]
        for a, b in zip(cuts, cuts[1:] + [len(frame)]):
            f.write(frame[a:b])
            f.flush()
            got = follower.poll()
            if b < len(frame):
                assert got == [], (a, b)
            else:
                assert same_frames(got, [frame])
                assert_same_event(enc.events[i], got[0])
        # Two frames and half of a third in one write.
        rest = b"".join(enc.frames[i + 1:i + 3]) + enc.frames[i + 3][:20]
        f.write(rest)
        f.flush()
        assert same_frames(follower.poll(), enc.frames[i + 1:i + 3])
        f.write(enc.frames[i + 3][20:])
        f.flush()
        assert same_frames(follower.poll(), [enc.frames[i + 3]])
        for j, e in enumerate(enc.events[i + 4:], i + 4):
            writer.write(e)
            assert same_frames(follower.poll(), [enc.frames[j]])
        assert follower.poll() == []
    finally:
        writer.close()
        f.close()
        follower.close()
    assert_same_events(enc.events, gradviz.load(path).events)


def test_follower_from_before_the_header_is_written(tmp_path):
    enc = encoded("control-flow")
    path = tmp_path / "live.gvz"
    path.write_bytes(b"")
    follower = tf.TraceFollower(path)
    with open(path, "ab") as f:
        f.write(enc.data[:5])
        f.flush()
        assert follower.poll() == []
        f.write(enc.data[5:HEADER.size])
        f.flush()
        assert follower.poll() == []
        got = []
        pieces = [HEADER.size] + list(range(HEADER.size + 1, len(enc.data), 997)) + [len(enc.data)]
        for a, b in zip(pieces, pieces[1:]):
            f.write(enc.data[a:b])
            f.flush()
            new = follower.poll()
            got += new
            assert len(got) == enc.whole_frames_before(b)
    follower.close()
    assert same_frames(got, enc.frames)


def test_follower_reports_a_corrupt_frame_with_the_events_before_it(tmp_path):
    enc = encoded("seed")
    path = tmp_path / "live.gvz"
    bad = bytearray(enc.data)
    bad[enc.starts[4] + 20] ^= 1
    path.write_bytes(bytes(bad))
    follower = tf.TraceFollower(path)
    with pytest.raises(TraceFormatError, match=f"at byte offset {enc.starts[4]}") as info:
        follower.poll()
    follower.close()
    assert same_frames(info.value.events, enc.frames[:4])


@pytest.mark.parametrize("demo", ["seed", "nan", "control-flow"])
def test_decoder_fed_one_byte_at_a_time(demo):
    enc = encoded(demo)
    dec = tf.StreamDecoder()
    got, when = [], []
    for i in range(len(enc.data)):
        new = dec.feed(enc.data[i:i + 1])
        got += new
        when += [i + 1] * len(new)
    dec.finish()
    assert when == enc.ends  # each event exactly when the last byte of its frame arrived
    assert same_frames(got, enc.frames)
    assert_same_events(enc.events, got)
    whole = tf.StreamDecoder()
    assert same_frames(whole.feed(enc.data), enc.frames)
    assert whole.pending_bytes() == 0 and whole.events_read == len(enc.frames) and whole.offset == len(enc.data)


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_decoder_fed_in_random_pieces(data):
    enc = encoded("mlp")
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(enc.data) - 1), max_size=40), label="cuts")))
    dec = tf.StreamDecoder()
    got = []
    for a, b in zip([0] + cuts, cuts + [len(enc.data)]):
        got += dec.feed(enc.data[a:b])
        assert len(got) == enc.whole_frames_before(b)
    dec.finish()
    assert same_frames(got, enc.frames)


def test_a_summary_without_mean_abs_still_loads(tmp_path):
    """Traces written before summaries kept mean |x| load, with NaN in its place."""
    import json
    from gradviz.trace import gvz as tracefile
    from gradviz.summary import summarize
    s = summarize(np.array([1.0, -3.0], dtype=np.float32))
    assert s.mean_abs == 2.0
    d = s.to_dict()
    d["hist"] = list(d["hist"])
    d["shape"] = list(d["shape"])
    del d["mean_abs"]
    old = tracefile._summary(json.loads(json.dumps(d)), 0)
    assert np.isnan(old.mean_abs) and (old.min, old.max, old.norm) == (s.min, s.max, s.norm)
    d["extra"] = 1
    with pytest.raises(gradviz.TraceFormatError, match="missing or unknown fields"):
        tracefile._summary(d, 0)
