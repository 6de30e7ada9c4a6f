"""Views and shape changes, indexing, concatenation."""
import numpy as np

from ..autograd.function import Function


def _size(shape):
    return "[" + ", ".join(str(n) for n in shape) + "]"


def wrap_dim(dim, ndim):
    """``dim`` from [-ndim, ndim) to [0, ndim) (a 0-d tensor counts as 1-d), or PyTorch's IndexError."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


def infer_shape(shape, numel):
    shape = list(shape)
    if shape.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    known = int(np.prod([n for n in shape if n != -1]))
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{_size(shape)}' is invalid for input of size {numel}")
        shape[shape.index(-1)] = numel // known
    elif known != numel:
        raise RuntimeError(f"shape '{_size(shape)}' is invalid for input of size {numel}")
    return tuple(shape)


class ViewBackward0(Function):
    """``view`` (must not copy), ``reshape`` and ``flatten`` (may copy)."""

    is_view = True

    def forward(self, x, shape, copy_ok=True):
        self.shape = x.shape
        shape = infer_shape(shape, x.size)
        if copy_ok:
            return x.reshape(shape)
        out = x.view()
        try:
            out.shape = shape
        except AttributeError:
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one dimension "
                "spans across two contiguous subspaces). Use .reshape(...) instead.") from None
        return out

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class UnsafeViewBackward0(ViewBackward0):
    """``_unsafe_view``: the reshape of a fresh contiguous copy (``reshape`` when no view exists,
    the last step of ``matmul``): not a view in PyTorch's sense (its input is a temporary)."""

    is_view = False


class ReshapeAliasBackward0(ViewBackward0):
    """``reshape`` of a non-contiguous tensor whose strides still allow a view."""


def can_view(x, shape):
    """Whether ``x`` can be viewed as ``shape`` without a copy (PyTorch's computeStride)."""
    out = x.view()
    try:
        out.shape = shape
    except AttributeError:
        return False
    return True


class AliasBackward0(Function):
    """``x[:, :]`` or ``x[...]``: indexing that selects everything."""

    is_view = True

    def forward(self, x):
        return x.view()

    def backward(self, grad):
        return (grad,)


class TransposeBackward0(Function):
    is_view = True

    def forward(self, x, dim0, dim1):
        self.dims = (wrap_dim(dim0, x.ndim), wrap_dim(dim1, x.ndim))
        return np.swapaxes(x, *self.dims) if x.ndim else x.view()

    def backward(self, grad):
        return (np.swapaxes(grad, *self.dims) if grad.ndim else grad,)


class TBackward0(Function):
    is_view = True

    def forward(self, x):
        if x.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D")
        return x.T

    def backward(self, grad):
        return (grad.T,)


class PermuteBackward0(Function):
    is_view = True

    def forward(self, x, dims):
        if len(dims) != x.ndim:
            raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match "
                               f"the length of the desired ordering of dimensions i.e. input.dim() = {x.ndim} "
                               f"is not equal to len(dims) = {len(dims)}")
        self.dims = tuple(wrap_dim(d, x.ndim) for d in dims)
        if len(set(self.dims)) != len(dims):
            raise RuntimeError("permute(): duplicate dims are not allowed.")
        return np.transpose(x, self.dims)

    def backward(self, grad):
        return (np.transpose(grad, np.argsort(self.dims)),)


class UnsqueezeBackward0(Function):
    is_view = True

    def forward(self, x, dim):
        self.dim = wrap_dim(dim, x.ndim + 1)
        return np.expand_dims(x, self.dim)

    def backward(self, grad):
        return (np.squeeze(grad, self.dim),)


class SqueezeBackward0(Function):
    """squeeze() of every size-1 dimension."""

    is_view = True

    def forward(self, x):
        self.shape = x.shape
        return np.squeeze(x)

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class SqueezeBackward1(SqueezeBackward0):
    """squeeze(dim): a no-op when that dimension is not 1."""

    def forward(self, x, dim):
        self.shape = x.shape
        dim = wrap_dim(dim, x.ndim)
        return np.squeeze(x, dim) if x.ndim and x.shape[dim] == 1 else x


class SqueezeBackward4(SqueezeBackward1):
    pass


class ExpandBackward0(Function):
    is_view = True

    def forward(self, x, shape):
        shape = tuple(shape)
        lead = len(shape) - x.ndim
        if lead < 0:
            raise RuntimeError(f"expand(torch.FloatTensor{{{_size(x.shape)}}}, size={_size(shape)}): the number of "
                               f"sizes provided ({len(shape)}) must be greater or equal to the number of "
                               f"dimensions in the tensor ({x.ndim})")
        shape = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        try:
            out = np.broadcast_to(x, shape)
        except ValueError:
            bad = next(i for i in range(x.ndim) if x.shape[i] not in (1, shape[i + lead]))
            raise RuntimeError(
                f"The expanded size of the tensor ({shape[bad + lead]}) must match the existing size "
                f"({x.shape[bad]}) at non-singleton dimension {bad + lead}.  Target sizes: {_size(shape)}.  "
                f"Tensor sizes: {_size(x.shape)}") from None
        self.meta = (x.shape, x.dtype)
        return out

    def backward(self, grad):
        from .pointwise import unbroadcast
        return (unbroadcast(grad, *self.meta),)


class _Scatter(Function):
    """Indexing ops whose backward writes the gradient into zeros of the input's shape."""

    def forward(self, x, key):
        self.meta, self.key = (x.shape, x.dtype), key
        return x[key]

    def backward(self, grad):
        out = np.zeros(*self.meta)
        out[self.key] = grad
        return (out,)


class SelectBackward0(_Scatter):
    is_view = True


class SliceBackward0(_Scatter):
    is_view = True


class IndexBackward0(_Scatter):
    """Advanced indexing (index arrays, boolean masks): repeated indices add up in backward."""

    def backward(self, grad):
        out = np.zeros(*self.meta)
        np.add.at(out, self.key, grad)
        return (out,)


class SplitBackward0(Function):
    """One piece of ``split``/``chunk`` (a view). PyTorch makes one node with an output per piece;
    the engine's nodes have one output, so each piece gets a node of this name."""

    is_view = True

    def forward(self, x, dim, start, stop):
        self.meta, self.key = (x.shape, x.dtype), (slice(None),) * dim + (slice(start, stop),)
        return x[self.key]

    def backward(self, grad):
        out = np.zeros(*self.meta)
        out[self.key] = grad
        return (out,)


class SplitWithSizesBackward0(SplitBackward0):
    """A piece of ``split`` with a list of sizes."""


class UnsafeSplitBackward0(SplitBackward0):
    """A piece of ``unsafe_chunk``/``unsafe_split`` (what PyTorch's GRU and LSTM cells use): not a view."""

    is_view = False


class CatBackward0(Function):
    """Concatenation in the promoted ``dtype``; each input's gradient comes back in its own dtype."""

    def forward(self, *arrays, dim=0, dtype=None):
        self.dim = wrap_dim(dim, arrays[0].ndim)
        self.sizes = [a.shape[self.dim] for a in arrays]
        self.dtypes = [a.dtype for a in arrays]
        return np.concatenate(arrays, axis=self.dim, dtype=dtype)

    def backward(self, grad):
        bounds = np.cumsum(self.sizes)[:-1]
        parts = np.split(grad, bounds, axis=self.dim)
        return tuple(p.astype(dt, copy=False) if need else None
                     for p, dt, need in zip(parts, self.dtypes, self.needs_input_grad))


class StackBackward0(Function):
    def forward(self, *arrays, dim=0, dtype=None):
        self.dim = wrap_dim(dim, arrays[0].ndim + 1)
        self.dtypes = [a.dtype for a in arrays]
        return np.stack(arrays, axis=self.dim, dtype=dtype)

    def backward(self, grad):
        return tuple(np.take(grad, i, axis=self.dim).astype(dt, copy=False) if need else None
                     for i, (dt, need) in enumerate(zip(self.dtypes, self.needs_input_grad)))
