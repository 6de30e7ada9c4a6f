"""``backward`` and ``grad``, as in ``torch.autograd``: the checks and messages on the roots and the
gradients given for them, then one pass of the executor."""
import numpy as np

from . import executor


def _as_list(x):
    if x is None:
        return None
    return [x] if not isinstance(x, (list, tuple)) else list(x)


def _fmt_size(shape):
    return f"torch.Size([{', '.join(str(n) for n in shape)}])"


def _root_grads(outputs, grad_outputs):
    grads = []
    for i, out in enumerate(outputs):
        g = grad_outputs[i] if grad_outputs is not None and i < len(grad_outputs) else None
        if g is None:
            if out._np.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            if out._np.dtype.kind != "f":
                raise RuntimeError(f"grad can be implicitly created only for real scalar outputs but got {out.dtype!r}")
            grads.append(np.ones_like(out._np))
            continue
        arr = g._np if hasattr(g, "_np") else np.asarray(g, dtype=out._np.dtype)
        if arr.shape != out._np.shape:
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {_fmt_size(arr.shape)} and "
                               f"output[{i}] has a shape of {_fmt_size(out._np.shape)}.")
        grads.append(arr.astype(out._np.dtype, copy=False))
    return grads


def _root_edges(outputs):
    edges = []
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        edges.append(out._edge())
    return edges


def _check_create_graph(create_graph):
    if create_graph:
        raise NotImplementedError(
            "create_graph=True (higher-order gradients) is not supported by gradviz.engine: its backward "
            "formulas run on numpy arrays and are not themselves recorded")


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Compute the gradients of ``tensors`` and accumulate them into the leaves' ``.grad``."""
    _check_create_graph(create_graph)
    if inputs is not None:
        raise NotImplementedError("backward(inputs=...) is not supported by gradviz.engine; use autograd.grad")
    outputs = _as_list(tensors)
    grad_tensors = _as_list(grad_tensors)
    edges = _root_edges(outputs)
    grads = _root_grads(outputs, grad_tensors)
    executor.execute(edges, grads, retain_graph=bool(retain_graph) if retain_graph is not None else create_graph,
                     make_tensor=outputs[0]._result)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=None,
         materialize_grads=False):
    """Return the gradients of ``outputs`` with respect to ``inputs`` without touching ``.grad``."""
    _check_create_graph(create_graph)
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    grad_outputs = _as_list(grad_outputs)
    edges = _root_edges(outputs)
    grads = _root_grads(outputs, grad_outputs)
    targets = []
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
        targets.append(t._edge()[0])
    captured = executor.execute(edges, grads, retain_graph=bool(retain_graph) if retain_graph is not None
                                else create_graph, capture=targets, make_tensor=outputs[0]._result)
    result = []
    for t, g in zip(inputs, captured):
        if g is None:
            if materialize_grads:
                g = np.zeros_like(t._np)
            elif not allow_unused:
                raise RuntimeError("One of the differentiated Tensors appears to not have been used in the graph. "
                                   "Set allow_unused=True if this is the desired behavior.")
        result.append(None if g is None else t._result(np.array(g, dtype=t._np.dtype)))
    return tuple(result)
