"""Trace files (``.gvz``): the event stream itself, framed, so that one format carries a live stream
from a running program and a file on disk, and a file still being written can be followed.

Layout (all integers little-endian):

    file header   b"GRADVIZ\\0"  u16 format version  u16 flags (0)
    frame         b"GVEV"  u32 meta length  u32 array count  u32 CRC-32 of everything after it
                  meta: UTF-8 JSON {"type": event name, "fields": {...}}
                  per array: u8 dtype code  u8 ndim  ndim x u64 dims  raw C-order bytes

Version 2 adds array and note frames (gradviz.trace.budget); version 3 writes each value's summary
as a binary record among its frame's arrays (``_RECORD``) instead of a JSON object (docs/events.md).

Arrays are plain numbers of a fixed list of dtypes, and the metadata is JSON checked field by field:
nothing in a file can run code. Every way a file can be wrong raises ``TraceFormatError`` (a
``ValueError``) naming what is wrong and where; no length field is trusted beyond the bytes that
actually arrived. There is no end marker (a file being written is readable as it grows), so a file
cut exactly between two frames reads as a shorter trace; a cut anywhere else is an error.
"""
from __future__ import annotations

import functools
import json
import math
import os
import struct
import sys
import zlib
from dataclasses import fields

import numpy as np

from gradviz import events as ev
from gradviz.summary import EXACT_LIMIT, HIST_BINS, Summary, interned

MAGIC = b"GRADVIZ\x00"
FORMAT_VERSION = 3
FRAME_MAGIC = b"GVEV"
ARRAY_MAGIC = b"GVAR"  # version 2: one array, named by a ref, that values of earlier or later events name
NOTE_MAGIC = b"GVNT"  # version 2: a JSON note about the file (its value policy, what it dropped)
_MAGICS = {1: (FRAME_MAGIC,), 2: (FRAME_MAGIC, ARRAY_MAGIC, NOTE_MAGIC), 3: (FRAME_MAGIC, ARRAY_MAGIC, NOTE_MAGIC)}
# Version 3: a value's summary is a fixed binary record, an array of the frame (u8, RECORD_BYTES
# long) that {"shape": [...], "dtype": "...", "record": k} names: numel, nan, inf (i64); min, max,
# mean, std, norm, hist_lo, hist_hi, mean_abs, zeros (f64); sampled (u8, 0 or 1); the histogram's
# counts (HIST_BINS x u32). Nine floats and 64 counts written as text took most of the encoding
# (and of the reading). A summary that does not fit a record (a count of 2**32 or more) is written
# as version 2 writes it, a JSON object, which version 3 reads too.
_RECORD = struct.Struct(f"<3q9dB{HIST_BINS}I")
RECORD_BYTES = _RECORD.size
_RECORD_CODE = 8  # u8
_CONSUMED = object()  # a frame that held no event (an array or a note)
_FILE_HEADER = struct.Struct("<8sHH")
_FRAME_HEADER = struct.Struct("<4sIII")
MAX_META_BYTES = 64 * 2**20
# Arrays in one frame: a sanity bound on a header's count (each array's own header and bytes are
# checked as they come). Every value of an event may hold two (its summary's record and its array),
# and one event may carry thousands of values (the backward node of a cat of 2,000 tensors).
MAX_ARRAYS = 1 << 24
MAX_NDIM = 32
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max  # no array, even an empty one, may claim more
MAX_FRAME_BYTES = 2**31  # one event in a file, arrays and all: a claim beyond fails before allocating

_DTYPES = {1: "<f4", 2: "<f8", 3: "<f2", 4: "<i8", 5: "<i4", 6: "<i2", 7: "|i1", 8: "|u1", 9: "|b1",
           10: "<c8", 11: "<c16"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class TraceFormatError(ValueError):
    """A trace file or stream that is not a valid gradviz trace: says what and at which offset.
    Raised by ``StreamDecoder.feed``, ``events`` holds the events that call completed before the
    bad bytes (they are good: a caller keeping everything before a corruption wants them)."""

    def __init__(self, message, offset=None):
        self.offset = offset
        self.events = []
        super().__init__(message if offset is None else f"{message} (at byte offset {offset})")


class TraceHeaderError(TraceFormatError):
    """The file header is wrong: not a gradviz trace at all, or another format version. Nothing in
    such a file can be read, so ``load(path, partial=True)`` raises it too."""


# -- encoding ------------------------------------------------------------------------------------
def file_header(version=FORMAT_VERSION):
    return _FILE_HEADER.pack(MAGIC, version, 0)


INLINE, SUMMARY_ONLY = -1, -2  # what ``place`` may say of a value besides an array ref


def _encode_value(v, arrays, place):
    """A value as ``encode_event`` once built it for ``json.dumps`` (the reference: ``event_doc``)."""
    if v is None:
        return None
    index = None
    if v.array is not None:
        where = INLINE if place is None else place(v)
        if where >= 0:
            return {"summary": v.summary.to_dict(), "ref": where}
        if where == INLINE:
            index = len(arrays)
            arrays.append(v.array)
    return {"summary": v.summary.to_dict(), "array": index}


_VALUE_FIELDS = {"value", "contribution", "grad"}
_VALUE_TUPLES = {"grads", "grad_outputs", "grad_inputs"}
_VALUE, _VALUES, _SOURCE, _OTHER = range(4)
_PLANS = {}  # event class -> (JSON text before its first field, ((field, its kind, '"field":'), ...))


def _plan(cls):
    """How ``cls``'s events are encoded: its fields in order, each with its kind and its JSON key,
    worked out once per class (dataclasses.fields per event was a tenth of the encoding)."""
    plan = _PLANS.get(cls)
    if plan is None:
        names = ev.event_fields(cls)
        kinds = [_VALUE if n in _VALUE_FIELDS else _VALUES if n in _VALUE_TUPLES else _SOURCE if n == "source"
                 else _OTHER for n in names]
        head = '{"type":' + _dumps(cls.__name__) + ',"fields":{'
        plan = _PLANS[cls] = (head, tuple((n, k, ("," if i else "") + _dumps(n) + ":")
                                          for i, (n, k) in enumerate(zip(names, kinds))))
    return plan


_GETTERS = {}  # event class -> a function of an event: its values (see values_of)


def values_of(e):
    """The values an event carries (None where a value field is empty), in field order."""
    get = _GETTERS.get(type(e))
    if get is None:
        plan = _plan(type(e))[1]
        assert all(name.isidentifier() for name, _, _ in plan)  # a dataclass's own fields
        items = [f"e.{name}" if kind == _VALUE else f"*e.{name}" for name, kind, _ in plan
                 if kind in (_VALUE, _VALUES)]
        scope = {}
        exec(f"def get(e):\n    return [{', '.join(items)}]\n", scope)  # noqa: S102 (made once a class)
        get = _GETTERS[type(e)] = scope["get"]
    return get(e)


def event_doc(e, place=None, arrays=None):
    """An event's frame metadata as a dict, ``{"type": ..., "fields": {...}}``, as versions 1 and 2
    write it (summaries as JSON objects): what ``event_meta(e, version=2)`` writes, byte for byte
    once dumped with ``separators=(",", ":")`` (its reference, kept for the tests). ``arrays``
    collects the inline arrays."""
    arrays = [] if arrays is None else arrays
    out = {}
    for name in ev.event_fields(type(e)):
        x = getattr(e, name)
        if name in _VALUE_FIELDS:
            x = _encode_value(x, arrays, place)
        elif name in _VALUE_TUPLES:
            x = [_encode_value(v, arrays, place) for v in x]
        elif name == "source":
            x = None if x is None else [x.file, x.line, x.function]
        out[name] = x
    return {"type": type(e).__name__, "fields": out}


# -- the metadata's JSON, written directly ---------------------------------------------------------
# In versions 1 and 2, byte for byte what json.dumps(event_doc(e), separators=(",", ":")) writes
# (the tests compare them; version 3 writes the same but for summaries' records), at a fraction of
# its cost: a recording encodes every event, and a value's summary (16
# fields, a 64-count histogram) took ~11 µs through to_dict and json.dumps, the bulk of
# `gradviz record`'s own cost per event (docs/performance.md). Anything of a type not written here
# goes through json itself, so nothing is written differently.
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_str_json = json.encoder.encode_basestring_ascii  # json.dumps's own (ensure_ascii)
_float_repr = float.__repr__
_copysign = math.copysign
_COUNTS = {i: str(i) for i in range(EXACT_LIMIT + 1)}  # a histogram count's text (none exceeds a sample)
_CACHE_MAX = 8192


def _num(x):
    """A number as json.dumps writes it."""
    if type(x) is float:
        if x - x == 0.0:  # finite
            return _float_repr(x)
        return "NaN" if x != x else "Infinity" if x > 0 else "-Infinity"
    if type(x) is int:
        return int.__repr__(x)
    return _dumps(x)


def _hist_json(h):
    try:
        return ",".join(map(_COUNTS.__getitem__, h)) if type(h) is tuple else _dumps(h)[1:-1]
    except KeyError:  # a count beyond the table (or not an int): as json writes it
        return _dumps(h)[1:-1]


class _ByIdentity:
    """What ``_make`` makes of an object, kept for the latest ``_CACHE_MAX`` objects by identity: a
    gradient's summary is written twice (the NodeExited that made it, the NodeEntered that takes
    it), and a training loop's histograms repeat (``summary.interned``). Summaries are never
    changed once made (a slim one is a new object), and each entry holds its object, so no id is
    reused while it is kept."""

    def __init__(self, make=None):
        self._made = {}  # id(object) -> (object, what was made of it)
        if make is not None:
            self._make = make

    def __call__(self, s):
        got = self._made.get(id(s))
        if got is not None and got[0] is s:
            return got[1]
        made = self._make(s)
        if len(self._made) >= _CACHE_MAX:
            self._made.clear()
        self._made[id(s)] = (s, made)
        return made

    def _make(self, s):
        raise NotImplementedError


class _SummaryText(_ByIdentity):
    """Each summary's JSON text (versions 1 and 2, and a summary no record fits)."""

    def __init__(self):
        super().__init__()
        self._hist = _ByIdentity(_hist_json)  # each histogram tuple's text

    def _make(self, s):
        if type(s) is not Summary:
            return _dumps(s.to_dict())
        hist = self._hist(s.hist)
        shape = s.shape
        lo, hi, zeros = s.min, s.max, s.zeros
        # The usual summary: its histogram's range the very floats of its min and max, its fraction
        # of zeros 0.0 (each written once), the floats finite (their sum is finite only then).
        usual = type(zeros) is float and zeros == 0.0 and _copysign(1.0, zeros) == 1.0 and s.hist_lo is lo and \
            s.hist_hi is hi
        floats = (lo, hi, s.mean, s.std, s.norm, s.mean_abs) if usual else \
            (lo, hi, s.mean, s.std, s.norm, s.mean_abs, s.hist_lo, s.hist_hi, zeros)
        try:
            total = sum(floats)
            f = list(map(_float_repr, floats)) if total - total == 0.0 else list(map(_num, floats))
        except TypeError:  # a number that is not a float: as json writes it
            f = list(map(_num, floats))
        if usual:
            f += (f[0], f[1], "0.0")
        numel, nan, inf = s.numel, s.nan, s.inf
        return "".join(('{"shape":', "[" + ",".join(map(_num, shape)) + "]" if type(shape) is tuple else
                        _dumps(shape), ',"dtype":', _str_json(s.dtype) if type(s.dtype) is str else _dumps(s.dtype),
                        ',"numel":', int.__repr__(numel) if type(numel) is int else _dumps(numel),
                        ',"min":', f[0], ',"max":', f[1], ',"mean":', f[2], ',"std":', f[3], ',"norm":', f[4],
                        ',"nan":', int.__repr__(nan) if type(nan) is int else _dumps(nan),
                        ',"inf":', int.__repr__(inf) if type(inf) is int else _dumps(inf),
                        ',"hist":[', hist, '],"hist_lo":', f[6], ',"hist_hi":', f[7], ',"sampled":',
                        "true" if s.sampled is True else "false" if s.sampled is False else _dumps(s.sampled),
                        ',"mean_abs":', f[5], ',"zeros":', f[8], "}"))


_summary_json = _SummaryText()


class _SummaryRecord(_ByIdentity):
    """Each summary's record (version 3) and the JSON before its index (None: it does not fit a
    record, and is written as JSON)."""

    @staticmethod
    def _make(s):
        if type(s) is not Summary or type(s.sampled) is not bool or type(s.hist) is not tuple:
            return None
        try:
            record = _RECORD.pack(s.numel, s.nan, s.inf, s.min, s.max, s.mean, s.std, s.norm, s.hist_lo, s.hist_hi,
                                  s.mean_abs, s.zeros, s.sampled, *s.hist)
        except (struct.error, TypeError, OverflowError, ValueError):
            return None
        shape = s.shape
        return ('{"shape":' + ("[" + ",".join(map(_num, shape)) + "]" if type(shape) is tuple else _dumps(shape)) +
                ',"dtype":' + (_str_json(s.dtype) if type(s.dtype) is str else _dumps(s.dtype)) + ',"record":',
                record)


_summary_record = _SummaryRecord()


def _value_json(v, arrays, place):
    """A value as version 3 writes it: its summary a record among the frame's arrays."""
    if v is None:
        return "null"
    r = _summary_record(v.summary)
    if r is None:
        s = _summary_json(v.summary)
    else:
        arrays.append(r[1])
        s = r[0] + int.__repr__(len(arrays) - 1) + "}"
    return _placed(v, s, arrays, place)


def _value_json_v2(v, arrays, place):
    """A value as versions 1 and 2 write it: its summary a JSON object."""
    if v is None:
        return "null"
    return _placed(v, _summary_json(v.summary), arrays, place)


def _placed(v, s, arrays, place):
    if v.array is not None:
        where = INLINE if place is None else place(v)
        if where >= 0:
            return '{"summary":' + s + ',"ref":' + _num(where) + "}"
        if where == INLINE:
            arrays.append(v.array)
            return '{"summary":' + s + ',"array":' + int.__repr__(len(arrays) - 1) + "}"
    return '{"summary":' + s + ',"array":null}'


def _field_json(x):
    """A field's value as json.dumps writes it (a tuple item by item, as json writes a list)."""
    t = type(x)
    if t is int:
        return int.__repr__(x)
    if x is None:
        return "null"
    if t is str:
        return _str_json(x)
    if t is tuple:  # ids, shapes, next nodes: json.dumps's call costs more than these few items
        return "[" + ",".join([int.__repr__(v) if type(v) is int else _field_json(v) for v in x]) + "]"
    return _dumps(x)


_ENCODERS = {}  # event class -> its metadata's encoder, made once (see _encoder)


def _encoder(cls, version=FORMAT_VERSION):
    """A function (e, arrays, place) -> the JSON text of ``cls``'s events, made for the class from
    its fields (as dataclasses makes __init__): one expression, the field names and JSON keys
    written into it, where walking a list of fields per event cost a third of the encoding.
    ``version`` 3 writes summaries as records, 1 and 2 as JSON objects."""
    records = version >= 3
    fn = _ENCODERS.get((cls, records))
    if fn is None:
        head, plan = _plan(cls)
        terms = [repr(head)]
        for name, kind, key in plan:
            x = f"e.{name}"
            terms.append(repr(key))
            terms.append(f"_field_json({x})" if kind == _OTHER else
                         f"'[' + ','.join([_value_json(v, arrays, place) for v in {x}]) + ']'" if kind == _VALUES else
                         f"_value_json({x}, arrays, place)" if kind == _VALUE else
                         f"('null' if {x} is None else _field_json(({x}.file, {x}.line, {x}.function)))")
        terms.append("'}}'")
        scope = {"_field_json": _field_json, "_value_json": _value_json if records else _value_json_v2,
                 "_dumps": _dumps}
        # the names are a dataclass's own fields, checked identifiers: nothing from outside the code
        assert all(name.isidentifier() for name, _, _ in plan)
        exec(f"def encode(e, arrays, place):\n    return ''.join(({', '.join(terms)}))\n", scope)  # noqa: S102
        fn = _ENCODERS[cls, records] = scope["encode"]
    return fn


def event_meta(e, place=None, arrays=None, version=FORMAT_VERSION):
    """An event's frame metadata, as UTF-8 JSON; ``arrays`` collects the frame's arrays in the order
    the metadata names them: the summaries' records (``version`` 3, as bytes) and the inline
    arrays. In ``version`` 1 or 2, exactly what ``json.dumps(event_doc(e), separators=(",", ":"))``
    writes."""
    return _encoder(type(e), version)(e, [] if arrays is None else arrays, place).encode()


def encode_event(e, place=None, version=FORMAT_VERSION):
    """One event's frame. ``place(value)``, for each value with an array, says where the array goes:
    ``INLINE`` (in this frame, the default), ``SUMMARY_ONLY`` (nowhere), or a ref >= 0 (an array
    frame of its own, version 2, written by ``encode_array`` before or after this one). ``version``:
    the format version of the file it goes into (an older one only to write an older file)."""
    arrays = []
    meta = event_meta(e, place, arrays, version)
    return _frame(FRAME_MAGIC, meta, arrays)


def encode_array(ref, array):
    """An array frame (version 2): the array a value naming ``ref`` stands for."""
    return _frame(ARRAY_MAGIC, b'{"ref": ' + _num(ref).encode() + b"}", [array])


def encode_note(note):
    """A note frame (version 2): a JSON object with a "note" kind, about the file itself."""
    return _frame(NOTE_MAGIC, json.dumps(note, separators=(",", ":")).encode(), [])


_ARRAY_HEAD = struct.Struct("<BB")
_LITTLE = {code: np.dtype(d) for code, d in _DTYPES.items()}
_DIMS = [struct.Struct(f"<{n}Q") for n in range(MAX_NDIM + 1)]


def _frame(magic, meta, arrays):
    if len(arrays) > MAX_ARRAYS:  # (what a reader would refuse is not written)
        raise ValueError(f"an event with {len(arrays)} arrays is more than a trace frame holds ({MAX_ARRAYS})")
    parts = [meta]
    for a in arrays:
        if type(a) is bytes:  # a summary's record (version 3): bytes, as an array of u8
            parts.append(_ARRAY_HEAD.pack(_RECORD_CODE, 1) + _DIMS[1].pack(len(a)))
            parts.append(a)
            continue
        a = np.asarray(a)
        dtype = a.dtype
        code = _CODES.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
        if code is None:
            raise TypeError(f"cannot store an array of dtype {a.dtype} in a trace file")
        ndim = a.ndim
        parts.append(_ARRAY_HEAD.pack(code, ndim) + (_DIMS[ndim].pack(*a.shape) if ndim <= MAX_NDIM else
                                                     struct.pack(f"<{ndim}Q", *a.shape)))
        want = _LITTLE[code]
        parts.append((a if dtype == want else a.astype(want)).tobytes())  # (tobytes writes C order)
    body = b"".join(parts)
    return _FRAME_HEADER.pack(magic, len(meta), len(arrays), zlib.crc32(body)) + body


class TraceWriter:
    """Writes events to a path or binary file object as they come, flushed frame by frame."""

    def __init__(self, target):
        self._own = isinstance(target, (str, os.PathLike))
        self._f = open(target, "wb") if self._own else target  # noqa: SIM115 (closed by close())
        self._f.write(file_header())
        self._f.flush()

    def write(self, e):
        self._f.write(encode_event(e))
        self._f.flush()

    def close(self):
        if self._own and not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_trace(path, events):
    with TraceWriter(path) as w:
        for e in events:
            w.write(e)


# -- decoding ------------------------------------------------------------------------------------
def _fail(msg, offset, error=TraceFormatError):
    raise error(msg, offset)


def _ref_range(x, off):
    if type(x) is not list or len(x) != 2 or not all(type(n) is int and n >= 0 for n in x) or x[0] > x[1]:
        _fail("a note's refs should be [first, end) with 0 <= first <= end", off)
    return x[0], x[1]


def _int(x, what, off):
    if type(x) is not int:
        _fail(f"{what} should be an integer, got {type(x).__name__}", off)
    return x


def _opt_int(x, what, off):
    return None if x is None else _int(x, what, off)


def _count(x, what, off):
    if _int(x, what, off) < 0:
        _fail(f"{what} should not be negative, got {x}", off)
    return x


def _float(x, what, off):
    if type(x) is float:
        return x
    if type(x) is not int:
        _fail(f"{what} should be a number, got {type(x).__name__}", off)
    try:
        return float(x)
    except OverflowError:
        _fail(f"{what} is a number too large for a float ({len(str(x))} digits)", off)


INTERN_CHARS = 200


def _str(x, what, off):
    if type(x) is not str:
        _fail(f"{what} should be a string, got {type(x).__name__}", off)
    # Short strings (dtypes, ops, scopes, names, files) come again every iteration: one copy each.
    return sys.intern(x) if len(x) <= INTERN_CHARS else x


def _list(x, what, off, limit=1 << 20):
    if type(x) is not list:
        _fail(f"{what} should be a list, got {type(x).__name__}", off)
    if len(x) > limit:
        _fail(f"{what} has {len(x)} items, more than {limit}", off)
    return x


def _shape(x, what, off):
    if type(x) is list and len(x) <= MAX_NDIM and all(type(n) is int and n >= 0 for n in x):
        return interned(tuple(x))  # (the usual shape: what the checks below make of it)
    dims = interned(tuple(_int(n, what, off) for n in _list(x, what, off, MAX_NDIM)))
    if any(n < 0 for n in dims):
        _fail(f"{what} has a negative dimension", off)
    return dims


_SUMMARY_FLOATS = ("min", "max", "mean", "std", "norm", "hist_lo", "hist_hi")


_LATER = {"mean_abs", "zeros"}  # summary fields that older traces lack


_RECORD_KEYS = {"shape", "dtype", "record"}


def _summary_of_record(d, arrays, used, off):
    """A version 3 summary: {"shape", "dtype", "record": k}, its numbers in the frame's array k."""
    k = _count(d["record"], "summary record", off)
    if not k < len(arrays) or k in used:
        _fail(f"summary record {k} does not name an unused array of this frame ({len(arrays)} arrays)", off)
    a = arrays[k]
    if a.dtype != np.uint8 or a.shape != (RECORD_BYTES,):
        _fail(f"summary record {k} should be {RECORD_BYTES} bytes (u8), not {a.dtype} of shape {a.shape}", off)
    used.add(k)
    numel, nan, inf, lo, hi, mean, std, norm, hist_lo, hist_hi, mean_abs, zeros, sampled, *hist = \
        _RECORD.unpack(a.tobytes())
    if numel < 0 or nan < 0 or inf < 0:
        _fail("a summary record has a negative count", off)
    if sampled > 1:
        _fail("summary 'sampled' should be 0 or 1 in a record", off)
    return Summary(_shape(d["shape"], "summary shape", off), _str(d["dtype"], "summary dtype", off), numel, lo, hi,
                   mean, std, norm, nan, inf, interned(tuple(hist)), hist_lo, hist_hi, sampled == 1, mean_abs, zeros)


def _summary(d, off, arrays=None, used=None):
    """A value's summary: a JSON object (every version) or, given the frame's ``arrays`` (version
    3), a record among them."""
    if type(d) is dict and "record" in d:
        if arrays is None:
            _fail("a value summary is a binary record, which only format version 3 has, in a file of an "
                  "earlier version", off)
        if set(d) != _RECORD_KEYS:
            _fail("a value summary has missing or unknown fields", off)
        return _summary_of_record(d, arrays, used, off)
    if type(d) is not dict or set(d) - _LATER != set(Summary.__dataclass_fields__) - _LATER:
        _fail("a value summary has missing or unknown fields", off)  # (fields that came later are optional)
    hist = _list(d["hist"], "summary histogram", off)
    if not all(type(n) is int and n >= 0 for n in hist):  # one pass; the slow one names the bad count
        for n in hist:
            _count(n, "summary histogram count", off)
    hist = interned(tuple(hist))
    if len(hist) != HIST_BINS:
        _fail(f"a summary histogram has {len(hist)} bins, not {HIST_BINS}", off)
    if type(d["sampled"]) is not bool:
        _fail("summary 'sampled' should be true or false", off)
    return Summary(_shape(d["shape"], "summary shape", off), _str(d["dtype"], "summary dtype", off),
                   _count(d["numel"], "summary numel", off), *(_float(d[k], f"summary {k}", off) for k in
                                                            ("min", "max", "mean", "std", "norm")),
                   _count(d["nan"], "summary nan", off), _count(d["inf"], "summary inf", off), hist,
                   _float(d["hist_lo"], "summary hist_lo", off), _float(d["hist_hi"], "summary hist_hi", off),
                   d["sampled"], _float(d.get("mean_abs", math.nan), "summary mean_abs", off),
                   _float(d.get("zeros", math.nan), "summary zeros", off))


def _value(d, arrays, used, off, refs=None, records=False):
    if d is None:
        return None
    if type(d) is not dict or (set(d) != {"summary", "array"} and (refs is None or set(d) != {"summary", "ref"})):
        _fail("a value should have exactly 'summary' and 'array'" + (" or 'ref'" if refs is not None else ""), off)
    s = _summary(d["summary"], off, arrays if records else None, used)
    if "ref" in d:  # version 2: the array is in an array frame of its own, before or after this one
        r = _count(d["ref"], "array ref", off)
        if r in refs:
            _fail(f"array ref {r} is named by two values", off)
        value = ev.Value(s, None)
        refs[r] = value
        return value
    k = _opt_int(d["array"], "array index", off)
    arr = None
    if k is not None:
        if not 0 <= k < len(arrays) or k in used:
            _fail(f"array index {k} does not name an unused array of this frame ({len(arrays)} arrays)", off)
        used.add(k)
        arr = arrays[k]
        if tuple(arr.shape) != s.shape:
            _fail(f"array {k} has shape {tuple(arr.shape)} but its summary says {s.shape}", off)
    return ev.Value(s, arr)


def _source(x, off):
    if x is None:
        return None
    items = _list(x, "source", off, 3)
    if len(items) != 3:
        _fail("source should be [file, line, function]", off)
    return ev.Source(_str(items[0], "source file", off), _int(items[1], "source line", off),
                     _str(items[2], "source function", off))


def _bool(x, what, off):
    if type(x) is not bool:
        _fail(f"{what} should be true or false", off)
    return x


# How each field name is read back, whatever event it is in.
_INT_FIELDS = {"id", "index", "iteration", "tensor", "status", "request", "line", "rank", "world_size", "local_rank",
               "bucket"}
_OPT_INT_FIELDS = {"node", "pass_index", "after_node"}
_STR_FIELDS = {"op", "kind", "dtype", "output_dtype", "scope", "optimizer", "stream", "text", "reason", "phase",
               "detail", "file", "backend", "result"}
_OPT_STR_FIELDS = {"name", "error", "traceback"}
_INT_TUPLES = {"inputs", "params", "roots", "nodes"}


def _field(name, x, arrays, used, off, refs=None, records=False):
    t = type(x)  # the usual fields, read as the checks below would read them, without naming them first
    if name in _INT_FIELDS:
        if t is int:
            return x
    elif name in _OPT_INT_FIELDS:
        if t is int or x is None:
            return x
    elif name in _STR_FIELDS and t is str:
        return sys.intern(x) if len(x) <= INTERN_CHARS else x
    what = f"field '{name}'"
    if name in _INT_FIELDS:
        return _int(x, what, off)
    if name in _OPT_INT_FIELDS:
        return _opt_int(x, what, off)
    if name in _STR_FIELDS:
        return _str(x, what, off)
    if name in _OPT_STR_FIELDS:
        return None if x is None else _str(x, what, off)
    if name in ("shape", "output_shape"):
        return _shape(x, what, off)
    if name == "requires_grad":
        return _bool(x, what, off)
    if name in _INT_TUPLES:
        return tuple(_int(v, what, off) for v in _list(x, what, off))
    if name == "next_nodes":
        return tuple(_opt_int(v, what, off) for v in _list(x, what, off))
    if name == "output":
        return _opt_int(x, what, off)
    if name == "source":
        return _source(x, off)
    if name in _VALUE_FIELDS:
        return _value(x, arrays, used, off, refs, records)
    if name in _VALUE_TUPLES:
        return tuple(_value(v, arrays, used, off, refs, records) for v in _list(x, what, off))
    if name == "update_norms":
        return tuple(_float(v, what, off) for v in _list(x, what, off))
    if name == "lr":
        return None if x is None else _float(x, what, off)
    _fail(f"unknown field {name!r}", off)


_OPTIONAL = {}


def _optional_fields(cls):
    """Names of the fields of an event class that may be None (annotated Optional)."""
    names = _OPTIONAL.get(cls)
    if names is None:
        names = set()
        for f in fields(cls):
            t = f.type if isinstance(f.type, str) else repr(f.type)
            if "Optional[" in t or "None" in t:
                names.add(f.name)
        _OPTIONAL[cls] = names
    return names


def _json(meta, what, off):
    try:
        return json.loads(meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _fail(f"{what} is not valid JSON: {exc}", off)


@functools.cache
def _field_set(cls):
    return frozenset(ev.event_fields(cls))


def decode_event(meta, arrays, off, refs=None, records=False):
    """The event of one frame. ``refs`` (version 2) collects {array ref: Value} for the values
    whose arrays come in array frames of their own; without it a value naming a ref is an error.
    ``records`` (version 3): a summary may be a record among the frame's arrays."""
    doc = _json(meta, "event metadata", off)
    if type(doc) is not dict or set(doc) != {"type", "fields"} or type(doc["fields"]) is not dict:
        _fail("event metadata should be {\"type\": ..., \"fields\": {...}}", off)
    cls = ev.EVENT_TYPES.get(doc["type"]) if type(doc["type"]) is str else None
    if cls is None:
        _fail(f"unknown event type {doc['type']!r}", off)
    names = ev.event_fields(cls)
    given = doc["fields"]
    if given.keys() != _field_set(cls):
        missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
        _fail(f"{doc['type']} event has missing fields {missing} or unknown fields {extra}", off)
    optional = _optional_fields(cls)
    for n in names:
        if given[n] is None and n not in optional:
            _fail(f"field {n!r} of a {doc['type']} event should not be null", off)
    used = set()
    values = [_field(n, given[n], arrays, used, off, refs, records) for n in names]
    if len(used) != len(arrays):
        _fail(f"{len(arrays) - len(used)} arrays of this frame belong to no value", off)
    return cls(*values)


class StreamDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive (from a file being written, or a socket),
    get back the events completed so far. Memory grows only with bytes actually received.

    A bad header raises ``TraceHeaderError``; a bad frame raises ``TraceFormatError`` naming its
    offset, with the events completed by that same ``feed`` call in its ``events``. The decoder
    never skips ahead: once a frame is bad, every later call fails at that frame again."""

    def __init__(self, total_size=None, on_array=None):
        self._buf = bytearray()
        self._start = 0  # index in _buf of the first byte not yet decoded (within one feed call)
        self._pos = 0  # absolute offset of _buf[_start]
        self._header = False
        self.total_size = total_size  # when known (a whole file), claims beyond it fail at once
        self.events_read = 0
        self.version = FORMAT_VERSION
        self.refs = {}  # version 2: array ref -> the Value waiting for its array frame
        self.notes = []  # version 2: the note frames read, as dicts (a caller may empty the list)
        self.on_array = on_array  # called with each Value whose array came in an array frame

    @property
    def offset(self):
        return self._pos

    def pending_bytes(self):
        return len(self._buf) - self._start

    def _check_header(self):
        if len(self._buf) < _FILE_HEADER.size:
            if not MAGIC.startswith(bytes(self._buf[:8])):
                _fail("not a gradviz trace file (bad magic bytes)", 0, TraceHeaderError)
            return False
        magic, version, flags = _FILE_HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            _fail("not a gradviz trace file (bad magic bytes)", 0, TraceHeaderError)
        if not 1 <= version <= FORMAT_VERSION:
            _fail(f"trace format version {version} is not supported: this gradviz reads version 1 to version "
                  f"{FORMAT_VERSION}", 8, TraceHeaderError)
        self.version = version
        if flags != 0:
            _fail(f"unknown trace header flags {flags:#x}", 10, TraceHeaderError)
        self._start = self._pos = _FILE_HEADER.size
        self._header = True
        return True

    def _claim(self, nbytes, what, at):
        """Refuse a length that cannot fit what is left of a file, before reading it."""
        if self.total_size is not None and self._pos + at + nbytes > self.total_size:
            _fail(f"{what} claims {nbytes} bytes but only {max(self.total_size - self._pos - at, 0)} remain "
                  "in the file: it is truncated or corrupt", self._pos)

    def _try_frame(self):
        buf, s, off = self._buf, self._start, self._pos
        avail = len(buf) - s
        magics = _MAGICS[self.version]
        if avail < 4:
            if not any(m.startswith(bytes(buf[s:])) for m in magics):
                _fail("bad frame magic: not the start of an event", off)
            return None
        magic = bytes(buf[s:s + 4])
        if magic not in magics:
            _fail("bad frame magic: not the start of an event", off)
        if avail < _FRAME_HEADER.size:
            return None
        _, meta_len, n_arrays, crc = _FRAME_HEADER.unpack_from(buf, s)
        if magic != FRAME_MAGIC and n_arrays != (magic == ARRAY_MAGIC):
            _fail(f"{'an array' if magic == ARRAY_MAGIC else 'a note'} frame claims {n_arrays} arrays, not "
                  f"{int(magic == ARRAY_MAGIC)}", off)
        if meta_len > MAX_META_BYTES:
            _fail(f"event metadata claims {meta_len} bytes, more than the limit of {MAX_META_BYTES}", off)
        if n_arrays > MAX_ARRAYS:
            _fail(f"event claims {n_arrays} arrays, more than the limit of {MAX_ARRAYS}", off)
        at = _FRAME_HEADER.size
        self._claim(meta_len, "event metadata", at)
        at += meta_len
        specs = []
        for _ in range(n_arrays):
            if avail < at + 2:
                return None
            code, ndim = buf[s + at], buf[s + at + 1]
            if code not in _DTYPES:
                _fail(f"array of unknown dtype code {code}", off + at)
            if ndim > MAX_NDIM:
                _fail(f"array claims {ndim} dimensions, more than {MAX_NDIM}", off + at)
            if avail < at + 2 + 8 * ndim:
                return None
            shape = struct.unpack_from(f"<{ndim}Q", buf, s + at + 2)
            itemsize = np.dtype(_DTYPES[code]).itemsize
            if math.prod(max(n, 1) for n in shape) * itemsize > _MAX_ARRAY_BYTES:
                _fail(f"an array of shape {list(shape)} is larger than any array can be", off + at)
            nbytes = itemsize * math.prod(shape)
            at += 2 + 8 * ndim
            self._claim(nbytes, f"an array of shape {list(shape)}", at)
            if self.total_size is not None and at + nbytes > MAX_FRAME_BYTES:  # a sparse file's claim
                _fail(f"an array of shape {list(shape)} claims {nbytes} bytes: the event would be over the "
                      f"limit of {MAX_FRAME_BYTES} bytes", off)
            specs.append((code, shape, at, nbytes))
            at += nbytes
        if avail < at:
            return None
        body = bytes(buf[s + _FRAME_HEADER.size:s + at])
        if zlib.crc32(body) != crc:
            _fail("event checksum mismatch: the frame is corrupted", off)
        arrays = [np.frombuffer(body, dtype=_DTYPES[code], count=math.prod(shape),
                                offset=start - _FRAME_HEADER.size).reshape(shape).copy()
                  if nbytes else np.zeros(shape, _DTYPES[code]) for code, shape, start, nbytes in specs]
        if magic == FRAME_MAGIC:
            result = decode_event(body[:meta_len], arrays, off, self.refs if self.version >= 2 else None,
                                  self.version >= 3)
        elif magic == ARRAY_MAGIC:
            self._array_frame(_json(body[:meta_len], "array frame metadata", off), arrays[0], off)
            result = _CONSUMED
        else:
            self._note_frame(_json(body[:meta_len], "note metadata", off), off)
            result = _CONSUMED
        self._start += at
        self._pos += at
        return result

    def _array_frame(self, doc, array, off):
        if type(doc) is not dict or set(doc) != {"ref"}:
            _fail("array frame metadata should be {\"ref\": N}", off)
        value = self.refs.pop(_count(doc["ref"], "array ref", off), None)
        if value is None:  # its event was dropped (a compacted file), or its ref dropped already
            return
        if tuple(array.shape) != value.summary.shape:
            _fail(f"array of ref {doc['ref']} has shape {tuple(array.shape)} but its summary says "
                  f"{value.summary.shape}", off)
        value.array = array
        if self.on_array is not None:
            self.on_array(value)

    def _note_frame(self, doc, off):
        if type(doc) is not dict or type(doc.get("note")) is not str:
            _fail("note metadata should be {\"note\": KIND, ...}", off)
        if doc["note"] == "arrays_dropped":  # their array frames will never come: forget the values
            lo, hi = _ref_range(doc.get("refs"), off)
            if hi - lo <= len(self.refs):
                for r in range(lo, hi):
                    self.refs.pop(r, None)
            else:
                for r in [r for r in self.refs if lo <= r < hi]:
                    del self.refs[r]
        self.notes.append(doc)

    def feed(self, data):
        self._buf += data
        out = []
        try:
            if not self._header and not self._check_header():
                return out
            while self._start < len(self._buf):
                e = self._try_frame()
                if e is None:
                    break
                if e is _CONSUMED:
                    continue
                out.append(e)
                self.events_read += 1
        except TraceFormatError as exc:
            exc.events = out
            raise
        finally:
            # Decoded bytes go once per call, not once per frame (which would be quadratic).
            del self._buf[:self._start]
            self._start = 0
        return out

    def finish(self):
        """Call at the end of the input: leftover bytes are a cut-off event."""
        if not self._header:
            n = len(self._buf)
            _fail("not a gradviz trace file: it is empty" if n == 0 else
                  f"not a gradviz trace file: it ends after {n} bytes, inside the {_FILE_HEADER.size}-byte "
                  "file header", n)
        if self._buf:
            _fail(f"truncated event: the input ends {len(self._buf)} bytes into an incomplete frame", self._pos)


def _decode(chunks, size, partial):
    dec = StreamDecoder(total_size=size)
    events = []
    try:
        for chunk in chunks:
            events.extend(dec.feed(chunk))
        dec.finish()
    except TraceHeaderError:
        raise  # not a trace of this format at all: nothing to salvage, even with partial
    except TraceFormatError as exc:
        events.extend(exc.events)
        if not partial:
            raise
    return events


def decode_bytes(data, partial=False):
    """``read_events`` for a whole trace held in memory."""
    return _decode([bytes(data)], len(data), partial)


def read_events(path, partial=False):
    """All events of a trace file. With ``partial``, every complete event before a cut or a
    corruption is returned instead of raising (a wrong file header still raises). A file still
    being written is read as far as it was when opened."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size

        def chunks():
            left = size
            while left > 0:
                chunk = f.read(min(1 << 20, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        return _decode(chunks(), size, partial)


def count_events(path, notes=None):
    """A trace file's complete events counted by type, from the frames' headers alone (the array
    bytes skipped, nothing decoded, no checksum): what ``gradviz record`` says of a run without
    loading it. Stops quietly at the first cut or malformed frame; raises TraceHeaderError for a
    file that is not a trace. Returns {event type name: count}; appends the file's notes (dicts)
    to ``notes`` when given."""
    counts = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or _FILE_HEADER.unpack(head)[0] != MAGIC:
            _fail("not a gradviz trace file (bad magic bytes)", 0, TraceHeaderError)
        pos = _FILE_HEADER.size
        while True:
            h = f.read(_FRAME_HEADER.size)
            if len(h) < _FRAME_HEADER.size:
                break
            magic, meta_len, n_arrays, _ = _FRAME_HEADER.unpack(h)
            if magic not in _MAGICS[2] or meta_len > MAX_META_BYTES or n_arrays > MAX_ARRAYS:
                break
            meta = f.read(meta_len if magic == NOTE_MAGIC and notes is not None and meta_len < 1 << 16 else
                          min(meta_len, 64))
            end = pos + _FRAME_HEADER.size + meta_len
            f.seek(end)
            bad = False
            for _ in range(n_arrays):
                spec = f.read(2)
                if len(spec) < 2 or spec[0] not in _DTYPES or spec[1] > MAX_NDIM:
                    bad = True
                    break
                dims = f.read(8 * spec[1])
                if len(dims) < 8 * spec[1]:
                    bad = True
                    break
                end += 2 + 8 * spec[1] + np.dtype(_DTYPES[spec[0]]).itemsize * math.prod(
                    struct.unpack(f"<{spec[1]}Q", dims))
                if end > size:
                    bad = True
                    break
                f.seek(end)
            if bad or end > size:
                break
            if magic != FRAME_MAGIC:  # an array or a note: no event
                if magic == NOTE_MAGIC and notes is not None:
                    try:
                        doc = json.loads(meta)
                    except (ValueError, RecursionError):
                        doc = None
                    if type(doc) is dict:
                        notes.append(doc)
                pos = end
                continue
            if not meta.startswith(b'{"type":"'):
                break
            name = meta[9:].split(b'"', 1)[0].decode("ascii", "replace")
            counts[name] = counts.get(name, 0) + 1
            pos = end
    return counts


class TraceFollower:
    """Follows a trace file that is still being written: ``poll()`` returns the events completed
    since the last call."""

    def __init__(self, path):
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._dec = StreamDecoder()

    def poll(self):
        data = self._f.read()
        return self._dec.feed(data) if data else []

    def close(self):
        self._f.close()
