"""``torch.nn.utils``: gradient clipping, as PyTorch clips (the scale is applied even when it is 1)."""
import math

import numpy as np

from .. import hooks as _hooks
from .._tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm(a, norm_type):
    a = a.ravel()
    if norm_type == math.inf:
        return np.abs(a).max(initial=0).astype(a.dtype)
    if norm_type == 2.0:
        return np.sqrt(np.dot(a, a))
    return (np.abs(a) ** norm_type).sum() ** (1.0 / norm_type)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    tensors = [tensors] if isinstance(tensors, Tensor) else [t for t in tensors if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return Tensor._wrap(np.array(0.0, np.float32))
    norms = np.array([_norm(t._np, norm_type) for t in tensors], dtype=tensors[0]._np.dtype)
    total = _norm(norms, norm_type).astype(norms.dtype)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    return Tensor._wrap(np.asarray(total))


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    grads = _grads(parameters)
    if not grads:
        return
    total = total_norm._np
    # max_norm / (total + 1e-6) as PyTorch evaluates it: a reciprocal, then a product, in the norm's dtype
    coef = np.minimum(np.reciprocal(total + total.dtype.type(1e-6)) * total.dtype.type(max_norm), 1).astype(total.dtype)
    for g in grads:
        if _hooks.array_writing:
            _hooks.writing(g._np)
        g._np *= coef
        g._vc[0] += 1


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm``; return the total norm before clipping."""
    if not isinstance(parameters, Tensor):
        parameters = list(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    clip_value = float(clip_value)
    for g in _grads(parameters):
        if _hooks.array_writing:
            _hooks.writing(g._np)
        np.clip(g._np, -clip_value, clip_value, out=g._np)
        g._vc[0] += 1
