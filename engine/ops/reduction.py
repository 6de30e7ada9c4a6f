"""Reductions and the softmax family."""
import numpy as np

from ..autograd.function import Function, TensorBase


def _expand_back(grad, shape, dims, keepdim):
    if not keepdim and dims is not None:
        for d in sorted(dims):
            grad = np.expand_dims(grad, d)
    return np.broadcast_to(grad, shape)


def _norm_dims(dim, ndim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-max(ndim, 1)}, {max(ndim, 1) - 1}], but got {d})")
        out.append(d % max(ndim, 1))
    return tuple(out)


class SumBackward0(Function):
    def forward(self, x, dtype=None):
        self.shape = x.shape
        out = np.sum(x, dtype=dtype)
        return np.asarray(out, dtype=out.dtype)

    def backward(self, grad):
        return (np.broadcast_to(grad, self.shape),)


class SumBackward1(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.shape, self.dims, self.keepdim = x.shape, _norm_dims(dim, x.ndim), keepdim
        return np.asarray(np.sum(x, axis=self.dims if x.ndim else None, keepdims=keepdim))

    def backward(self, grad):
        return (_expand_back(grad, self.shape, self.dims, self.keepdim),)


class MeanBackward0(Function):
    def forward(self, x):
        self.shape = x.shape
        return np.asarray(np.mean(x), dtype=x.dtype)

    def backward(self, grad):
        return (np.broadcast_to(grad / max(np.prod(self.shape), 1), self.shape),)


class MeanBackward1(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.shape, self.dims, self.keepdim = x.shape, _norm_dims(dim, x.ndim), keepdim
        self.count = int(np.prod([x.shape[d] for d in self.dims])) if x.ndim else 1
        return np.asarray(np.mean(x, axis=self.dims if x.ndim else None, keepdims=keepdim), dtype=x.dtype)

    def backward(self, grad):
        return (_expand_back(grad / self.count, self.shape, self.dims, self.keepdim),)


class _Extremum(Function):
    """max()/min() of everything (…Backward1) and amax/amin over dims: the gradient is shared evenly
    among tied extrema, as PyTorch does."""

    reduce = None

    def forward(self, x, dim=None, keepdim=False):
        if x.size == 0:
            raise RuntimeError(f"{self.op_name}(): Expected reduction dim to be specified for input.numel() == 0. "
                               f"Specify the reduction dim with the 'dim' argument.")
        self.dims, self.keepdim = _norm_dims(dim, x.ndim), keepdim
        axis = self.dims if x.ndim else None
        out = self.reduce(x, axis=axis, keepdims=keepdim)
        self.save_for_backward(x, np.asarray(out))
        return np.asarray(out)

    def backward(self, grad):
        x, out = self.saved_tensors
        if self.dims is not None and not self.keepdim:
            for d in sorted(self.dims):
                out, grad = np.expand_dims(out, d), np.expand_dims(grad, d)
        mask = x == out
        count = mask.sum(axis=self.dims, keepdims=True) if self.dims is not None else mask.sum()
        return ((mask * (grad / count)).astype(x.dtype, copy=False),)


class MaxBackward1(_Extremum):
    op_name = "max"
    reduce = staticmethod(np.max)


class MinBackward1(_Extremum):
    op_name = "min"
    reduce = staticmethod(np.min)


class AmaxBackward0(_Extremum):
    op_name = "amax"
    reduce = staticmethod(np.max)


class AminBackward0(_Extremum):
    op_name = "amin"
    reduce = staticmethod(np.min)


class _ExtremumDim(Function):
    """max(dim)/min(dim): values and indices; the gradient goes to the selected index only."""

    def forward(self, x, dim, keepdim=False):
        (d,) = _norm_dims(dim, x.ndim)
        self.shape, self.dim, self.keepdim = x.shape, d, keepdim
        idx = self.arg(x, axis=d, keepdims=True) if x.ndim else np.zeros((), np.int64)
        values = np.take_along_axis(x, idx, axis=d) if x.ndim else x.copy()
        self.save_for_backward(idx)
        if not keepdim and x.ndim:
            values, idx = values.squeeze(d), idx.squeeze(d)
        self.indices = idx.astype(np.int64)
        return values

    @property
    def _saved_indices(self):
        self.saved_tensors  # noqa: B018 - raises once freed, as PyTorch's
        return TensorBase._from_array(self.indices)

    def backward(self, grad):
        (idx,) = self.saved_tensors
        if not self.keepdim and len(self.shape):
            grad = np.expand_dims(grad, self.dim)
        out = np.zeros(self.shape, grad.dtype)
        if len(self.shape):
            np.put_along_axis(out, idx, grad, axis=self.dim)
        else:
            out[...] = grad
        return (out,)


class MaxBackward0(_ExtremumDim):
    arg = staticmethod(np.argmax)


class MinBackward0(_ExtremumDim):
    arg = staticmethod(np.argmin)


class LinalgVectorNormBackward0(Function):
    """The 2-norm over ``dim`` (all elements when None); the gradient of a zero norm is zero."""

    def forward(self, x, dim=None, keepdim=False):
        self.dims, self.keepdim = _norm_dims(dim, x.ndim), keepdim
        out = np.sqrt(np.sum(x * x, axis=self.dims if x.ndim else None, keepdims=keepdim))
        self.save_for_backward(x, np.asarray(out))
        return np.asarray(out, dtype=x.dtype)

    def backward(self, grad):
        x, out = self.saved_tensors
        if self.dims is not None and not self.keepdim:
            for d in sorted(self.dims):
                out, grad = np.expand_dims(out, d), np.expand_dims(grad, d)
        scale = np.divide(grad, out, out=np.zeros(np.broadcast_shapes(grad.shape, out.shape), x.dtype),
                          where=out != 0)
        return (x * scale,)


def _log_softmax(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


class SoftmaxBackward0(Function):
    def forward(self, x, dim):
        (self.dim,) = _norm_dims(dim, x.ndim)
        e = np.exp(x - x.max(axis=self.dim, keepdims=True))
        y = e / e.sum(axis=self.dim, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
        return (y * (grad - (grad * y).sum(axis=self.dim, keepdims=True)),)


class LogSoftmaxBackward0(Function):
    def forward(self, x, dim):
        (self.dim,) = _norm_dims(dim, x.ndim)
        y = _log_softmax(x, self.dim)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
        return (grad - np.exp(y) * grad.sum(axis=self.dim, keepdims=True),)


# What PyTorch calls the tensors each node saves (``grad_fn._saved_<name>``), in the order they are saved.
for _node, _names in ((_Extremum, ("self", "result")), (LinalgVectorNormBackward0, ("self", "result")),
                      (SoftmaxBackward0, ("result",)),
                      (LogSoftmaxBackward0, ("result",))):
    _node.saved_names = _names
