"""``gradviz.engine``: PyTorch's autograd API on numpy. ``import gradviz.engine as torch`` runs the
autograd tutorial unchanged, and every graph it builds can be watched by gradviz."""
from . import autograd, cuda
from ._device import device
from ._dtype import (bfloat16, bool, double, dtype, float, float16, float32, float64, half, int32, int64,  # noqa: A004
                     long)
from ._factory import (arange, as_tensor, empty, eye, from_numpy, full, full_like, linspace, ones, ones_like,
                       rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros, zeros_like)
from ._random import manual_seed
from ._serialization import load, save
from ._tensor import Size, Tensor, matmul, maximum, minimum, where
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._functional import *  # noqa: F403  (torch.exp, torch.cat, ...: the names in _functional.__all__)
from . import _functional, models, nn, optim

__all__ = ["Tensor", "Size", "dtype", "bool", "double", "float", "float32", "float64", "int32", "int64", "long",
           "float16", "half", "bfloat16",
           "arange", "as_tensor", "empty", "eye", "from_numpy", "full", "full_like", "linspace", "ones",
           "ones_like", "rand", "rand_like", "randint", "randn", "randn_like", "randperm", "tensor", "zeros",
           "zeros_like", "manual_seed", "matmul", "maximum", "minimum", "where", "autograd", "enable_grad",
           "is_grad_enabled", "no_grad", "set_grad_enabled", "nn", "optim", "models",
           "device", "cuda", "save", "load"] + _functional.__all__
