"""Summaries made on the tensor's device and fetched once: ``DeviceSummaries``.

A summary's statistics (the minimum and maximum of the finite values, the norm of the finite
values, the NaN count, the count of finite values) and its strided sample are computed by torch
ops on the tensor's own device, in the stream the program is running, into one small float64 row
per tensor. Nothing waits: the rows stay on the device until ``fetch``, which joins them, copies
them to the host once (into pinned memory with ``non_blocking=True`` on CUDA, then waits on a CUDA
event recorded after the copy) and turns each row into its Summary (``summary.from_parts``, as any
other path). The producer fetches at the end of each backward pass, every ``FLUSH_EVERY`` events,
before a debugger pauses and when recording stops (``Producer.flush``).

The values a row describes are the tensor's when its summary was asked for: the kernels are queued
in the program's stream before anything the program does next, so a later in-place write cannot
change them. On the CPU the same code runs (the copy is then no copy), which is how the tests
exercise it without a GPU (``TorchAdapter.defer_cpu``).
"""
from __future__ import annotations

import math

from gradviz import summary as _summary

_HEAD = 5  # lo, hi, norm, NaN count, finite count


class DeviceSummaries:
    def __init__(self, torch):
        self.torch = torch
        self._rows = []  # (PendingSummary, row tensor on the device, sampled)
        self._streams = {}  # a CUDA device -> the streams its rows were queued in
        self.fetches = 0  # copies to the host so far (what the tests count)

    def __len__(self):
        return len(self._rows)

    def add(self, x, dtype):
        """The PendingSummary of ``x`` (a strided tensor with at least one value, real, readable),
        its kernels queued."""
        torch = self.torch
        shape, n = tuple(x.shape), x.numel()
        if not (x.is_floating_point()):
            x = x.double()
        flat = _flat(x)
        sampled = n > _summary.EXACT_LIMIT
        sample = flat[:: n // _summary.SAMPLE_SIZE] if sampled else flat
        finite = torch.isfinite(flat)
        # (masked, not filtered: the count of finite values is not known here without waiting)
        lo = torch.where(finite, flat, math.inf).amin()
        hi = torch.where(finite, flat, -math.inf).amax()
        norm = torch.linalg.vector_norm(torch.where(finite, flat, 0.0), dtype=torch.float64)
        counts = torch.stack([torch.isnan(flat).sum(), finite.sum()])
        row = torch.cat([torch.stack([lo, hi]).double(), norm.reshape(1), counts.double(), sample.double()])
        pending = _summary.PendingSummary(shape, dtype, n)
        self._rows.append((pending, row, sampled))
        if row.is_cuda:
            stream = torch.cuda.current_stream(row.device)
            self._streams.setdefault(row.device, set()).add(stream)
        return pending

    def fetch(self):
        """Every pending row copied to the host (one copy per device) and resolved, in order."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        streams, self._streams = self._streams, {}
        by_device: dict = {}
        for entry in rows:
            by_device.setdefault(entry[1].device, []).append(entry)
        for device, entries in by_device.items():
            host = self._to_host(device, [row for _, row, _ in entries], streams.get(device, ()))
            at = 0
            for pending, row, sampled in entries:
                size = row.shape[0]
                part = host[at:at + size]
                at += size
                pending.resolve(_from_row(pending, part, sampled))

    def _to_host(self, device, rows, streams):
        torch = self.torch
        self.fetches += 1
        if device.type != "cuda":
            # The CPU: the joined rows are host memory already. Another device (mps, xpu...): one
            # blocking copy per fetch.
            joined = torch.cat(rows)
            return (joined if device.type == "cpu" else joined.cpu()).numpy()
        with torch.cuda.device(device):
            current = torch.cuda.current_stream(device)
            for s in streams:  # rows queued in another stream: joined only once they are made
                if s != current:
                    current.wait_stream(s)
            joined = torch.cat(rows)
            host = torch.empty(joined.shape, dtype=joined.dtype, pin_memory=True)
            host.copy_(joined, non_blocking=True)
            done = torch.cuda.Event()
            done.record(current)
            done.synchronize()
        return host.numpy()


def _flat(x):
    """``x``'s values in the order numpy's summary reads them (its sample is every k-th): memory
    order for a Fortran-ordered one (a transpose), else row-major."""
    if x.dim() > 1 and not x.is_contiguous():
        reverse = x.permute(*range(x.dim() - 1, -1, -1))
        if reverse.is_contiguous():
            return reverse.reshape(-1)
    return x.reshape(-1)


def _from_row(pending, row, sampled):
    lo, hi, norm, nan, finite = (float(v) for v in row[:_HEAD])
    nan, finite = int(nan), int(finite)
    n = pending.numel
    if finite == 0:
        lo = hi = math.nan
    return _summary.from_parts(pending.shape, pending.dtype, n, lo, hi, norm, nan, n - nan - finite,
                               row[_HEAD:], sampled)
