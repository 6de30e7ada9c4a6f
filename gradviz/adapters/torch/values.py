"""PyTorch values, as the producer asks for them: dtype names, shapes, tags, node metadata, memory
identity, summaries made on the tensor's device, and copies to numpy (``TorchAdapter``).

torch is never imported here: ``TorchAdapter`` is handed the module.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from gradviz import summary as _summary
from gradviz.adapters.torch.device import DeviceSummaries
from gradviz.adapters.weak import NAMES, WeakTable

TORCH_REDUCE_MIN = 1 << 16  # elements from which a CPU tensor's exact statistics come from torch

_NP_DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8", "int32": "<i4",
              "int16": "<i2", "int8": "|i1", "uint8": "|u1", "bool": "|b1", "complex64": "<c8",
              "complex128": "<c16"}


_DTYPE_STRS = {}


def _dtype_str(dtype):
    got = _DTYPE_STRS.get(dtype)
    if got is None:
        name = str(dtype).rpartition(".")[2]
        got = _DTYPE_STRS[dtype] = _NP_DTYPES.get(name, name)
    return got


# What PyTorch raises when a tensor's values cannot be read from outside (no storage, no batching
# rule, a subclass or layout with no numpy or dense form): its RuntimeError (NotImplementedError is
# one). Nothing broader: gradviz's own mistakes must still show.
_UNREADABLE = RuntimeError


def _numpy(t):
    """A CPU tensor's memory as numpy sees it. A conjugate or negative view (``z.conj()``,
    ``z.conj().imag``) only carries a flag saying so, which numpy cannot: those are resolved first."""
    try:
        return t.numpy()
    except RuntimeError:
        if not (t.is_conj() or t.is_neg()):
            raise
        return t.resolve_conj().resolve_neg().numpy()


def _shape_of(t):
    try:
        return tuple(t.shape)
    except _UNREADABLE:  # a nested tensor's ragged shape
        return ()


class _NodeKey:
    """The key of a recording's entry in a graph node's metadata dict."""

    __slots__ = ()

    def __repr__(self):
        return "<gradviz node id>"


class _ForwardKey:
    """The key of a node's kept forward call in its metadata dict (gradviz.adapters.torch.replay)."""

    __slots__ = ()

    def __repr__(self):
        return "<gradviz forward>"


class TorchAdapter:
    """What the producer asks of a framework, answered for PyTorch."""

    def __init__(self, torch):
        self.torch = torch
        self.source_dirs = (os.path.dirname(os.path.abspath(torch.__file__)),)
        self.Tensor = torch.Tensor
        self.Parameter = torch.nn.Parameter
        self._tags = WeakTable()
        self._key = _NodeKey()
        self.forward_key = _ForwardKey()
        self.tensor_tag = self._tags.get
        self.device_summaries = DeviceSummaries(torch)
        # Small CPU tensors: copied when met, summarised together (summary.Batch)
        self.host_batch = _summary.Batch()
        self._torch_reduced = {torch.float32, torch.float64}
        self._float_dtypes = {torch.float32, torch.float64, torch.float16}
        self._strided = torch.strided
        self._batched_dtypes = {torch.float32, torch.float64, torch.float16, torch.int64, torch.int32,
                                torch.int16, torch.int8, torch.uint8, torch.bool}
        # CPU tensors' summaries made through the device path too (the tests' way to exercise it
        # without a GPU); by default the CPU's are made at once, which costs less there.
        self.defer_cpu = os.environ.get("GRADVIZ_DEFER_CPU") == "1"

    # ids live beside the objects, never in them (see gradviz.adapters.weak): a tensor's in a weak
    # table, a graph node's in its metadata dict (under a key of this adapter's own), as PyTorch
    # offers for tools: a node's Python object is made afresh each time it is asked for, and can
    # not be weakly referenced. Each adapter (one per recording) has its own.
    def get_tag(self, obj):
        return self._tags.get(obj) if isinstance(obj, self.Tensor) else obj.metadata.get(self._key)

    def set_tag(self, obj, tag):
        if isinstance(obj, self.Tensor):
            self._tags.set(obj, tag)
        else:
            obj.metadata[self._key] = tag

    def set_node_tag(self, node, tag):
        node.metadata[self._key] = tag

    def set_tensor_tag(self, t, tag):
        self._tags.set(t, tag)

    def tensor_tag(self, t):
        return self._tags.get(t)  # (replaced in __init__ by the table's own method: one call less)

    def node_tag(self, node):
        return node.metadata.get(self._key)

    def clear_tags(self):
        """Forget the tensors' ids (a recording that ended); nodes' entries go with their graphs."""
        self._tags.clear()

    @staticmethod
    def op_name(node):
        return node.name()

    def vjp(self, node, like, arrays):
        """``node`` (a grad_fn is callable) run once more on ``arrays``, as tensors like its
        grad_outputs: v^T . J; the pass in progress is not touched."""
        import torch
        grads = [torch.as_tensor(a, dtype=g.dtype, device=g.device).reshape(g.shape) for a, g in zip(arrays, like)]
        with torch.no_grad():
            # a custom Function's node is not callable: its apply runs the user's backward, and
            # gives one gradient per forward argument
            out = node(*grads) if callable(node) else node.apply(*grads)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def release_forward(self, node):
        """Let go of the call kept for ``node`` (it ran in backward; see ``replay``)."""
        if self.forward_key in node.metadata:
            from gradviz.adapters.torch.replay import RELEASED
            node.metadata[self.forward_key] = RELEASED

    def replay(self, node):
        """``node``'s forward, ready to run again in float64 (``gradviz.adapters.torch.replay``)."""
        from gradviz.adapters.torch.replay import replay
        return replay(self.torch, self.forward_key, node)

    def saved(self, node):
        """The tensors ``node`` saved for its backward (its ``_saved_*`` attributes), as (name,
        detached tensor); reading them after the pass freed them raises PyTorch's own error."""
        out = []
        for attr in sorted(a for a in dir(node) if a.startswith("_saved_")):
            v = getattr(node, attr)
            items = v if isinstance(v, (tuple, list)) else (v,)
            for i, t in enumerate(items):
                if isinstance(t, self.Tensor):
                    out.append((attr[len("_saved_"):] + (f"[{i}]" if len(items) > 1 else ""), t.detach()))
        return out

    @staticmethod
    def next_nodes(node):
        return [fn for fn, _ in node.next_functions]

    @staticmethod
    def accumulate_variable(node):
        return getattr(node, "variable", None)

    @staticmethod
    def has_grad_fn(tensor):
        return tensor.grad_fn is not None

    @staticmethod
    def tensor_meta(tensor):
        return _shape_of(tensor), _dtype_str(tensor.dtype), tensor.requires_grad

    @staticmethod
    def array(tensor):
        try:
            return tensor.detach()
        except _UNREADABLE:  # a tensor inside a torch.func transform (vmap's batched tensors)
            return tensor

    def is_parameter(self, tensor):
        # Parameter's isinstance goes through a Python __instancecheck__; most are exactly one.
        return type(tensor) is self.Parameter or isinstance(tensor, self.Parameter)

    given_name = staticmethod(NAMES.get)

    # -- values, summarised on their device -------------------------------------------------------
    @staticmethod
    def memory(t):
        try:
            owner = t._base
            if owner is None:  # the common case first (a gradient, an op's output): no view
                n = t.numel()
                shape = tuple(t.shape)
                try:
                    return t, n, n, shape, t._version
                except RuntimeError:  # an inference tensor keeps no version counter (nor gets written)
                    return t, n, n, shape, None
            sizes = owner.numel(), t.numel(), tuple(t.shape)
        except _UNREADABLE:  # no memory to speak of (a nested tensor, say)
            return t, 0, 0, _shape_of(t), None
        try:
            # PyTorch writes into a gradient in place (adding a second branch's share into the
            # first's tensor): a summary made before is not this value's.
            version = owner._version
        except RuntimeError:  # an inference tensor keeps no version counter (nor gets written)
            version = None
        if owner is not t:
            # A view shows the memory its own way: a cached value serves it only if it shows it
            # the same way (a square transpose has the same shape and other values in each place;
            # a conjugate or negative view, the same memory and other values).
            version = (version, t.stride(), t.storage_offset(), t.is_conj(), t.is_neg())
        return (owner, *sizes, version)

    def summarize(self, t):
        """``t``'s Summary. Tensors whose values cannot be read from outside (inside torch.func
        transforms, wrapper subclasses with no storage, nested tensors) are summarised by shape
        alone, as meta-device ones are: recording never breaks the program it watches."""
        try:
            return self._summarize(t)
        except _UNREADABLE:
            try:
                dtype, n = _dtype_str(t.dtype), t.numel()
            except _UNREADABLE:
                dtype, n = "unknown", 0
            return _summary.without_values(_shape_of(t), dtype, n)

    def summarize_later(self, t):
        """``t``'s Summary, or a PendingSummary that ``flush`` resolves. A tensor on a GPU (any
        device but the CPU, or the CPU too with ``defer_cpu``) is summarised by kernels queued
        on its device, without waiting (``device.DeviceSummaries``). On the CPU, a small tensor
        is copied into ``host_batch``, a large one's exact part is read now and its sample copied
        there (``summary.summarize_into``); other kinds (sparse, quantized, complex, bfloat16)
        are summarised at once."""
        try:
            if t.is_cpu and not self.defer_cpu:
                dtype = t.dtype
                if dtype in self._float_dtypes and t.layout is self._strided:
                    n = t.numel()
                    if 0 < n <= _summary.EXACT_LIMIT:
                        # The common case of a program of small ops, first: a float64 copy into
                        # the batch, the rest of the checks in summarize_into all known true.
                        # (A neg view, `z.conj().imag`, only flags its memory: _numpy resolves it.)
                        copy = _numpy(t.detach() if t.requires_grad else t).astype(np.float64).reshape(-1)
                        return self.host_batch.add_flat(copy, tuple(t.shape), _dtype_str(dtype), n)
                return self._summarize_later_cpu(t)
            return self._summarize_later_device(t)
        except _UNREADABLE:
            return self.summarize(t)

    def _summarize_later_cpu(self, t):
        t = t.detach()
        if t.layout != self.torch.strided or t.is_quantized or t.dtype not in self._batched_dtypes:
            return self.summarize(t)
        n = t.numel()
        if n >= TORCH_REDUCE_MIN and t.dtype in self._torch_reduced and t.is_contiguous():
            # (torch's reductions use every core: see _summarize)
            flat = t.view(-1)
            sq = self.torch.dot(flat, flat).item()
            if math.isfinite(sq):
                lo, hi = self.torch.aminmax(flat)
                return self.host_batch.add_sampled(flat.numpy()[:: n // _summary.SAMPLE_SIZE], tuple(t.shape),
                                                   _dtype_str(t.dtype), n, lo.item(), hi.item(), math.sqrt(sq))
            return self.summarize(t)
        return _summary.summarize_into(self.host_batch, _numpy(t), _dtype_str(t.dtype))

    def _summarize_later_device(self, t):
        t = t.detach()
        if (t.layout != self.torch.strided or t.is_quantized or t.is_complex() or t.device.type == "meta"
                or t.numel() == 0):
            return self.summarize(t)  # (their own ways, at once: rare on a device)
        dtype = _dtype_str(t.dtype)
        if dtype[0] not in "<|" and dtype != "bfloat16":  # no numpy dtype: as float64
            return self.device_summaries.add(t.double(), dtype)
        return self.device_summaries.add(t, dtype)

    def flush(self):
        """Resolve every pending summary: one copy to the host per device."""
        self.device_summaries.fetch()
        self.host_batch.resolve()

    def _summarize(self, t):
        torch = self.torch
        t = t.detach()
        if t.layout != torch.strided:
            return self._summarize_sparse(t)
        if t.is_quantized:  # as the values it stands for
            return replace(self.summarize(t.dequantize()), dtype=_dtype_str(t.dtype))
        n = t.numel()
        dtype = _dtype_str(t.dtype)
        if t.device.type == "meta":  # shapes without values (a model being built, say)
            return _summary.without_values(tuple(t.shape), dtype, n)
        if t.is_complex():  # the magnitudes' statistics, as for numpy's complex arrays
            return replace(self.summarize(t.abs()), dtype=dtype)
        if dtype[0] not in "<|" and dtype != "bfloat16":  # no numpy dtype (float8, uint16...): as float64
            return replace(self.summarize(t.double()), dtype=dtype)
        if n == 0:
            return _summary.empty(tuple(t.shape), dtype)
        on_cpu = t.device.type == "cpu"
        if on_cpu and n < TORCH_REDUCE_MIN and dtype != "bfloat16":
            s = _summary.summarize(_numpy(t))  # the common case, first: a small tensor on the CPU
            return s if s.dtype == dtype else replace(s, dtype=dtype)
        shape = tuple(t.shape)
        if on_cpu and t.dtype != torch.bfloat16:
            # On the CPU the tensor's memory is a numpy array already. A large float tensor's exact
            # part (sum of squares, min and max) comes from torch: aminmax reads it once for both,
            # and torch's reductions use every core (measured 3x numpy's three passes at 12.8 M
            # elements, 1.4x at 1 M; below TORCH_REDUCE_MIN numpy's lower call cost wins).
            if n >= TORCH_REDUCE_MIN and t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
                flat = t.view(-1)
                sq = torch.dot(flat, flat).item()
                if math.isfinite(sq):  # else NaN or Inf: counted exactly below, by numpy
                    lo, hi = torch.aminmax(flat)
                    sample = flat.numpy()[:: n // _summary.SAMPLE_SIZE]
                    return _summary.from_parts(shape, dtype, n, lo.item(), hi.item(), math.sqrt(sq), 0, 0,
                                               sample, n > _summary.EXACT_LIMIT)
            s = _summary.summarize(_numpy(t))
            return s if s.dtype == dtype else replace(s, dtype=dtype)
        x = t if t.is_floating_point() else t.double()
        flat = x.reshape(-1)
        sampled = n > _summary.EXACT_LIMIT
        # One copy to the host, so one wait on the device: min, max, norm and the sample together.
        lo, hi = torch.aminmax(flat)
        norm = torch.linalg.vector_norm(flat, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        sample = flat[:: n // _summary.SAMPLE_SIZE] if sampled else flat
        # (in float64 before they meet: a half-precision norm would round, or pass 65504 to inf)
        host = torch.cat([torch.stack([lo.double(), hi.double(), norm.double()]), sample.double()]).cpu().numpy()
        lo, hi, norm = (float(v) for v in host[:3])
        if np.isfinite(lo) and np.isfinite(hi):
            return _summary.from_parts(shape, dtype, n, lo, hi, norm, 0, 0, host[3:], sampled)
        # A NaN or an Inf (min or max says so): counted exactly, the rest of the finite values.
        nan, inf = (int(v) for v in torch.stack([torch.isnan(x).sum(), torch.isinf(x).sum()]).tolist())
        finite = x[torch.isfinite(x)]
        lo, hi = (finite.min().item(), finite.max().item()) if finite.numel() else (float("nan"),) * 2
        norm = torch.linalg.vector_norm(finite.double()).item() if finite.numel() else 0.0
        return _summary.from_parts(shape, dtype, n, lo, hi, norm, nan, inf, host[3:], sampled)

    def _summarize_sparse(self, t):
        """A sparse tensor (the gradient of an ``nn.Embedding(sparse=True)``, say): its stored
        values and the zeros they leave out. A small one is made dense. Otherwise count, min, max,
        norm and the NaN and Inf counts are exact (the zeros can only lower the minimum or raise
        the maximum to 0, and add nothing to the norm), and the sample holds stored values and
        zeros in their proportions."""
        torch = self.torch
        n, shape, dtype = t.numel(), tuple(t.shape), _dtype_str(t.dtype)
        if n < TORCH_REDUCE_MIN:
            return self.summarize(t.to_dense())
        values = (t if t.layout == torch.sparse_coo else t.to_sparse()).coalesce().values().reshape(-1)
        stored = values.numel()
        zeros = n - stored
        s = self.summarize(values)
        if zeros == 0:
            return replace(s, shape=shape)
        lo = 0.0 if s.nan + s.inf == stored else min(s.min, 0.0)
        hi = 0.0 if s.nan + s.inf == stored else max(s.max, 0.0)
        taken = min(stored, round(_summary.SAMPLE_SIZE * stored / n))  # stored values in the sample
        got = values[:: max(1, stored // taken)][:taken].double().cpu().numpy() if taken else np.zeros(0)
        sample = np.concatenate([got, np.zeros(round(taken * zeros / stored) if taken else _summary.SAMPLE_SIZE)])
        return _summary.from_parts(shape, dtype, n, lo, hi, s.norm, s.nan, s.inf, sample, True)

    @staticmethod
    def view_onto(view, owner, snapshot):
        return None

    @staticmethod
    def is_view(t):
        return False  # to_numpy copies torch values always

    def kept(self, value):
        """Nothing to do: ``to_numpy`` always copies (the producer tells only of arrays it did not)."""

    def to_numpy(self, t, copy):
        """Always a copy: PyTorch programs change tensors in place (ReLU(inplace=True), optimizer
        steps), and a view on their memory would change the record with them. None for a tensor
        without values (the meta device) or whose values cannot be read (see ``summarize``)."""
        try:
            return self._to_numpy(t)
        except _UNREADABLE:
            return None

    def _to_numpy(self, t):
        t = t.detach()
        if t.device.type == "meta":
            return None
        torch = self.torch
        if t.layout != torch.strided:  # sparse: as the dense values it stands for
            t = t.to_dense()
        if t.is_quantized:
            t = t.dequantize()
        if t.dtype == torch.bfloat16:
            t = t.float()
        elif _dtype_str(t.dtype)[0] not in "<|":  # no numpy dtype (complex32, float8, uint16...)
            t = t.to(torch.complex64) if t.is_complex() else t.double()
        return _numpy(t).copy() if t.device.type == "cpu" else _numpy(t.cpu())
