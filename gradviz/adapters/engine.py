"""gradviz.engine's adapter: ``EngineAdapter`` answers what the producer asks of a framework (the
``Adapter`` protocol), and ``EngineRecording`` hears the engine's observer API
(``gradviz.engine.hooks``: node creation, the backward executor's loop, module calls, optimizer
steps) and tells a ``Producer`` in the engine's terms. The engine knows nothing of gradviz."""
import os

import numpy as np

from gradviz.adapters.weak import NAMES, WeakTable
from gradviz.summary import Batch, summarize, summarize_into

from gradviz.engine import hooks
from gradviz.engine.autograd import AccumulateGrad
from gradviz.engine.nn import Parameter

import gradviz.engine as _engine

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
        """(owner of the memory, its size, the array's size, the array's shape, its version: the
        engine never writes into an array it has handed out, so None)."""
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

    @staticmethod
    def is_parameter(tensor):
        return isinstance(tensor, Parameter)

    given_name = staticmethod(NAMES.get)


class EngineRecording:
    """The engine's moments, told to a producer while attached (``attach``/``detach``)."""

    def __init__(self, producer):
        self.p = producer
        self._handle = None

    def attach(self):
        if self._handle is None:
            self._handle = hooks.register_observer(self)
        return self

    def detach(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

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
