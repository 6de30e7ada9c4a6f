"""Recording real PyTorch programs: the same events as gradviz's engine, from PyTorch's own graph.

Forward: a ``TorchFunctionMode`` sees every op; an op that made a new ``grad_fn`` is announced
(with the nodes made inside it, e.g. linear's TBackward0), its module scope coming from global
module forward hooks. Backward: when ``Tensor.backward``, ``torch.autograd.backward`` or
``torch.autograd.grad`` starts, every node reachable from the roots gets a pre-hook and a hook
(an AccumulateGrad node: a pre-hook, and its leaf a post-accumulate-grad hook, which also tells its
exit), removed when the pass ends; a debugger pause waits inside the pre-hook, so it is PyTorch's
own engine that waits. The hooks hold no gradient past their call: PyTorch copies a gradient into
``.grad`` instead of taking it while anyone else holds it. Optimizer steps come from the global
optimizer step hooks. Values are summarised where they live (GPU included) and only the sample,
or what is kept or asked for, is copied to the CPU.

torch stays optional: nothing here is imported by ``import gradviz``; recording attaches this
adapter when the program has imported torch, or as soon as it does.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import math
import os
import sys
import warnings
from dataclasses import replace

import numpy as np

from gradviz import summary as _summary

_COMPILE_HOOKS_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks"
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


class TorchAdapter:
    """What the producer asks of a framework, answered for PyTorch."""

    def __init__(self, torch):
        self.torch = torch
        self.source_dirs = (os.path.dirname(os.path.abspath(torch.__file__)),)
        self.Tensor = torch.Tensor
        self.Parameter = torch.nn.Parameter

    # ids live on the objects: a tensor's __dict__, a node's metadata dict
    def get_tag(self, obj):
        return obj.__dict__.get("_gv_tag") if isinstance(obj, self.Tensor) else obj.metadata.get("_gv_tag")

    def set_tag(self, obj, tag):
        if isinstance(obj, self.Tensor):
            obj.__dict__["_gv_tag"] = tag
        else:
            obj.metadata["_gv_tag"] = tag

    @staticmethod
    def tensor_tag(t):
        return t.__dict__.get("_gv_tag")

    @staticmethod
    def node_tag(node):
        return node.metadata.get("_gv_tag")

    @staticmethod
    def op_name(node):
        return node.name()

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

    @staticmethod
    def given_name(tensor):
        return tensor.__dict__.get("_gv_name")

    # -- values, summarised on their device -------------------------------------------------------
    @staticmethod
    def memory(t):
        try:
            owner = t._base if t._base is not None else t
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


class MultiAdapter:
    """Both frameworks at once: each object goes to the adapter that owns it. Methods are bound
    once here (no per-call dispatch objects): the producer calls them for every node and value."""

    def __init__(self, engine, torch_adapter):
        self.engine, self.torch = engine, torch_adapter
        self.source_dirs = tuple(engine.source_dirs) + tuple(torch_adapter.source_dirs)
        torch = torch_adapter.torch
        from gradviz.engine import Tensor as EngineTensor
        from gradviz.engine.autograd import Node as EngineNode
        engine_types = (EngineTensor, EngineNode)
        tensor_types = (torch.Tensor,)
        # The hottest one (ids of every tensor and node met), resolved per type once: a torch
        # tensor's tag is in its __dict__, a torch node's in its metadata. Whatever is not the
        # engine's is torch's: not every torch graph node is a torch.autograd.graph.Node (the
        # generic CppFunction of foreach ops, TorchScript and forward-mode AD is not).
        self.get_tag = _dispatch_by(lambda cls: engine.get_tag if issubclass(cls, engine_types)
                                    else torch_adapter.tensor_tag if issubclass(cls, torch.Tensor)
                                    else torch_adapter.node_tag)
        for name in ("set_tag", "op_name", "next_nodes", "accumulate_variable", "has_grad_fn",
                     "tensor_meta", "array", "is_parameter", "given_name", "saved"):
            setattr(self, name, _dispatch(engine_types, getattr(engine, name), getattr(torch_adapter, name)))
        for name in ("memory", "summarize", "to_numpy", "is_view", "view_onto"):
            setattr(self, name, _dispatch(tensor_types, getattr(torch_adapter, name), getattr(engine, name)))


def _dispatch(types, if_types, otherwise):
    """The adapter method for ``obj``'s framework, decided once per type (this runs thousands of
    times a step, and ``isinstance`` against torch's classes is the slow part)."""
    by_type = {}

    def method(obj, *args):
        f = by_type.get(type(obj))
        if f is None:
            f = by_type[type(obj)] = if_types if isinstance(obj, types) else otherwise
        return f(obj, *args)
    return method


def _dispatch_by(resolve):
    """A method that runs ``resolve(type(obj))(obj, *args)``, resolving each type once."""
    by_type = {}

    def method(obj, *args):
        f = by_type.get(type(obj))
        if f is None:
            f = by_type[type(obj)] = resolve(type(obj))
        return f(obj, *args)
    return method


def _flat_tensors(torch, items):
    out = []
    for x in items:
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            out.extend(y for y in x if isinstance(y, torch.Tensor))
    return out


class TorchRecording:
    """The hooks that feed a producer from PyTorch, attached together and removed together."""

    def __init__(self, producer, torch):
        self.producer = producer
        self.torch = torch
        self.adapter = TorchAdapter(torch)
        self._handles = []
        self._mode = None
        self._before_step = {}
        self._warning_filter = None
        self._backward_funcs = {torch.Tensor.backward: "tensor", torch.autograd.backward: "backward",
                                torch.autograd.grad: "grad"}
        # A context in which torch's __torch_function__ handling is off (modes included), where
        # this torch has one.
        self._torch_function_off = getattr(torch._C, "DisableTorchFunction", None) or contextlib.nullcontext

    def attach(self):
        torch = self.torch
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module
        p = self.producer
        p.adapter = MultiAdapter(p.adapter, self.adapter)
        p.refresh_skip_dirs()
        compiling = _is_compiling(torch)
        # torch.compile(module) warns of global module hooks: gradviz's, which stand aside while
        # it traces (a warning the program would not have printed without gradviz)
        warnings.filterwarnings("ignore", message=_COMPILE_HOOKS_WARNING, category=UserWarning)
        self._warning_filter = warnings.filters[0]
        self._handles = [
            # quiet: the entry reads each parameter's requires_grad, through the mode otherwise
            nn_module.register_module_forward_pre_hook(self._quiet(
                lambda m, args: None if compiling() else p.module_entered(m))),
            nn_module.register_module_forward_hook(
                lambda m, args, out: None if compiling() else p.module_exited(m), always_call=True),
            optim_module.register_optimizer_step_pre_hook(self._step_pre),
            optim_module.register_optimizer_step_post_hook(self._step_post),
        ]
        self._mode = _make_mode(torch, self)()
        self._mode.__enter__()
        return self

    def detach(self):
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._warning_filter in warnings.filters:
            warnings.filters.remove(self._warning_filter)
            getattr(warnings, "_filters_mutated", lambda: None)()  # (as warnings' own functions do)
        p = self.producer
        if isinstance(p.adapter, MultiAdapter):
            p.adapter = p.adapter.engine
            p.refresh_skip_dirs()

    # -- forward --------------------------------------------------------------------------------
    def made(self, args, kwargs, out):
        torch = self.torch
        outs = out if isinstance(out, tuple) else (out,)
        inputs = None
        for o in outs:
            if isinstance(o, torch.Tensor) and o.grad_fn is not None and self.adapter.get_tag(o.grad_fn) is None:
                if inputs is None:
                    inputs = _flat_tensors(torch, list(args) + list((kwargs or {}).values()))
                self.producer.node_created(o.grad_fn, inputs, o)

    # -- backward -------------------------------------------------------------------------------
    def run_backward(self, kind, func, args, kwargs):
        torch = self.torch
        kwargs = kwargs or {}
        if kind == "tensor":
            roots = [args[0]]
            grads = [args[1] if len(args) > 1 else kwargs.get("gradient")]
        else:
            # (PyTorch makes the roots a tuple before a mode sees them; not the gradients)
            first = args[0] if args else kwargs.get("tensors" if kind == "backward" else "outputs")
            roots = [first] if isinstance(first, torch.Tensor) else list(first)
            name, at = ("grad_tensors", 1) if kind == "backward" else ("grad_outputs", 2)
            g = args[at] if len(args) > at else kwargs.get(name)
            if not (g is None or isinstance(g, (torch.Tensor, list, tuple))):
                g = tuple(g)  # an iterator read here is handed on as what it gave, not used up
                if len(args) > at:
                    args = args[:at] + (g,) + args[at + 1:]
                else:
                    kwargs = {**kwargs, name: g}
            grads = [g] if isinstance(g, torch.Tensor) or g is None else list(g)
            grads += [None] * (len(roots) - len(grads))
        root_nodes = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
        if not root_nodes:
            return func(*args, **kwargs)
        grads = [torch.ones_like(r) if g is None else g for r, g in zip(roots, grads) if r.grad_fn is not None]
        handles = self._hook_graph(root_nodes)
        p = self.producer
        p.backward_started(root_nodes, grads)
        try:
            return func(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
            p.backward_finished()

    def _hook_graph(self, roots):
        p = self.producer
        # The hooks run with gradviz's TorchFunctionMode on: each torch call they make (a
        # summary's reductions, a copy to the host) would go through its Python dispatch, and the
        # mode has nothing to record in backward. Off while a hook runs (measured: most of the
        # recorded step's time on CUDA, where a summary makes ~8 calls).
        off = self._torch_function_off
        entered, exited, accumulated = p.node_entered, p.node_exited, p.grad_accumulated
        handles, seen, stack = [], set(), list(roots)
        pending = {}
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)
            if var is None:
                # (A hook's return value would replace the gradients: these return None.)
                def pre(go, node=node):
                    with off():
                        entered(node, go)

                def post(gi, go, node=node):
                    with off():
                        exited(node, gi)

                handles.append(node.register_prehook(pre))
                handles.append(node.register_hook(post))
            else:
                def before(go, node=node, var=var):
                    # The gradient's Value, not the tensor: while anything else holds the
                    # tensor, AccumulateGrad copies it into .grad instead of taking it.
                    with off():
                        fresh = var.grad is None
                        values = entered(node, go)
                    pending[node] = (values[0] if values else None, fresh)

                def after(tensor, node=node):
                    # AccumulateGrad's work is done here, and it has no gradients to hand on:
                    # its exit is told here too, in the engine's order, without a third hook.
                    contribution, fresh = pending.pop(node, (None, False))
                    with off():
                        accumulated(node, tensor, contribution, tensor.grad, fresh)
                        exited(node, ())

                handles.append(node.register_prehook(before))
                handles.append(var.register_post_accumulate_grad_hook(after))
            stack.extend(fn for fn, _ in node.next_functions)
        return handles

    # -- optimizers -----------------------------------------------------------------------------
    def _quiet(self, fn):
        """``fn`` run with torch's __torch_function__ handling off."""
        off = self._torch_function_off

        def call(*args):
            with off():
                return fn(*args)
        return call

    def _params_of(self, optimizer):
        return [q for g in optimizer.param_groups for q in g["params"] if q.grad is not None]

    # The step hooks run outside any torch call, so with gradviz's mode on: each of their torch
    # calls would go through its Python dispatch (about 20 µs each, four a parameter).
    def _step_pre(self, optimizer, args, kwargs):
        with self._torch_function_off(), self.torch.no_grad():
            self._before_step[id(optimizer)] = [(q, q.detach().clone()) for q in self._params_of(optimizer)]

    def _step_post(self, optimizer, args, kwargs):
        before = self._before_step.pop(id(optimizer), [])
        torch = self.torch
        with self._torch_function_off(), torch.no_grad():
            norms = []
            for q, b in before:
                b.sub_(q.detach())  # the change, in the copy's own memory: no new arrays
                low = b.dtype in (torch.float16, torch.bfloat16)
                norms.append(torch.linalg.vector_norm(b, dtype=torch.float32 if low else None).double())
            if len({n.device for n in norms}) > 1:
                norms = [n.item() for n in norms]
            elif norms:
                norms = torch.stack(norms).tolist()  # one wait on a device for them all
        lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        self.producer.optimizer_step(type(optimizer).__name__, list(zip([q for q, _ in before], norms)),
                                     float(lr) if isinstance(lr, (int, float)) else None)


def _is_compiling(torch):
    """Whether torch.compile or torch.jit.trace is tracing the program. While they do, gradviz's
    hooks stand aside: tracing them would break torch.compile, and put a summary's reductions into
    the graph torch.jit.trace makes. What they made runs as PyTorch graph nodes, recorded as any."""
    compiler = getattr(torch, "compiler", None)
    compiling = getattr(compiler, "is_compiling", None) or (lambda: False)
    jit_tracing = torch._C._is_tracing if hasattr(torch._C, "_is_tracing") else (lambda: False)
    return lambda: compiling() or jit_tracing()


def _make_mode(torch, rec):
    from torch.overrides import TorchFunctionMode

    backward_funcs = rec._backward_funcs
    is_grad_enabled = torch.is_grad_enabled
    is_compiling = _is_compiling(torch)

    class GradvizMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if is_compiling():  # torch.compile tracing: its compiled graph is recorded when it runs
                return func(*args, **(kwargs or {}))
            kind = backward_funcs.get(func)
            if kind is not None:
                return rec.run_backward(kind, func, args, kwargs)
            out = func(*args, **(kwargs or {}))
            if is_grad_enabled():
                rec.made(args, kwargs, out)
            return out

    return GradvizMode


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Calls back once torch has been imported, for programs that import it while recording."""

    def __init__(self, callback):
        self.callback = callback

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        self.remove()
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        loader, callback = spec.loader, self.callback
        original = loader.exec_module

        def exec_module(module):
            original(module)
            callback(module)

        loader.exec_module = exec_module
        return spec

    def remove(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class TorchAttachment:
    """Attaches torch recording to a producer now if torch is loaded, else when it gets imported."""

    def __init__(self, producer):
        self.producer = producer
        self.recording = None
        self._watcher = None

    def start(self):
        if "torch" in sys.modules:
            self._attach(sys.modules["torch"])
        else:
            self._watcher = _ImportWatcher(self._attach)
            sys.meta_path.insert(0, self._watcher)
        return self

    def _attach(self, torch):
        if self.recording is None:
            self.recording = TorchRecording(self.producer, torch).attach()

    def stop(self):
        if self._watcher is not None:
            self._watcher.remove()
            self._watcher = None
        if self.recording is not None:
            self.recording.detach()
            self.recording = None
