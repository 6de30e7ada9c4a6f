"""Neural-network primitives: convolution (im2col), max pooling, adaptive average pooling, batch
norm and the losses. Whole-array numpy: Python loops run over kernel offsets at most, never over
elements or spatial positions."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import hooks as _hooks
from ..autograd.function import Function
from .pointwise import unbroadcast


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _shape(shape):
    return "[" + ", ".join(map(str, shape)) + "]"


def _windows(xp, kh, kw, sh, sw, oh, ow):
    """A strided (N, C, OH, OW, KH, KW) view of the padded input: no copy."""
    n, c = xp.shape[:2]
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, shape=(n, c, oh, ow, kh, kw), strides=(s0, s1, s2 * sh, s3 * sw, s2, s3), writeable=False)


def _pad(x, ph, pw, value=0.0):
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


class ConvolutionBackward0(Function):
    """2-d convolution (no dilation, one group) as one matrix product over im2col columns."""

    saved_inputs = (0,)  # PyTorch saves the input; this saves its columns

    def forward(self, x, weight, bias=None, stride=1, padding=0):
        if x.ndim != 4:
            raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                               f"[{', '.join(map(str, x.shape))}]")
        n, c, h, w = x.shape
        o, ci, kh, kw = weight.shape
        if ci != c:
            raise RuntimeError(f"Given groups=1, weight of size {_shape(weight.shape)}, expected input"
                               f"{_shape(x.shape)} to have {ci} channels, but got {c} channels instead")
        if bias is not None and bias.shape != (o,):
            raise RuntimeError(f"Given weight of size {_shape(weight.shape)}, expected bias to be 1-dimensional with "
                               f"{o} elements, but got bias of size {_shape(bias.shape)} instead")
        (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise RuntimeError(f"Calculated padded input size per channel: ({h + 2 * ph} x {w + 2 * pw}). Kernel size: "
                               f"({kh} x {kw}). Kernel size can't be greater than actual input size")
        oh, ow = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
        xp = _pad(x, ph, pw)
        # Columns laid out (N, OH, OW | C, KH, KW): one copy out of the strided view.
        cols = _windows(xp, kh, kw, sh, sw, oh, ow).transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
        out = cols @ weight.reshape(o, -1).T
        if bias is not None:
            out += bias
        self.geometry = (x.shape, xp.shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow))
        self.save_for_backward(cols, weight)
        return np.ascontiguousarray(out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))

    def backward(self, grad):
        cols, weight = self.saved_tensors
        (n, c, h, w), xp_shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.geometry
        o = weight.shape[0]
        need = self.needs_input_grad
        g = grad.transpose(0, 2, 3, 1).reshape(-1, o)
        grads = [None, None]
        if need[1]:
            grads[1] = (g.T @ cols).reshape(weight.shape)
        if need[0]:
            dcols = (g @ weight.reshape(o, -1)).reshape(n, oh, ow, c, kh, kw)
            dxp = np.zeros(xp_shape, grad.dtype)
            for i in range(kh):
                for j in range(kw):
                    dxp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += \
                        dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
            grads[0] = dxp[:, :, ph:ph + h, pw:pw + w]
        if len(need) > 2:
            grads.append(grad.sum(axis=(0, 2, 3)) if need[2] else None)
        return tuple(grads)


class MaxPool2DWithIndicesBackward0(Function):
    """Max pooling of (N, C, H, W) or unbatched (C, H, W) input; the gradient goes to the first
    maximum of each window (row-major), adding up where windows overlap."""

    def forward(self, x, kernel_size, stride=None, padding=0):
        if x.ndim not in (3, 4) or not x.size:
            raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
        self.unbatched = x.ndim == 3
        if self.unbatched:
            x = x[None]
        n, c, h, w = x.shape
        (kh, kw) = _pair(kernel_size)
        (sh, sw) = _pair(stride if stride else kernel_size)
        (ph, pw) = _pair(padding)
        if ph > kh // 2 or pw > kw // 2:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={ph}, "
                               f"kernel_size={kh} and dilation=1")
        oh, ow = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
        if oh < 1 or ow < 1:
            raise RuntimeError(f"Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{oh}x{ow}). Output size "
                               f"is too small")
        xp = _pad(x, ph, pw, -np.inf)
        win = _windows(xp, kh, kw, sh, sw, oh, ow).reshape(n, c, oh, ow, kh * kw)
        arg = win.argmax(axis=-1)
        out = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
        ki, kj = np.divmod(arg, kw)
        rows = np.arange(oh)[:, None] * sh + ki
        cols = np.arange(ow)[None, :] * sw + kj
        hp, wp = xp.shape[2:]
        base = (np.arange(n * c).reshape(n, c, 1, 1) * hp) * wp
        self.flat_index = base + rows * wp + cols  # index into the padded input, for backward
        self.geometry = (x.shape, (hp, wp), (ph, pw))
        return out[0] if self.unbatched else out

    def backward(self, grad):
        (n, c, h, w), (hp, wp), (ph, pw) = self.geometry
        dxp = np.bincount(self.flat_index.ravel(), weights=grad.ravel(), minlength=n * c * hp * wp)
        dx = dxp.reshape(n, c, hp, wp)[:, :, ph:ph + h, pw:pw + w].astype(grad.dtype)
        return (dx[0] if self.unbatched else dx,)


def _adaptive_bins(size, out):
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


class AdaptiveAvgPool2DBackward0(Function):
    """Each output cell averages its bin, found from an integral image: no loop over cells."""

    def forward(self, x, output_size):
        self.unbatched = x.ndim == 3
        if self.unbatched:
            x = x[None]
        n, c, h, w = x.shape
        oh, ow = _pair(output_size)
        oh, ow = oh or h, ow or w
        (sh, eh), (sw, ew) = _adaptive_bins(h, oh), _adaptive_bins(w, ow)
        s = np.zeros((n, c, h + 1, w + 1), np.float64)
        s[:, :, 1:, 1:] = x.cumsum(2, dtype=np.float64).cumsum(3)
        box = (s[:, :, eh[:, None], ew[None, :]] - s[:, :, sh[:, None], ew[None, :]]
               - s[:, :, eh[:, None], sw[None, :]] + s[:, :, sh[:, None], sw[None, :]])
        area = (eh - sh)[:, None] * (ew - sw)[None, :]
        self.bins, self.area, self.shape = (sh, eh, sw, ew), area, x.shape
        out = (box / area).astype(x.dtype)
        return out[0] if self.unbatched else out

    def backward(self, grad):
        sh, eh, sw, ew = self.bins
        n, c, h, w = self.shape
        v = (grad[None] if self.unbatched else grad) / self.area
        d = np.zeros((n, c, h + 1, w + 1), np.float64)
        rows_s, rows_e = sh[:, None], eh[:, None]
        cols_s, cols_e = sw[None, :], ew[None, :]
        for r, cc, sign in ((rows_s, cols_s, 1), (rows_s, cols_e, -1), (rows_e, cols_s, -1), (rows_e, cols_e, 1)):
            r_b, c_b = np.broadcast_arrays(r, cc)
            np.add.at(d, (slice(None), slice(None), r_b, c_b), sign * v)
        dx = d.cumsum(2).cumsum(3)[:, :, :h, :w].astype(grad.dtype)
        return (dx[0] if self.unbatched else dx,)


class NativeBatchNormBackward0(Function):
    """Batch norm over every dimension but the channels (dim 1). In training it normalises with the
    batch's biased variance and updates the running stats with the unbiased one."""

    saved_inputs = (0,)

    def forward(self, x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            count = x.size // x.shape[1]
            if count <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                 f"torch.Size([{', '.join(map(str, x.shape))}])")
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)
            if running_mean is not None:
                if _hooks.array_writing:
                    _hooks.writing(running_mean)
                running_mean *= 1 - momentum
                running_mean += momentum * mean.reshape(-1)
            if running_var is not None:
                if _hooks.array_writing:
                    _hooks.writing(running_var)
                running_var *= 1 - momentum
                running_var += momentum * var.reshape(-1) * (count / (count - 1))
        else:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
            xc = x - mean
        invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        xhat = xc * invstd
        out = xhat * weight.reshape(shape) if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        self.axes, self.training = axes, training
        self.save_for_backward(xhat, invstd, weight)
        return out

    def backward(self, grad):
        xhat, invstd, weight = self.saved_tensors
        axes, shape = self.axes, invstd.shape
        need = self.needs_input_grad
        dxhat = grad * weight.reshape(shape) if weight is not None else grad
        grads = []
        if need[0]:
            if self.training:
                dx = (dxhat - dxhat.mean(axis=axes, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) * invstd
            else:
                dx = dxhat * invstd
            grads.append(dx)
        else:
            grads.append(None)
        if len(need) > 1:
            grads.append((grad * xhat).sum(axis=axes) if need[1] else None)
        if len(need) > 2:
            grads.append(grad.sum(axis=axes) if need[2] else None)
        return tuple(grads)


class NllLossBackward0(Function):
    """Negative log likelihood of integer class targets, over (N, C) or (C,) log-probabilities."""

    def forward(self, logp, target=None, weight=None, reduction="mean", ignore_index=-100):
        if logp.ndim not in (1, 2):
            raise ValueError(f"Expected 1 or 2 dimensions for nll_loss input (got {logp.ndim})")
        lp = logp[None] if logp.ndim == 1 else logp
        target = np.asarray(target)
        if logp.ndim == 2 and target.ndim and target.shape[0] != lp.shape[0]:
            raise ValueError(f"Expected input batch_size ({lp.shape[0]}) to match target batch_size "
                             f"({target.shape[0]}).")
        if target.ndim > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        tg = target.reshape(-1)
        if tg.shape[0] != lp.shape[0]:
            raise RuntimeError(f"size mismatch (got input: {list(logp.shape)}, target: {list(target.shape)})")
        if tg.dtype.kind not in "iu":
            title = {"float32": "Float", "float64": "Double", "bool": "Bool"}.get(tg.dtype.name, tg.dtype.name)
            raise RuntimeError(f"expected target dtype to be Long or Byte, but got {title}")
        valid = tg != ignore_index
        bad = valid & ((tg < 0) | (tg >= lp.shape[1]))
        if bad.any():
            raise IndexError(f"Target {int(tg[bad][0])} is out of bounds.")
        safe = np.where(valid, tg, 0)
        w = (weight[safe] if weight is not None else np.ones(tg.shape, lp.dtype)) * valid
        picked = -lp[np.arange(lp.shape[0]), safe] * w
        self.meta = (logp.shape, lp.dtype, safe, w, reduction)
        self.valid = valid
        if reduction == "none":
            return picked.astype(lp.dtype).reshape(target.shape)
        total = picked.sum(dtype=lp.dtype)
        if reduction == "sum":
            return np.asarray(total)
        if reduction != "mean":
            raise ValueError(f"{reduction} is not a valid value for reduction")
        self.denom = w.sum()
        return np.asarray(total / self.denom, dtype=lp.dtype)

    def backward(self, grad):
        shape, dtype, safe, w, reduction = self.meta
        n = safe.shape[0]
        coef = -w * (grad.reshape(-1) if reduction == "none" else grad)
        if reduction == "mean":
            # Ignored targets get no gradient, even when all are ignored (the loss is then 0/0 = nan).
            with np.errstate(divide="ignore", invalid="ignore"):
                coef = np.where(self.valid, coef / self.denom, 0)
        out = np.zeros((n, shape[-1]), dtype)
        out[np.arange(n), safe] = coef
        return (out.reshape(shape),)


class NllLoss2DBackward0(NllLossBackward0):
    """The loss of every pixel: (N, C, H, W) log-probabilities, (N, H, W) targets. Computed as the
    plain loss over (N*H*W, C) rows with the class dimension moved last."""

    def forward(self, logp, target=None, weight=None, reduction="mean", ignore_index=-100):
        target = np.asarray(target)
        if target.ndim != 3:
            raise RuntimeError(f"only batches of spatial targets supported (3D tensors) but got targets of "
                               f"dimension: {target.ndim}")
        n, c, h, w = logp.shape
        if target.shape != (n, h, w):
            raise RuntimeError(f"size mismatch (got input: {list(logp.shape)} , target: {list(target.shape)}")
        self.nchw = logp.shape
        rows = np.moveaxis(logp, 1, -1).reshape(-1, c)
        out = super().forward(rows, target.reshape(-1), weight, reduction, ignore_index)
        return out.reshape(target.shape) if reduction == "none" else out

    def backward(self, grad):
        n, c, h, w = self.nchw
        (rows,) = super().backward(grad)
        return (np.moveaxis(rows.reshape(n, h, w, c), -1, 1),)


class MseLossBackward0(Function):
    saved_inputs = (0, 1)

    def forward(self, x, y, reduction="mean"):
        diff = x - y
        self.save_for_backward(diff)
        self.metas, self.reduction = ((x.shape, x.dtype), (y.shape, y.dtype)), reduction
        sq = diff * diff
        if reduction == "none":
            return sq
        if reduction == "sum":
            return np.asarray(sq.sum(dtype=sq.dtype))
        if reduction != "mean":
            raise ValueError(f"{reduction} is not a valid value for reduction")
        return np.asarray(sq.mean(dtype=sq.dtype))

    def backward(self, grad):
        (diff,) = self.saved_tensors
        g = 2 * diff * grad
        if self.reduction == "mean":
            g = g / diff.size
        out = [unbroadcast(g, *self.metas[0]) if self.needs_input_grad[0] else None]
        if len(self.needs_input_grad) > 1:
            out.append(unbroadcast(-g, *self.metas[1]) if self.needs_input_grad[1] else None)
        return tuple(out)


# What PyTorch calls the tensors each node saves (``grad_fn._saved_<name>``) where this engine saves the
# same thing (it keeps im2col columns and normalised inputs where PyTorch keeps the input).
ConvolutionBackward0.saved_names = (None, "weight")
NativeBatchNormBackward0.saved_names = (None, None, "weight")
