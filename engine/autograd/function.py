"""Backward nodes: ``Node`` (a tensor's ``grad_fn``), ``Function.apply`` (the one place a node is
created and wired), ``AccumulateGrad`` (a leaf's sink) and ``GraphRoot``."""
import itertools
import re

import numpy as np

from .. import hooks as _hooks
from ..hooks import RemovableHandle
from . import grad_mode

# Like PyTorch's per-thread sequence number: the backward executor runs the ready node created last.
_sequence = itertools.count()
ACCUMULATE_GRAD_SEQUENCE_NR = 2**64 - 1  # PyTorch gives AccumulateGrad UINT64_MAX: it runs as soon as ready

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after they "
    "have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
    "graph a second time or if you need to access saved tensors after calling backward."
)

_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long", "int32": "Int",
               "bool": "Bool"}


def _modified_message(array, current, expected, grad_fn, view):
    """PyTorch's text for a saved tensor written in place after it was saved (``SavedVariable::unpack``)."""
    title = _TYPE_NAMES.get(array.dtype.name, array.dtype.name.capitalize())
    size = "[" + ", ".join(str(n) for n in array.shape) + "]"
    owner = ""
    if grad_fn is not None:
        name = "AsStrided" if view else re.sub(r"Backward\d*$", "", grad_fn.name())
        owner = f", which is output 0 of {name},"
    return ("one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"[torch.{title}Tensor {size}]{owner} is at version {current}; expected version {expected} instead. "
            "Hint: enable anomaly detection to find the operation that failed to compute its gradient, with "
            "torch.autograd.set_detect_anomaly(True, check_nan=False).")


class TensorBase:
    """What the autograd layer knows of a tensor: ``_np`` (its array), ``requires_grad``,
    ``_vc`` (its version counter: a one-item list, shared with its views, bumped by every in-place
    write), ``_edge()`` (its (node, output_nr) pair) and ``_result(array, grad_fn)``, which makes a
    new plain tensor. ``gradviz.engine.Tensor`` is the one subclass; nodes make tensors through it, so
    this layer never imports the tensor module."""

    __slots__ = ()

    @staticmethod
    def _from_array(array):
        """A plain tensor holding ``array`` (set by the tensor module)."""
        raise NotImplementedError


class Node:
    """A function of the backward graph. ``next_functions`` holds, in input order, one
    ``(node, output_nr)`` pair per tensor input: that input's grad_fn, its AccumulateGrad when it is a
    leaf that requires grad, or ``None``."""

    next_functions = ()
    sequence_nr = -1
    _saved = ()
    _versions = ()  # (version counter, version when saved, (array, grad_fn)) per tensor saved
    is_view = False  # whether the output is a view of the first input (and shares its version counter)
    saved_names = ()  # PyTorch's names for what save_for_backward holds, in order (None: no counterpart)
    _released = False
    _retained = None  # weak reference to the output tensor when it called retain_grad()

    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"

    # -- saved tensors -------------------------------------------------------------------------
    def save_for_backward(self, *arrays):
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._released:
            raise RuntimeError(FREED_MESSAGE)
        for counter, version, tensor_meta in self._versions:
            if counter[0] != version:
                array, grad_fn = tensor_meta
                if grad_fn is True:  # an output of this node
                    grad_fn = self
                view = grad_fn is not None and grad_fn.is_view and grad_fn is not self
                raise RuntimeError(_modified_message(array, counter[0], version, grad_fn, view))
        return self._saved

    def __getattr__(self, name):
        # grad_fn._saved_self, ._saved_other, ...: what the node saved, by PyTorch's names
        if name.startswith("_saved_") and name[7:] in type(self).saved_names:
            i = type(self).saved_names.index(name[7:])
            saved = self.saved_tensors
            array = saved[i] if i < len(saved) else None
            return None if array is None else TensorBase._from_array(array)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def release_variables(self):
        if self._saved:
            self._saved = ()
            self._versions = ()
            self._released = True

    # -- hooks ----------------------------------------------------------------------------------
    def _hook_list(self, attr):
        hooks = self.__dict__.get(attr)
        if hooks is None:
            hooks = self.__dict__[attr] = []
        return hooks

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` runs after this node; it may return new grad_inputs."""
        hooks = self._hook_list("_post_hooks")
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def register_prehook(self, fn):
        """``fn(grad_outputs)`` runs before this node; it may return new grad_outputs."""
        hooks = self._hook_list("_pre_hooks")
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def _tensor_hooks(self):
        return self.__dict__.get("_tensor_pre_hooks", ())

    def backward(self, grad):
        raise NotImplementedError(f"{self.name()} has no backward")


class Function(Node):
    """A differentiable primitive: ``forward`` computes on numpy arrays, ``backward`` returns one
    gradient (numpy array or None) per tensor input. Tensor arguments get edges; any other argument
    is passed to ``forward`` as it is.

    ``Function.apply`` notes the version of every tensor whose array ``forward`` saved (an input's
    array or the output itself) and of the inputs named in ``saved_inputs`` (those PyTorch saves
    where this engine saves something derived from them); ``saved_tensors`` checks them."""

    saved_inputs = ()

    @classmethod
    def apply(cls, *args, **kwargs):
        node = cls()
        inputs = [a for a in args if isinstance(a, TensorBase)]
        if not inputs:
            raise TypeError(f"{cls.__name__}.apply() needs at least one tensor argument")
        requires_grad = grad_mode.is_grad_enabled() and any(t.requires_grad for t in inputs)
        node.needs_input_grad = tuple(t.requires_grad for t in inputs) if requires_grad else None
        with np.errstate(all="ignore"):  # like PyTorch: inf and nan are values, not warnings
            out = node.forward(*[a._np if isinstance(a, TensorBase) else a for a in args], **kwargs)
        if not requires_grad:
            result = inputs[0]._result(out)
            if cls.is_view:
                result._vc = inputs[0]._vc
            return result
        node.next_functions = tuple(t._edge() for t in inputs)
        node.sequence_nr = next(_sequence)
        result = inputs[0]._result(out, node)
        if cls.is_view:
            result._vc = inputs[0]._vc
        if node._saved or cls.saved_inputs:
            node._versions = _note_versions(node, inputs, out, result)
        if _hooks.node_forward:
            for hook in _hooks.node_forward:
                hook(node, args, kwargs)
        if _hooks.node_created:
            for hook in _hooks.node_created:
                hook(node, inputs, result)
        return result


def _note_versions(node, inputs, out, result):
    """(counter, version now, (array, grad_fn)) for each tensor ``node`` saved: an input or the
    output whose very array it saved, and the inputs named in ``saved_inputs``."""
    versions = []
    for array in node._saved:
        if array is out:
            versions.append((result._vc, result._vc[0], (array, True)))
            continue
        for t in inputs:
            if array is t._np:
                versions.append((t._vc, t._vc[0], (array, t.grad_fn)))
                break
    for i in node.saved_inputs:
        if i >= len(inputs):
            break
        t = inputs[i]
        if not any(counter is t._vc for counter, _, _ in versions):
            meta = np.broadcast_to(np.empty((), t._np.dtype), t._np.shape)  # shape and dtype, no data
            versions.append((t._vc, t._vc[0], (meta, t.grad_fn)))
    return tuple(versions)


class AccumulateGrad(Node):
    """The sink of a leaf tensor that requires grad: adds the incoming gradient into ``.grad``."""

    sequence_nr = ACCUMULATE_GRAD_SEQUENCE_NR

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def _tensor_hooks(self):
        return self.variable._leaf_hooks or ()

    def accumulate(self, grad):
        var = self.variable
        if var.grad is None:
            # Copy: the incoming array may be a broadcast view or shared with a sibling's gradient.
            # Like PyTorch, lay .grad out as the variable is, so that optimisers stream both alike.
            order = "C" if var._np.flags.c_contiguous else "K"
            var.grad = var._result(np.array(grad, dtype=var._np.dtype, order=order, copy=True))
        else:
            if _hooks.array_writing:
                _hooks.writing(var.grad._np)
            var.grad._np += grad


class GraphRoot(Node):
    """Feeds the given gradients to several roots at once (PyTorch adds one for multi-root backward)."""

    def __init__(self, edges, grads):
        self.next_functions = tuple(edges)
        self._grads = tuple(grads)
        self.sequence_nr = next(_sequence)

    def name(self):
        return "torch::autograd::GraphRoot"

    def backward(self, grad):
        return self._grads
