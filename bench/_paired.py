"""Timing a recorder against no recorder on a shared, noisy machine: pairs of adjacent steps.

The machine these figures come from drifts by 15-40% within a minute (other tenants), so timing
one side for a while and then the other compares two different machines. Here one recorder is
started once and kept (its steady state: caches warm, budget full), and steps alternate: one with
its hooks off, the next with them on. Each pair's ratio compares two steps a few milliseconds
apart; the median over the pairs is the overhead.
"""
import statistics
import time


def _hooks(rec, on):
    """Attach or detach a running recorder's hooks (engine and torch) without ending it."""
    attachment = rec._attachment
    parts = [attachment._engine]
    if attachment._torch is not None and attachment._torch.recording is not None:
        parts.append(attachment._torch.recording)
    for part in parts:
        (part.attach if on else part.detach)()


def paired(step, rec, warmup, pairs):
    """Run ``warmup`` recorded steps, then ``pairs`` pairs (plain step, recorded step).
    Returns (plain times, recorded times), in seconds, pair by pair."""
    plain, recorded = [], []
    rec.start()
    try:
        for _ in range(warmup):
            step()
        for _ in range(pairs):
            _hooks(rec, False)
            t0 = time.perf_counter()
            step()
            plain.append(time.perf_counter() - t0)
            _hooks(rec, True)
            t0 = time.perf_counter()
            step()
            recorded.append(time.perf_counter() - t0)
    finally:
        rec.stop()
    return plain, recorded


def summary(plain, recorded):
    """(median plain, median recorded, median of the pairs' ratios, its interquartile range, ratio
    of all the recorded time to all the plain time). The median is the step as it usually runs;
    the totals also count the rare slow steps: the garbage collector's full passes, which a
    growing trace makes longer, and a neighbour's bursts alike."""
    ratios = sorted(r / p for p, r in zip(plain, recorded))
    q = len(ratios) // 4
    return (statistics.median(plain), statistics.median(recorded), statistics.median(ratios),
            (ratios[q], ratios[-1 - q]), sum(recorded) / sum(plain))
