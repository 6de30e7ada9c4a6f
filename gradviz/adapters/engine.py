"""gradviz.engine's adapter: ``EngineAdapter`` answers what the producer asks of a framework (the
``Adapter`` protocol), and ``EngineRecording`` hears the engine's observer API
(``gradviz.engine.hooks``: node creation, the backward executor's loop, module calls, optimizer
steps) and tells a ``Producer`` in the engine's terms. The engine knows nothing of gradviz."""
import os
import weakref

import numpy as np

from gradviz.adapters.protocol import NotCheckable, Replay, backward_source
from gradviz.adapters.weak import NAMES, WeakTable
from gradviz.summary import Batch, summarize, summarize_into

from gradviz.engine import hooks
from gradviz.engine.autograd import AccumulateGrad
from gradviz.engine.autograd.function import TensorBase
from gradviz.engine.nn import Parameter

import gradviz.engine as _engine
from gradviz.engine import _random

_ENGINE_DIR = os.path.dirname(os.path.abspath(_engine.__file__))


class EngineAdapter:
    """What the producer asks of a framework, answered for gradviz.engine."""

    source_dirs = (_ENGINE_DIR,)

    @staticmethod
    def saved(node):
        """The arrays ``node`` saved for its backward, as (name, array), named as PyTorch names them
        (``self``, ``other``, ``mat2``, ``result``...: its ``grad_fn._saved_<name>``; ``saved i``
        where PyTorch has no counterpart); raises if freed."""
        names = type(node).saved_names
        return [(names[i] if i < len(names) and names[i] else f"saved {i}", a)
                for i, a in enumerate(node.saved_tensors) if isinstance(a, np.ndarray)]

    @staticmethod
    def vjp(node, like, arrays):
        """``node``'s backward run once more on ``arrays`` (shaped and typed as ``like``, its
        grad_outputs): v^T . J, its grad_inputs for that v; the pass is not touched."""
        grads = [np.asarray(a, dtype=g.dtype).reshape(g.shape) for a, g in zip(arrays, like)]
        out = node.backward(*grads)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def __init__(self):
        # ids live beside the engine's tensors and nodes, never in them (gradviz.adapters.weak);
        # each adapter (one per recording) has its own table, its methods bound here (one call less
        # on the recording's hottest path).
        self._tags = WeakTable()
        self._batch = Batch()
        self.get_tag = self._tags.get
        self.set_tag = self._tags.set
        self._forward = WeakTable()  # node -> the arguments its forward had (keep_forward)
        # id(memory owner) -> its entry: the Values holding it or a view of it (no copy), i.e.
        # the arrays a recording keeps as the program's own (``kept``), copied before the engine
        # writes into them (``writing``). Only what is written gets copied, only then.
        self._kept = {}  # id(owner) -> [weak reference to it, Value, Value...]
        self._kept_purge_at = 1024

    def keep_forward(self, node, args, kwargs):
        """Keep what ``node``'s forward was called with, until it runs in backward: the input
        arrays themselves (no copies) with their version counters, and the other arguments."""
        kept = tuple((a._np, a._vc, a._vc[0]) if isinstance(a, TensorBase) else a for a in args)
        self._forward.set(node, (kept, dict(kwargs)))

    def release_forward(self, node):
        """Let go of what ``keep_forward`` kept for ``node`` (it ran in backward: a graph kept
        alive by its output must not keep its activations alive too)."""
        if self._forward.get(node) is not None:
            self._forward.set(node, _RELEASED)

    def replay(self, node):
        """``node``'s forward, ready to run again in float64 on copies of the inputs it saw (a
        ``Replay``); raises ``NotCheckable`` saying why it cannot be."""
        if isinstance(node, AccumulateGrad):
            raise NotCheckable("AccumulateGrad adds its gradient into .grad: it has no forward to check")
        # a Function written outside the engine (the user's): where its backward is
        src = None if type(node).__module__.startswith("gradviz.engine") else backward_source(type(node))
        try:
            return self._replay(node, src)
        except NotCheckable as exc:
            exc.backward_source = src  # type: ignore[attr-defined]
            raise

    def _replay(self, node, src):
        rec = self._forward.get(node)
        if rec is None:
            raise NotCheckable("its forward inputs were not kept (made before gradviz watched, or not a Function)")
        if rec is _RELEASED:
            raise NotCheckable(_RELEASED)
        kept, kwargs = rec
        tensors = [i for i, a in enumerate(kept) if isinstance(a, tuple) and len(a) == 3
                   and isinstance(a[0], np.ndarray) and isinstance(a[1], list)]
        for k, i in enumerate(tensors):
            array, counter, version = kept[i]
            if counter[0] != version:
                raise NotCheckable(f"input {k} was modified in place since forward (version {version}, now "
                                   f"{counter[0]})")
        diff, edges = [], []
        for k, i in enumerate(tensors):
            fn = node.next_functions[k][0] if k < len(node.next_functions) else None
            if fn is not None and np.issubdtype(kept[i][0].dtype, np.inexact):
                diff.append(i)
                edges.append(k)
        if not diff:
            if tensors and all(not np.issubdtype(kept[i][0].dtype, np.inexact) for i in tensors):
                raise NotCheckable("its inputs are integers: nothing to differentiate")
            raise NotCheckable("none of its inputs needs a gradient")
        # every floating input in float64 (ops insist on one dtype), the differentiable ones replaced
        base = [(a[0].astype(np.float64) if np.issubdtype(a[0].dtype, np.floating) else a[0]) if i in tensors else a
                for i, a in enumerate(kept)]
        kwargs = {k: _float64_dtype(x) for k, x in kwargs.items()}
        base = [_float64_dtype(x) for x in base]
        cls = type(node)

        def run(arrays):
            args = list(base)
            for i, x in zip(diff, arrays):
                args[i] = x
            fresh = cls()
            fresh.needs_input_grad = tuple(True for _ in tensors)
            generator = _random.generator()
            state = generator.bit_generator.state
            try:
                with np.errstate(all="ignore"):
                    out = fresh.forward(*args, **kwargs)
            finally:
                drew = generator.bit_generator.state != state
                generator.bit_generator.state = state  # the program's random numbers stay its own
            if drew:
                raise NotCheckable("its forward draws random numbers (such as dropout without its mask)")
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [np.asarray(o) for o in outs]

        inputs = [np.array(kept[i][0], dtype=np.float64) for i in diff]
        outputs = run(inputs)
        if not np.issubdtype(outputs[0].dtype, np.inexact):
            raise NotCheckable(f"not differentiable: its output is {outputs[0].dtype}")
        return Replay(inputs, edges, run, [o.astype(np.float64) for o in outputs], src)

    def get_tag(self, obj):
        return self._tags.get(obj)

    def set_tag(self, obj, tag):
        self._tags.set(obj, tag)

    @staticmethod
    def op_name(node):
        return type(node).__name__

    @staticmethod
    def next_nodes(node):
        return [fn for fn, _ in node.next_functions]

    @staticmethod
    def accumulate_variable(node):
        return node.variable if isinstance(node, AccumulateGrad) else None

    @staticmethod
    def has_grad_fn(tensor):
        return tensor.grad_fn is not None

    @staticmethod
    def tensor_meta(tensor):
        a = tensor._np
        return tuple(a.shape), a.dtype.str, tensor._requires_grad

    @staticmethod
    def array(tensor):
        return tensor._np

    # Values reach the producer as numpy arrays.
    summarize = staticmethod(summarize)

    def summarize_later(self, array):
        """The summary, made with others' at the next ``flush`` from copies taken now (the engine
        writes parameters in place): a small array's whole, a large one's sample (its exact
        part is read now); ``summary.summarize_into``."""
        return summarize_into(self._batch, array)

    def flush(self):
        self._batch.resolve()

    @staticmethod
    def memory(array):
        """(owner of the memory, its size, the array's size, the array's shape, its version: None,
        numpy arrays have none; the engine tells of its writes instead, ``hooks.array_writing``,
        and the producer then forgets the summary it made of that memory)."""
        owner = array.base if isinstance(array.base, np.ndarray) else array
        return owner, owner.size, array.size, array.shape, None

    @staticmethod
    def view_onto(view, owner, snapshot):
        """``view`` of ``owner``, remade onto ``snapshot`` (a copy of ``owner``); None if the two
        are not laid out alike."""
        if snapshot.strides != owner.strides or snapshot.dtype != owner.dtype:
            return None
        offset = view.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
        return np.ndarray(view.shape, view.dtype, buffer=snapshot, offset=offset, strides=view.strides)

    @staticmethod
    def is_view(array):
        return isinstance(array.base, np.ndarray)

    @staticmethod
    def to_numpy(array, copy):
        return array.copy() if copy else array

    def kept(self, value):
        """``value.array`` is the program's own array (``to_numpy`` made no copy): keep it right
        if the engine writes into its memory later (an in-place op under ``no_grad``, through
        ``.data``, an optimizer's step, clipping): ``writing`` copies it first."""
        a = value.array
        if type(a) is not np.ndarray:  # a numpy scalar (some reductions make one): never written
            return
        owner = a.base if isinstance(a.base, np.ndarray) else a
        kept = self._kept
        entry = kept.get(id(owner))
        if entry is not None and entry[0]() is owner:
            entry.append(value)
            return
        if len(kept) >= self._kept_purge_at:  # entries of arrays that died since, let go
            kept = self._kept = {k: e for k, e in kept.items() if e[0]() is not None}
            self._kept_purge_at = 2 * len(kept) + 1024
        kept[id(owner)] = [weakref.ref(owner), value]

    def writing(self, owner):
        """The engine is about to write into ``owner``'s memory (the ``array_writing`` moment, of
        that array or a view of it): every kept Value that holds it gets a copy of its values as
        they are now."""
        entry = self._kept.pop(id(owner), None)
        if entry is None or entry[0]() is not owner:
            return
        for v in entry[1:]:
            a = v.array
            if a is not None and (a is owner or a.base is owner):
                v.array = a.copy()

    @staticmethod
    def is_parameter(tensor):
        return isinstance(tensor, Parameter)

    given_name = staticmethod(NAMES.get)


_RELEASED = "its forward inputs were let go when it ran in backward (as its saved tensors are): check it before it runs"


def _float64_dtype(x):
    """A floating dtype argument (an op's result dtype) as float64, for a float64 re-run."""
    if isinstance(x, np.dtype) and np.issubdtype(x, np.floating):
        return np.dtype(np.float64)
    if isinstance(x, type) and issubclass(x, np.floating):
        return np.float64
    return x


class EngineRecording:
    """The engine's moments, told to a producer while attached (``attach``/``detach``)."""

    def __init__(self, producer):
        self.p = producer
        self._handle = None
        self._forward_handle = None
        self._writing_handle = None

    def attach(self):
        if self._handle is None:
            # The moments the producer takes with the engine's own arguments go to its methods
            # straight, with no call of this object's between (thousands of nodes a step).
            for name in ("node_created", "node_exited", "module_entered", "module_exited"):
                setattr(self, name, getattr(self.p, name))
            self._handle = hooks.register_observer(self)
            adapter = getattr(self.p.adapter, "engine", self.p.adapter)
            if getattr(self.p, "keep_forward", False) and isinstance(adapter, EngineAdapter):
                self._forward_handle = hooks.node_forward.register(adapter.keep_forward)
            # A write into an array: its summary made before no longer serves (the producer's
            # cache), and with full values the arrays kept as the program's own are copied first.
            keeps = getattr(self.p, "keep_arrays", False) and isinstance(adapter, EngineAdapter)
            told = (self.p.memory_written, adapter.writing) if keeps else (self.p.memory_written,)

            def written(array, told=told):
                owner = array.base if isinstance(array.base, np.ndarray) else array
                for tell in told:
                    tell(owner)
            self._writing_handle = hooks.array_writing.register(written)
        return self

    def detach(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._forward_handle is not None:
            self._forward_handle.remove()
            self._forward_handle = None
        if self._writing_handle is not None:
            self._writing_handle.remove()
            self._writing_handle = None

    # Function.apply
    def node_created(self, node, inputs, output):
        self.p.node_created(node, inputs, output)

    # the backward executor
    def backward_started(self, root, root_edges, root_grads, planned):
        self.p.backward_started([root], root_grads, planned)

    def node_entered(self, node, grad):
        self.p.node_entered(node, (grad,))

    def node_exited(self, node, grad_inputs):
        self.p.node_exited(node, grad_inputs)

    def grad_accumulated(self, node, grad, fresh):
        self.p.grad_accumulated(node, node.variable, grad, node.variable._grad._np, fresh)

    def backward_finished(self, root):
        self.p.backward_finished()

    # nn.Module.__call__
    def module_entered(self, module):
        self.p.module_entered(module)

    def module_exited(self, module):
        self.p.module_exited(module)

    # Optimizer.step
    def optimizer_step(self, optimizer, updates):
        self.p.optimizer_step(type(optimizer).__name__, updates, optimizer.param_groups[0].get("lr"))
