"""``torch.nn.functional`` for the engine."""
import numpy as np

from .. import _random
from .._tensor import Tensor
from ..ops import nn as _nn, transformer as _tf
from ..ops.linalg import AddmmBackward0
from ..ops.pointwise import DivBackward1


def linear(input, weight, bias=None):
    if input.ndim == 2 and bias is not None:
        return _nn_addmm(bias, input, weight.t())
    if input.ndim != 2 and bias is not None:
        lead = tuple(input.shape[:-1])
        out = _nn_addmm(bias, input.reshape(-1, input.shape[-1]), weight.t())
        return out.view(lead + (weight.shape[0],))
    out = input.matmul(weight.t())
    return out if bias is None else out + bias


def _nn_addmm(bias, a, b):
    return AddmmBackward0.apply(bias, a, b)


def relu(input, inplace=False):
    return input.relu()


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def softmax(input, dim=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    return x.softmax(_default_dim(x, dim))


def log_softmax(input, dim=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    return x.log_softmax(_default_dim(x, dim))


def _default_dim(x, dim):
    if dim is not None:
        return dim
    return 0 if x.ndim in (0, 1, 3) else 1


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if dilation not in (1, (1, 1)) or groups != 1:
        raise NotImplementedError("gradviz.engine's conv2d supports dilation=1 and groups=1 only")
    if isinstance(padding, str):
        raise NotImplementedError("gradviz.engine's conv2d takes integer padding")
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    args = (x, weight) if bias is None else (x, weight, bias)
    out = _nn.ConvolutionBackward0.apply(*args, stride=stride, padding=padding)
    return out.squeeze(0) if unbatched else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if dilation not in (1, (1, 1)) or ceil_mode or return_indices:
        raise NotImplementedError("gradviz.engine's max_pool2d supports dilation=1, ceil_mode=False and no indices")
    return _nn.MaxPool2DWithIndicesBackward0.apply(input, kernel_size=kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(input, output_size):
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if size == (1, 1):
        # PyTorch computes a 1x1 adaptive pool as a mean over the spatial dimensions.
        return input.mean(dim=(-1, -2), keepdim=True)
    return _nn.AdaptiveAvgPool2DBackward0.apply(input, output_size=size)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is None and not training and name.startswith("running"):
            raise RuntimeError(f"{name} must be defined in evaluation mode")
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")
    args = [input] + [t for t in (weight, bias) if t is not None]
    return _nn.NativeBatchNormBackward0.apply(
        *args, running_mean=None if running_mean is None else running_mean._np,
        running_var=None if running_var is None else running_var._np, training=training, momentum=momentum, eps=eps)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    kw = dict(weight=None if weight is None else weight._np, reduction=reduction, ignore_index=ignore_index)
    if input.ndim <= 2:
        return _nn.NllLossBackward0.apply(input, target=target._np, **kw)
    # K-dimensional input (N, C, d1, ...): PyTorch's nll_loss_nd, through the 2-d (per-pixel) loss.
    n, c = input.shape[:2]
    if target.ndim and target.shape[0] != n:
        raise ValueError(f"Expected input batch_size ({n}) to match target batch_size ({target.shape[0]}).")
    if input.ndim == 4:
        return _nn.NllLoss2DBackward0.apply(input, target=target._np, **kw)
    if tuple(target.shape[1:]) != tuple(input.shape[2:]):
        raise RuntimeError(f"Expected target size {[n] + list(input.shape[2:])}, got {list(target.shape)}")
    out = _nn.NllLoss2DBackward0.apply(input.contiguous().view(n, c, 1, -1), target=target._np.reshape(n, 1, -1), **kw)
    return out.view((n,) + tuple(input.shape[2:])) if reduction == "none" else out


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if label_smoothing:
        raise NotImplementedError("gradviz.engine's cross_entropy has no label smoothing")
    logp = log_softmax(input, 1 if input.ndim > 1 else 0)
    if target.is_floating_point() and target.shape == input.shape:
        # Class probabilities as targets, composed as PyTorch composes them.
        class_dim = 1 if input.ndim > 1 else 0
        prod = logp * target
        if weight is not None:
            prod = prod * weight.view([weight.shape[0] if d == class_dim else 1 for d in range(input.ndim)])
        if reduction == "none":
            return -prod.sum(class_dim)
        if reduction == "sum":
            return -prod.sum()
        return DivBackward1.apply(-prod.sum(), scalar=input.numel() // input.shape[class_dim])
    return nll_loss(logp, target, weight=weight, ignore_index=ignore_index, reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    if input.shape != target.shape:
        import warnings
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). "
                      "This will likely lead to incorrect results due to broadcasting. Please ensure they have "
                      "the same size.", UserWarning, stacklevel=2)
    return _nn.MseLossBackward0.apply(input, target, reduction=reduction)


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * Tensor._wrap(np.zeros(input._np.shape, input._np.dtype))
    keep = _random.generator().random(input._np.shape) >= p
    return input * Tensor._wrap((keep / (1 - p)).astype(input._np.dtype))


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def gelu(input, approximate="none"):
    return _tf.GeluBackward0.apply(input, approximate=approximate)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    args = [t for t in (weight, bias) if t is not None]
    if weight is None and bias is not None:
        raise NotImplementedError("gradviz.engine's layer_norm takes a bias only with a weight")
    return _tf.NativeLayerNormBackward0.apply(input, *args, normalized_shape=tuple(normalized_shape), eps=eps)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("gradviz.engine's embedding has no max_norm, scale_grad_by_freq or sparse")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    indices = input._np if isinstance(input, Tensor) else np.asarray(input)
    return _tf.EmbeddingBackward0.apply(weight, indices=indices, padding_idx=-1 if padding_idx is None else padding_idx)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """PyTorch's math path, composed of the engine's ops (PyTorch's CPU kernel is one fused node)."""
    import math
    n, s = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    att = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        att = att.masked_fill(Tensor._wrap(~np.tril(np.ones((n, s), dtype=np.bool_))), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype.is_floating_point:
            att = att + attn_mask
        else:
            att = att.masked_fill(Tensor._wrap(~attn_mask._np), float("-inf"))
    att = att.softmax(-1)
    if dropout_p:
        att = dropout(att, dropout_p)
    return att @ value


__all__ = ["linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "conv2d", "max_pool2d",
           "adaptive_avg_pool2d", "batch_norm", "nll_loss", "cross_entropy", "mse_loss", "dropout", "flatten",
           "gelu", "layer_norm", "embedding", "scaled_dot_product_attention"]
