"""summary.Batch over many rows (issue 18, item 4): chunked matrices, the fast constructor, and
results equal to summarize()'s, one by one, wherever summarize() is exact."""
import math

import numpy as np

from gradviz import summary as S
from gradviz.summary import Batch, PendingSummary, summarize


class _Holder:
    summary = None


def _rows(rng, n, k):
    rows = []
    for i in range(k):
        kind = i % 7
        if kind == 0:
            r = rng.standard_normal(n)
        elif kind == 1:
            r = np.full(n, 2.5)  # constant
        elif kind == 2:
            r = rng.standard_normal(n)
            r[i % n] = np.nan
        elif kind == 3:
            r = rng.integers(-3, 4, n).astype(np.float64)  # integer-valued, many exact zeros
        elif kind == 4:
            r = rng.standard_normal(n) * 1e200  # squares overflow
        elif kind == 5:
            r = np.maximum(rng.standard_normal(n), 0.0).astype(np.float32)
        else:
            r = rng.standard_normal(n)
            r[0] = np.inf
        rows.append(r)
    return rows


def _check(got, want):
    assert (got.shape, got.dtype, got.numel, got.nan, got.inf, got.sampled) == \
        (want.shape, want.dtype, want.numel, want.nan, want.inf, want.sampled)
    for name in ("min", "max", "zeros", "hist_lo", "hist_hi"):
        x, y = getattr(got, name), getattr(want, name)
        assert x == y or (math.isnan(x) and math.isnan(y)), (name, x, y)
    assert got.hist == want.hist
    for name in ("mean", "std", "mean_abs", "norm"):  # the same sums, added in another order
        x, y = getattr(got, name), getattr(want, name)
        assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-300), (name, x, y)


def test_rows_across_several_chunks_equal_summarize_one_by_one():
    rng = np.random.default_rng(3)
    n = 357  # (a chunk holds CHUNK_VALUES // 357 = 91 rows: 400 rows are 5 chunks)
    arrays = _rows(rng, n, 400)
    assert len(arrays) > 2 * (S.CHUNK_VALUES // n)
    batch = Batch()
    holders = []
    for a in arrays:
        p = batch.add_flat(a.astype(np.float64), (7, 51), a.dtype.str, n)
        assert type(p) is PendingSummary and p.shape == (7, 51) and p.exact is None
        h = _Holder()
        p.attach(h)
        holders.append(h)
    expected = [summarize(a.reshape(7, 51)) for a in arrays]
    for a in arrays:
        a[...] = -7.0  # written after: the batch holds its own copies
    batch.resolve()
    assert len(batch) == 0
    for h, e in zip(holders, expected):
        _check(h.summary, e)
    # the constant rows: every value in the first bin, no spread, std exactly 0
    assert holders[1].summary.std == 0.0 and holders[1].summary.hist[0] == n
    assert holders[2].summary.nan == 1 and holders[6].summary.inf == 1


def test_a_histogram_of_a_row_is_the_one_tuple_kept():
    batch = Batch()
    holders = []
    for _ in range(6):
        p = batch.add_flat(np.arange(100.0), (100,), "<f8", 100)
        h = _Holder()
        p.attach(h)
        holders.append(h)
    batch.resolve()
    assert all(h.summary.hist is holders[0].summary.hist for h in holders)
    assert holders[0].summary.hist == summarize(np.arange(100.0)).hist


def _three_passes(flat):
    return float(np.dot(flat, flat)), float(flat.min()), float(flat.max())


def test_exact_stats_of_a_large_array_read_in_chunks_equal_whole_array_passes():
    step = S.CHUNK_BYTES // 4
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5 * step + 123).astype(np.float32)  # several chunks and a short last one
    x[4 * step + 7] = 1e3  # the maximum in a late chunk, the minimum in the short last one
    x[-5] = -2e3
    sq, lo, hi = S.exact_stats(x)
    want_sq, want_lo, want_hi = _three_passes(x.astype(np.float64))
    assert (lo, hi) == (-2e3, 1e3) == (want_lo, want_hi)
    assert math.isclose(sq, want_sq, rel_tol=1e-6)
    s = summarize(x[: 5 * step].reshape(5, step))  # 2-d: its flat view is read in the same chunks
    assert (s.min, s.max) == (float(x[: 5 * step].min()), 1e3)


def test_exact_stats_sees_a_nan_or_an_inf_in_any_chunk():
    step = S.CHUNK_BYTES // 8
    for bad in (math.nan, math.inf, -math.inf):
        x = np.ones(3 * step, dtype=np.float64)
        x[2 * step + 1] = bad
        assert not math.isfinite(S.exact_stats(x)[0])
        s = summarize(x)  # counted exactly, as before chunks
        assert (s.nan, s.inf) == ((1, 0) if math.isnan(bad) else (0, 1))
        assert (s.min, s.max, s.norm) == (1.0, 1.0, math.sqrt(3 * step - 1))


def test_a_large_array_summarised_into_a_batch_has_its_exact_extremes():
    step = S.CHUNK_BYTES // 4
    x = np.linspace(-1.0, 1.0, 3 * step, dtype=np.float32)
    x[step + 11] = 7.0
    batch = Batch()
    pending = S.summarize_into(batch, x)
    holder = type("V", (), {"summary": pending})()
    pending.attach(holder)
    batch.resolve()
    got = holder.summary
    assert (got.min, got.max, got.numel, got.sampled) == (-1.0, 7.0, 3 * step, True)
    assert math.isclose(got.norm, float(np.linalg.norm(x.astype(np.float64))), rel_tol=1e-6)
