"""Summaries of tensor values: what gradviz always keeps of every tensor and gradient, whatever
the memory budget.

Count, min, max, L2 norm and the NaN and Inf counts are exact. Mean, std, mean |x| and the 64-bin
histogram (over [min, max] of the finite values) are exact for tensors of up to ``EXACT_LIMIT`` elements; for
larger ones they come from an evenly strided sample of about ``SAMPLE_SIZE`` elements
(``sampled`` is then True), which keeps recording cheap beside the work the tensor took to make.
Complex values are summarised by their magnitudes |z| (whose L2 norm is the tensor's own).
``zeros``, the fraction of values exactly 0 (a dead ReLU's gradient), is exact or of the sample alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HIST_BINS = 64
EXACT_LIMIT = 4096
SAMPLE_SIZE = 2048


# Not frozen, though never changed once made: a frozen dataclass's __init__ sets each of these 16
# fields through object.__setattr__, 7 µs a summary against 0.9, and a recording makes thousands a
# step. Treat it as immutable: one Summary serves every Value of the same memory.
@dataclass(slots=True, eq=False)
class Summary:
    shape: tuple
    dtype: str
    numel: int
    min: float
    max: float
    mean: float
    std: float
    norm: float
    nan: int
    inf: int
    hist: tuple  # HIST_BINS counts over [hist_lo, hist_hi]
    hist_lo: float
    hist_hi: float
    sampled: bool = False
    mean_abs: float = math.nan  # mean |x| (NaN in traces written before it was kept)
    zeros: float = math.nan  # the fraction of values exactly 0 (of the sample when sampled; NaN in older traces)

    @property
    def finite(self):
        return self.nan == 0 and self.inf == 0

    @property
    def l2(self):
        """The L2 norm as ``np.linalg.norm`` gives it: NaN if a NaN is present, else Inf if an Inf
        is (``norm`` is that of the finite values, to say how large the rest is)."""
        if self.nan:
            return math.nan
        return math.inf if self.inf else self.norm

    def hist_edges(self):
        return np.linspace(self.hist_lo, self.hist_hi, HIST_BINS + 1)

    def with_shape(self, shape):
        """This summary for a view of the same values in another shape (a transpose, say);
        ``dataclasses.replace`` costs several times more, and this runs per view recorded."""
        return Summary(tuple(shape), self.dtype, self.numel, self.min, self.max, self.mean, self.std, self.norm,
                       self.nan, self.inf, self.hist, self.hist_lo, self.hist_hi, self.sampled, self.mean_abs,
                       self.zeros)

    def with_dtype(self, dtype):
        return Summary(self.shape, dtype, self.numel, self.min, self.max, self.mean, self.std, self.norm,
                       self.nan, self.inf, self.hist, self.hist_lo, self.hist_hi, self.sampled, self.mean_abs,
                       self.zeros)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_EMPTY_HIST = (0,) * HIST_BINS


class PendingSummary:
    """A summary still being made (by kernels on a device, or on a worker thread): the producer
    holds the events that carry it back until ``resolve`` gives every Value holding it (and its
    views' summaries, ``with_shape``) the real Summary, so that nothing downstream ever sees one.
    Its statistics are deliberately absent: reading one before then fails loudly."""

    __slots__ = ("shape", "dtype", "numel", "exact", "_values")

    def __init__(self, shape, dtype, numel, exact=None):
        self.shape, self.dtype, self.numel = tuple(shape), dtype, int(numel)
        self.exact = exact  # (min, max, norm) of all the values, when only a sample is to be read
        # the Value holding it, or a list of Values and views (PendingSummary): most have one,
        # and a recording makes thousands a step (each list is one more object to collect)
        self._values = None

    def _hold(self, x):
        held = self._values
        if held is None:
            self._values = x
        elif type(held) is list:
            held.append(x)
        else:
            self._values = [held, x]

    def with_shape(self, shape):
        view = PendingSummary(shape, self.dtype, self.numel)
        self._hold(view)
        return view

    def attach(self, value):
        """``value`` (an events.Value whose summary is this) gets the real one on ``resolve``."""
        self._hold(value)

    def resolve(self, summary):
        held, self._values = self._values, None
        for x in (held if type(held) is list else () if held is None else (held,)):
            if type(x) is PendingSummary:
                x.resolve(summary.with_shape(x.shape))
            else:
                x.summary = summary


# Summaries' histograms and shapes, one tuple for each distinct value: a long run describes the
# same small tensors and gradients again every iteration, and a 64-bin histogram is ~550 bytes
# (issue 13, item 12: the decoded trace held ~2.3 KB per event, a quarter of it histograms).
INTERNED_MAX = 1 << 16
_interned: dict = {}


def interned(t: tuple) -> tuple:
    """The one tuple kept equal to ``t`` (``t`` itself the first time); forgets them all past
    ``INTERNED_MAX`` distinct ones (a run whose histograms all differ gains nothing, costs no more)."""
    got = _interned.get(t)
    if got is None:
        if len(_interned) >= INTERNED_MAX:
            _interned.clear()
        _interned[t] = got = t
    return got
# ndarray.min/max/sum add a Python layer per call
_min, _max, _add, _dot = np.minimum.reduce, np.maximum.reduce, np.add.reduce, np.dot

# The exact part of a summary is three passes over the values (numpy has no fused min/max/norm). An
# array larger than a core's cache would be read from memory three times: read in chunks of this
# many bytes, the second and third passes over each chunk find it in the cache (a 4 MB float32
# array: 245 µs instead of 443 on the development machine; bench/bench_floors.py).
CHUNK_BYTES = 1 << 19


def exact_stats(flat):
    """(sum of squares, min, max) of a 1-d float array, each over every value. The sum of squares is
    not finite when a NaN or an Inf is present (or the squares overflow the dtype); min and max
    mean something only when it is finite."""
    n = flat.size
    step = CHUNK_BYTES // flat.itemsize
    if n <= 2 * step:
        return float(_dot(flat, flat)), float(_min(flat)), float(_max(flat))
    sq, lo, hi = 0.0, math.inf, -math.inf
    for i in range(0, n, step):
        c = flat[i:i + step]
        sq += float(_dot(c, c))
        m = float(_min(c))
        if m < lo:
            lo = m
        m = float(_max(c))
        if m > hi:
            hi = m
    return sq, lo, hi


def _flat_view(a):
    """A 1-d view of ``a`` without copying when its memory allows, else None."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a.ravel(order="K")
    return None


def as_real(array):
    """``array`` as float64 for drawing: complex values by their magnitudes, as summaries show them."""
    a = np.asarray(array)
    return np.abs(a) if a.dtype.kind == "c" else np.asarray(a, dtype=np.float64)


def summarize(array) -> Summary:
    # A program's huge or non-finite values are its own business: PyTorch does not warn when they
    # overflow a sum of squares, and gradviz must not write numpy's warnings into its output.
    with np.errstate(all="ignore"):
        return _summarize(array)


def _summarize(array):
    a = np.asarray(array)
    shape, dtype, n = tuple(a.shape), a.dtype.str, int(a.size)
    if n == 0:
        return empty(shape, dtype)
    if a.dtype.kind == "c":  # complex: the statistics of the magnitudes |z| (the norm is the same)
        a = np.abs(a)
    if a.dtype.kind != "f" or a.dtype == np.float16:
        a = a.astype(np.float64)
    flat = _flat_view(a)
    if flat is None:
        flat = a.reshape(-1)
    # One pass gives the exact norm and, when the sum of squares is finite, the certainty that no
    # NaN or Inf is present; the rare other case counts them exactly.
    sq, lo, hi = exact_stats(flat)
    if not math.isfinite(sq):
        return _summarize_nonfinite(a, flat, shape, dtype, n)
    sampled = n > EXACT_LIMIT
    sample = flat[:: n // SAMPLE_SIZE] if sampled else flat
    return _from_parts(shape, dtype, n, lo, hi, math.sqrt(sq), 0, 0, sample, sampled)


def _summarize_nonfinite(a, flat, shape, dtype, n):
    finite_mask = np.isfinite(flat)
    nan_count = int(np.count_nonzero(np.isnan(flat)))
    inf_count = n - nan_count - int(np.count_nonzero(finite_mask))
    finite = flat[finite_mask].astype(np.float64)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
    norm = float(np.linalg.norm(finite))  # of the finite values (also when float32 squares overflowed)
    sampled = n > EXACT_LIMIT
    sample = flat[:: n // SAMPLE_SIZE] if sampled else flat
    return _from_parts(shape, dtype, n, lo, hi, norm, nan_count, inf_count, sample, sampled)


def from_parts(shape, dtype, n, lo, hi, norm, nan_count, inf_count, sample, sampled):
    """A Summary from the exact statistics and a numpy sample of the values (all of them when
    ``sampled`` is False): how frameworks summarise tensors where they live (a GPU, say) and move
    only the sample. ``lo`` must be the minimum of the finite values, ``hi`` their maximum."""
    with np.errstate(all="ignore"):
        return _from_parts(shape, dtype, n, lo, hi, norm, nan_count, inf_count, sample, sampled)


def _from_parts(shape, dtype, n, lo, hi, norm, nan_count, inf_count, sample, sampled):
    s = np.asarray(sample, dtype=np.float64)
    if nan_count or inf_count:
        s = s[np.isfinite(s)]
    size = s.size
    if size:
        # A summary is made for every tensor and gradient, hundreds a step: each numpy call here
        # costs about a microsecond whatever its size, so there are as few as the figures allow.
        mean = float(_add(s)) / size
        a = np.abs(s)
        mean_abs = float(_add(a)) / size
        zeros = (size - int(np.count_nonzero(a))) / size
        sq = float(np.dot(s, s)) / size
        var = sq - mean * mean
        if not var > sq * 1e-6:
            # Most of the second moment is the mean's: E[x^2] - mean^2 has lost too many digits
            # (a near-constant tensor), or the squares overflowed (values past 1e154): take the
            # deviations themselves.
            d = s - mean
            var = float(np.dot(d, d)) / size
        std = math.sqrt(var) if var > 0.0 else 0.0
        if hi > lo:
            span = hi - lo
            if not math.isfinite(span):  # a range past the largest float: halve values and range alike
                d = s * 0.5
                d -= lo * 0.5
                d *= HIST_BINS / (hi * 0.5 - lo * 0.5)
            elif HIST_BINS / span < math.inf:
                d = np.subtract(s, lo)
                d *= HIST_BINS / span
            else:  # a span of a few denormals, whose reciprocal overflows
                d = np.subtract(s, lo)
                d /= span
                d *= HIST_BINS
            counts = np.bincount(d.astype(np.intp), minlength=HIST_BINS).tolist()
            if len(counts) > HIST_BINS:  # the maximum itself: in the last bin, as np.histogram puts it
                counts[HIST_BINS - 1] += sum(counts[HIST_BINS:])
                del counts[HIST_BINS:]
            hist = interned(tuple(counts))
        else:
            hist = interned((size,) + (0,) * (HIST_BINS - 1))
    else:
        mean = std = mean_abs = zeros = float("nan")
        hist = _EMPTY_HIST
    return Summary(tuple(shape), dtype, n, lo, hi, mean, std, norm, nan_count, inf_count, hist,
                   lo if math.isfinite(lo) else 0.0, hi if math.isfinite(hi) else 0.0, sampled, mean_abs, zeros)


def without_values(shape, dtype, numel):
    """The summary of a tensor that has a shape but no values (PyTorch's meta device): its count,
    and NaN for every statistic."""
    nan = float("nan")
    return Summary(tuple(shape), dtype, int(numel), nan, nan, nan, nan, nan, 0, 0, _EMPTY_HIST, 0.0, 0.0)


def empty(shape, dtype):
    nan = float("nan")
    return Summary(tuple(shape), dtype, 0, nan, nan, nan, nan, 0.0, 0, 0, _EMPTY_HIST, 0.0, 0.0)


class Batch:
    """Summaries of many small arrays (up to ``EXACT_LIMIT`` values), made together: each ``add``
    takes a float64 copy of the values as they are then (so a later in-place write cannot change
    the summary) and returns a PendingSummary; ``resolve`` makes them all with a few numpy calls
    per size of array (rows of one matrix) instead of a dozen per array: a program of small ops
    makes thousands a step, mostly of a few sizes. Statistics are those of ``summarize``: count,
    min, max, NaN and Inf counts, zeros and the histogram alike; the norm, mean, std and mean |x|
    to float rounding (the same sums, added in another order)."""

    def __init__(self):
        self._by_size: dict[int, tuple[list, list]] = {}  # size -> ([float64 copies], [PendingSummary])
        self._count = 0

    def __len__(self):
        return self._count

    def add(self, array, dtype=None):
        a = np.asarray(array)
        # (a copy, always: astype's default)
        return self.add_flat(a.astype(np.float64).reshape(-1), a.shape, dtype or a.dtype.str, a.size)

    def add_sampled(self, sample, shape, dtype, numel, lo, hi, norm):
        """The pending summary of ``numel`` values, all finite, whose exact min, max and norm are
        known and whose other statistics come from ``sample`` (copied now)."""
        pending = PendingSummary(shape, dtype, numel, (lo, hi, norm))
        group = self._by_size.get(sample.size)
        if group is None:
            group = self._by_size[sample.size] = ([], [])
        group[0].append(sample.astype(np.float64))
        group[1].append(pending)
        self._count += 1
        return pending

    def add_flat(self, copy, shape, dtype, numel):
        """As ``add``, for a float64 1-d copy the caller made already (``shape`` a tuple, ``numel``
        its size): the adapters' path for each small tensor met, with nothing checked twice."""
        pending = _pending(shape, dtype, numel)
        group = self._by_size.get(numel)
        if group is None:
            group = self._by_size[numel] = ([], [])
        group[0].append(copy)
        group[1].append(pending)
        self._count += 1
        return pending

    def resolve(self):
        if not self._count:
            return
        groups, self._by_size, self._count = self._by_size, {}, 0
        with np.errstate(all="ignore"):
            for copies, pending in groups.values():
                if len(copies) < BATCH_MIN_ROWS:  # (a matrix of few rows costs more than it saves)
                    for c, p in zip(copies, pending):
                        p.resolve(_one(c, p))
                    continue
                # Rows in chunks that fit in a core's cache: a dozen passes over each chunk read it
                # from there, not from memory (5,000 gradients of 357 values are 14 MB).
                step = max(BATCH_MIN_ROWS, CHUNK_VALUES // max(1, copies[0].size))
                for i in range(0, len(copies), step):
                    part = pending[i:i + step]
                    for p, s in zip(part, _rows_summaries(np.array(copies[i:i + step]), part)):
                        p.resolve(s)


BATCH_MIN_ROWS = 4
CHUNK_VALUES = 1 << 15  # float64 values of a batch's matrix summarised at once (256 KiB)


def _pending(shape, dtype, numel):
    """A PendingSummary of a tuple ``shape`` and an int ``numel``, made without its checks."""
    p = _new_pending(PendingSummary)
    p.shape, p.dtype, p.numel, p.exact, p._values = shape, dtype, numel, None, None
    return p


_new_pending = object.__new__


def _one(copy, p):
    """The Summary of one copy (a whole array's values, or a sample with ``p.exact``)."""
    if p.exact is not None:
        lo, hi, norm = p.exact
        return _from_parts(p.shape, p.dtype, p.numel, lo, hi, norm, 0, 0, copy, True)
    s = _summarize(copy)
    return Summary(p.shape, p.dtype, s.numel, s.min, s.max, s.mean, s.std, s.norm, s.nan, s.inf, s.hist, s.hist_lo,
                   s.hist_hi, False, s.mean_abs, s.zeros)


def _rows_summaries(x, pending):
    """The Summary of each row of ``x`` (k rows of n values, float64), as PendingSummary says."""
    k, n = x.shape
    lo = _min(x, axis=1)
    hi = _max(x, axis=1)
    exact = [(i, p.exact) for i, p in enumerate(pending) if p.exact is not None]
    for i, (lo_, hi_, _) in exact:  # a sample's: the histogram spans all the values, as _from_parts's
        lo[i], hi[i] = lo_, hi_
    sq = np.einsum("ij,ij->i", x, x)
    mean = _add(x, axis=1) / n
    mean_sq = sq / n
    var = mean_sq - mean * mean
    shaky = ~(var > mean_sq * 1e-6)  # (as _from_parts: too few digits left, or the squares overflowed)
    if shaky.any():
        d = x - mean[:, None]
        var = np.where(shaky, np.einsum("ij,ij->i", d, d) / n, var)
    std = np.sqrt(np.maximum(var, 0.0))  # (a NaN row is made one by one below)
    absx = np.abs(x)
    mean_abs = _add(absx, axis=1) / n
    zeros = (n - np.count_nonzero(absx, axis=1)) / n
    span = hi - lo
    scale = HIST_BINS / span
    # Odd rows are made one by one, as summarize makes them: a NaN or an Inf (a NaN min or max, an
    # infinite sum of squares), a range or a scale past the largest float.
    odd = ~(np.isfinite(sq) & (np.isfinite(scale) | (span == 0.0)))
    spread = np.isfinite(scale) & ~odd
    hists = None
    if spread.any():
        bins = np.subtract(x, lo[:, None], out=absx)
        bins *= np.where(spread, scale, 0.0)[:, None]
        b = bins.astype(np.intp)
        np.minimum(b, HIST_BINS - 1, out=b)  # the maximum itself: in the last bin, as np.histogram puts it
        if not spread.all():
            b[~spread] = 0  # (rows made otherwise: their bins are not used)
        b += (np.arange(k) * HIST_BINS)[:, None]
        hists = np.bincount(b.reshape(-1), minlength=k * HIST_BINS).reshape(k, HIST_BINS)
    norm = np.sqrt(sq)
    if exact:
        for i, (_, _, norm_) in exact:
            norm[i] = norm_
    plain = not exact and not odd.any() and spread.all()
    if plain:  # the common case: every row a whole small array with a spread of finite values
        got = _interned.get
        hist_rows = []
        for row in hists.tolist():  # type: ignore[union-attr]
            t = tuple(row)
            h = got(t)
            hist_rows.append(interned(t) if h is None else h)
        return list(map(_plain_summary, pending, lo.tolist(), hi.tolist(), mean.tolist(), std.tolist(),
                        norm.tolist(), hist_rows, mean_abs.tolist(), zeros.tolist()))
    out = []
    flat = _EMPTY_HIST
    hist_lists = hists.tolist() if hists is not None else None
    rows = zip(pending, lo.tolist(), hi.tolist(), mean.tolist(), std.tolist(), norm.tolist(), mean_abs.tolist(),
               zeros.tolist(), odd.tolist(), spread.tolist())
    for i, (p, lo_, hi_, mean_, std_, norm_, mean_abs_, zeros_, odd_, spread_) in enumerate(rows):
        if p.exact is not None:
            if odd_:
                out.append(from_parts(p.shape, p.dtype, p.numel, lo_, hi_, p.exact[2], 0, 0, x[i], True))
                continue
        elif odd_:
            s = summarize(x[i])
            out.append(Summary(p.shape, p.dtype, n, s.min, s.max, s.mean, s.std, s.norm, s.nan, s.inf, s.hist,
                               s.hist_lo, s.hist_hi, False, s.mean_abs, s.zeros))
            continue
        if spread_:
            h = interned(tuple(hist_lists[i]))  # type: ignore[index]
        else:  # a constant
            if flat[0] != n:
                flat = interned((n,) + (0,) * (HIST_BINS - 1))
            h = flat
        out.append(Summary(p.shape, p.dtype, p.numel, lo_, hi_, mean_, std_, norm_, 0, 0, h, lo_, hi_,
                           p.exact is not None, mean_abs_, zeros_))
    return out


def _plain_summary(p, lo, hi, mean, std, norm, hist, mean_abs, zeros):
    return Summary(p.shape, p.dtype, p.numel, lo, hi, mean, std, norm, 0, 0, hist, lo, hi, False, mean_abs, zeros)


def summarize_into(batch, array, dtype=None):
    """``array``'s summary, or a PendingSummary that ``batch.resolve()`` makes: a small array is
    copied into the batch; a large one's exact part (norm, min, max) is read now and only its
    sample goes to the batch; one holding a NaN or an Inf, or not real, is summarised at once."""
    a = np.asarray(array)
    n = a.size
    if n == 0 or a.dtype.kind not in "fiub":
        s = summarize(a)
        return s if dtype is None or s.dtype == dtype else s.with_dtype(dtype)
    if n <= EXACT_LIMIT:
        return batch.add_flat(a.astype(np.float64).reshape(-1), a.shape, dtype or a.dtype.str, n)
    x = a if a.dtype.kind == "f" and a.dtype != np.float16 else a.astype(np.float64)
    flat = _flat_view(x)
    if flat is None:
        flat = x.reshape(-1)
    with np.errstate(all="ignore"):
        sq, lo, hi = exact_stats(flat)
    if not math.isfinite(sq):  # a NaN or an Inf: counted at once, exactly
        s = summarize(a)
        return s if dtype is None or s.dtype == dtype else s.with_dtype(dtype)
    return batch.add_sampled(flat[:: n // SAMPLE_SIZE], a.shape, dtype or a.dtype.str, n, lo, hi, math.sqrt(sq))
