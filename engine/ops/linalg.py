"""Matrix products: mm, addmm, mv, dot, bmm. ``matmul`` composes these as PyTorch does."""
import numpy as np

from ..autograd.function import Function


def _x(shape):
    return "x".join(str(n) for n in shape)


# How PyTorch's messages name dtypes: the C type (mm) or the scalar type's title (the others).
_C_NAME = {"float32": "float", "float64": "double", "int64": "long int", "int32": "int", "bool": "bool"}
_TITLE = {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int", "bool": "Bool"}


def _c(dt):
    return _C_NAME.get(dt.name, dt.name)


def _t(dt):
    return _TITLE.get(dt.name, dt.name)


def _grad_b(a, grad, b_transposed):
    """``a.T @ grad``, laid out like ``b``: when ``b`` is a transposed view (``weight.t()`` in
    ``linear``), computing the transposed product keeps the weight's gradient C-contiguous."""
    if b_transposed:
        return (grad.T @ a).T
    return a.T @ grad


def _save_operands(node, a, b, ia=0, ib=1):
    """Save the operands of a product as PyTorch does: each only where the other needs its gradient."""
    nig = node.needs_input_grad
    if nig is not None:
        node.save_for_backward(a if nig[ib] else None, b if nig[ia] else None)


class MmBackward0(Function):
    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise RuntimeError(f"{'self' if a.ndim != 2 else 'mat2'} must be a matrix")
        if a.shape[1] != b.shape[0]:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({_x(a.shape)} and {_x(b.shape)})")
        if a.dtype != b.dtype:
            raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {_c(a.dtype)} != {_c(b.dtype)}")
        _save_operands(self, a, b)
        self.b_transposed = b.flags.f_contiguous and not b.flags.c_contiguous
        return a @ b

    def backward(self, grad):
        a, b = self.saved_tensors
        need_a, need_b = self.needs_input_grad
        return (grad @ b.T if need_a else None, _grad_b(a, grad, self.b_transposed) if need_b else None)


class AddmmBackward0(Function):
    """``bias + a @ b``, the node ``linear`` makes."""

    def forward(self, bias, a, b):
        if a.shape[1] != b.shape[0]:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({_x(a.shape)} and {_x(b.shape)})")
        for name, x in (("self", bias), ("mat1", a)):
            if x.dtype != b.dtype:
                raise RuntimeError(f"{name} and mat2 must have the same dtype, but got {_t(x.dtype)} and "
                                   f"{_t(b.dtype)}")
        _save_operands(self, a, b, 1, 2)
        self.b_transposed = b.flags.f_contiguous and not b.flags.c_contiguous
        self.bias_meta = (bias.shape, bias.dtype)
        out = a @ b
        out += bias
        return out

    def backward(self, grad):
        from .pointwise import unbroadcast
        a, b = self.saved_tensors
        need_bias, need_a, need_b = self.needs_input_grad
        return (unbroadcast(grad, *self.bias_meta) if need_bias else None,
                grad @ b.T if need_a else None,
                _grad_b(a, grad, self.b_transposed) if need_b else None)


class MvBackward0(Function):
    def forward(self, m, v):
        if m.ndim != 2 or v.ndim != 1:
            raise RuntimeError(f"vector + matrix @ vector expected, got 1, {m.ndim}, {v.ndim}")
        if m.shape[1] != v.shape[0]:
            raise RuntimeError(f"size mismatch, got input ({m.shape[0]}), mat ({_x(m.shape)}), vec ({v.shape[0]})")
        if m.dtype != v.dtype:
            raise RuntimeError(f"addmv input tensors must have the same dtype, but got {_t(v.dtype)}, "
                               f"{_t(m.dtype)}, and {_t(v.dtype)}")
        _save_operands(self, m, v)
        return m @ v

    def backward(self, grad):
        m, v = self.saved_tensors
        return (np.outer(grad, v) if self.needs_input_grad[0] else None,
                m.T @ grad if self.needs_input_grad[1] else None)


class DotBackward0(Function):
    def forward(self, a, b):
        if a.ndim != 1 or b.ndim != 1:
            raise RuntimeError(f"1D tensors expected, but got {a.ndim}D and {b.ndim}D tensors")
        if a.shape != b.shape:
            raise RuntimeError(f"inconsistent tensor size, expected tensor [{a.shape[0]}] and src [{b.shape[0]}] to "
                               f"have the same number of elements, but got {a.shape[0]} and {b.shape[0]} elements "
                               f"respectively")
        if a.dtype != b.dtype:
            raise RuntimeError(f"dot : expected both vectors to have same dtype, but found {_t(a.dtype)} and "
                               f"{_t(b.dtype)}")
        _save_operands(self, a, b)
        return np.asarray(a @ b)

    def backward(self, grad):
        a, b = self.saved_tensors
        return (grad * b if self.needs_input_grad[0] else None, grad * a if self.needs_input_grad[1] else None)


class BmmBackward0(Function):
    def forward(self, a, b):
        if a.ndim != 3 or b.ndim != 3:
            raise RuntimeError(f"batch{1 if a.ndim != 3 else 2} must be a 3D tensor")
        if b.shape[:2] != (a.shape[0], a.shape[2]):
            raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: "
                               f"[{a.shape[0]}, {a.shape[2]}] but got: [{b.shape[0]}, {b.shape[1]}].")
        if a.dtype != b.dtype:
            raise RuntimeError(f"expected scalar type {_t(a.dtype)} but found {_t(b.dtype)}")
        _save_operands(self, a, b)
        return np.matmul(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        return (np.matmul(grad, b.transpose(0, 2, 1)) if self.needs_input_grad[0] else None,
                np.matmul(a.transpose(0, 2, 1), grad) if self.needs_input_grad[1] else None)


# What PyTorch calls the tensors each node saves (``grad_fn._saved_<name>``), in the order they are saved.
for _node, _names in ((MmBackward0, ("self", "mat2")), (AddmmBackward0, ("mat1", "mat2")),
                      (MvBackward0, ("self", "vec")), (DotBackward0, ("self", "tensor")),
                      (BmmBackward0, ("self", "mat2"))):
    _node.saved_names = _names
