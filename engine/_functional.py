"""Module-level forms of tensor operations (``torch.exp(x)``, ``torch.cat([...])``). Their names
shadow builtins (max, sum, abs, all, any) here, as in ``torch``: use ``builtins.`` for those."""
import functools

from ._tensor import Tensor, matmul, promote_types  # noqa: F401
from .ops import shape as _sh

__all__ = ["cat", "stack", "flatten", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "sin", "cos",
           "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "softmax", "log_softmax", "clamp",
           "pow", "reshape", "transpose", "permute", "unsqueeze", "squeeze", "mm", "bmm", "dot", "mv",
           "allclose", "equal", "isnan", "isinf", "isfinite", "numel", "t", "neg", "add", "sub", "mul", "div",
           "square", "is_tensor", "clone", "detach", "all", "any", "norm", "clip", "masked_fill", "tril", "triu",
           "split", "chunk"]


def _method(name):
    def fn(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"``torch.{name}(input, ...)``: the same as ``input.{name}(...)``."
    return fn


# One line each, so that every name in __all__ is defined where a reader (and a linter) can see it.
flatten = _method("flatten")
exp = _method("exp")
log = _method("log")
sqrt = _method("sqrt")
abs = _method("abs")
tanh = _method("tanh")
sigmoid = _method("sigmoid")
relu = _method("relu")
sin = _method("sin")
cos = _method("cos")
sum = _method("sum")
mean = _method("mean")
max = _method("max")
min = _method("min")
amax = _method("amax")
amin = _method("amin")
argmax = _method("argmax")
argmin = _method("argmin")
softmax = _method("softmax")
log_softmax = _method("log_softmax")
clamp = _method("clamp")
pow = _method("pow")
reshape = _method("reshape")
transpose = _method("transpose")
permute = _method("permute")
unsqueeze = _method("unsqueeze")
squeeze = _method("squeeze")
mm = _method("mm")
bmm = _method("bmm")
dot = _method("dot")
mv = _method("mv")
allclose = _method("allclose")
equal = _method("equal")
isnan = _method("isnan")
isinf = _method("isinf")
isfinite = _method("isfinite")
numel = _method("numel")
t = _method("t")
neg = _method("neg")
add = _method("add")
sub = _method("sub")
mul = _method("mul")
div = _method("div")
square = _method("square")
clone = _method("clone")
detach = _method("detach")
all = _method("all")
any = _method("any")
norm = _method("norm")
clip = _method("clip")
masked_fill = _method("masked_fill")
split = _method("split")
chunk = _method("chunk")
tril = _method("tril")
triu = _method("triu")


def is_tensor(obj):
    return isinstance(obj, Tensor)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    ref = tensors[0]
    d = _sh.wrap_dim(dim, ref.ndim)
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != ref.ndim:
            raise RuntimeError(f"Tensors must have same number of dimensions: got {ref.ndim} and {t.ndim}")
        for j in range(ref.ndim):
            if j != d and t.shape[j] != ref.shape[j]:
                raise RuntimeError(f"Sizes of tensors must match except in dimension {d}. Expected size "
                                   f"{ref.shape[j]} but got size {t.shape[j]} for tensor number {i} in the list.")
    return _sh.CatBackward0.apply(*tensors, dim=dim, dtype=_promote_all(tensors))


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    _sh.wrap_dim(dim, tensors[0].ndim + 1)
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} at "
                               f"entry 0 and {list(t.shape)} at entry {i}")
    return _sh.StackBackward0.apply(*tensors, dim=dim, dtype=_promote_all(tensors))


def _promote_all(tensors):
    return functools.reduce(promote_types, [t._np.dtype for t in tensors])
