"""The rules of the network ops for ``gradviz.trace.explain``: NllLoss, Convolution, batch and layer
norm, Embedding, max pooling. Each computes its grad_inputs from the node's values (numpy loops,
fine at the sizes whose numbers are printed) and returns (name, rule, None, computed, shape)."""
import numpy as np

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _get(v, names, i):
    for n in names:
        if n in v.saved and v.saved[n] is not None:
            return np.asarray(v.saved[n])
    return None if i >= len(v.inputs) or v.inputs[i] is None else np.asarray(v.inputs[i])


def nll_loss(v):
    rule = "grad_self[i, target[i]] = -grad * weight[target[i]] / total_weight (mean; sum: no division); 0 elsewhere"
    logp, target, g = _get(v, ("self",), 0), _get(v, ("target",), 1), v.grad
    if logp is None or target is None or g is None:
        return [("grad_self", rule, None, None, None)]
    red = v.attrs.get("reduction", 1)
    red = _REDUCTIONS.get(red, red)
    ignore = v.attrs.get("ignore_index", -100)
    lp = logp.reshape(1, -1) if logp.ndim == 1 else logp
    t = target.reshape(-1).astype(np.int64)
    w = _get(v, ("weight",), 2)
    w = np.ones(lp.shape[1]) if w is None or w.ndim != 1 else w
    keep = t != ignore
    wt = np.where(keep, w[np.where(keep, t, 0)], 0.0)
    out = np.zeros_like(lp, dtype=np.float64)
    scale = -np.broadcast_to(g, t.shape) * wt
    if red == "mean":
        scale = scale / wt.sum()
    out[np.arange(len(t)), np.where(keep, t, 0)] += np.where(keep, scale, 0.0)
    return [("grad_self", rule, None, out.reshape(logp.shape), None)]


def _norm_grads(x, g, w, axes, eps, invstd=None):
    n = int(np.prod([x.shape[a] for a in axes]))
    mean = x.mean(axis=axes, keepdims=True)
    if invstd is None:
        invstd = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    gw = g * w if w is not None else g
    gx = invstd / n * (n * gw - gw.sum(axis=axes, keepdims=True) - xhat * (gw * xhat).sum(axis=axes, keepdims=True))
    return gx, xhat


def batch_norm(v):
    rules = ["weight * invstd / N * (N * grad - grad.sum() - xhat * (grad * xhat).sum()), sums over (N, H, W)",
             "(grad * xhat).sum((0, 2, 3))", "grad.sum((0, 2, 3))"]
    x, g = _get(v, ("input",), 0), v.grad
    w = _get(v, ("weight",), 1)
    if x is None or g is None or not v.attrs.get("training", True):
        return [(f"grad_{n}", r, None, None, None) for n, r in zip(("input", "weight", "bias"), rules)]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1, -1] + [1] * (x.ndim - 2)
    wb = None if w is None else w.reshape(shape)
    gx, xhat = _norm_grads(x.astype(np.float64), g, wb, axes, float(v.attrs.get("eps", 1e-5)))
    return [("grad_input", rules[0], None, gx, None),
            ("grad_weight", rules[1], None, (g * xhat).sum(axis=axes), None),
            ("grad_bias", rules[2], None, g.sum(axis=axes), None)]


def layer_norm(v):
    rules = ["weight * rstd / D * (D * grad - grad.sum(-1) - xhat * (grad * xhat).sum(-1)), "
             "grad times weight, over the normalized dims", "(grad * xhat).sum(the other dims)",
             "grad.sum(the other dims)"]
    x, g = _get(v, ("input",), 0), v.grad
    w = _get(v, ("weight",), 2 if len(v.inputs) > 3 else 1)
    norm = v.attrs.get("normalized_shape")
    k = len(norm) if isinstance(norm, tuple) else (w.ndim if w is not None else 1)
    if x is None or g is None:
        return [(f"grad_{n}", r, None, None, None) for n, r in zip(("input", "weight", "bias"), rules)]
    axes = tuple(range(x.ndim - k, x.ndim))
    rest = tuple(range(x.ndim - k))
    gx, xhat = _norm_grads(x.astype(np.float64), g, w, axes, float(v.attrs.get("eps", 1e-5)))
    return [("grad_input", rules[0], None, gx, None),
            ("grad_weight", rules[1], None, (g * xhat).sum(axis=rest), None),
            ("grad_bias", rules[2], None, g.sum(axis=rest), None)]


def embedding(v):
    rule = "grad_weight = zeros(num_weights, dim).index_add_(0, indices, grad): each row used adds its grad"
    idx, g = _get(v, ("indices",), 1), v.grad
    num = v.attrs.get("num_weights")
    w = v.inputs[0] if v.inputs and v.inputs[0] is not None else None
    if num is None and w is not None:
        num = np.shape(w)[0]
    if num is None and v.grad_inputs and v.grad_inputs[0] is not None:
        num = np.shape(v.grad_inputs[0])[0]
    if idx is None or g is None or num is None:
        return [("grad_weight", rule, None, None, None)]
    out = np.zeros((int(num), g.shape[-1]))
    np.add.at(out, idx.reshape(-1).astype(np.int64), g.reshape(-1, g.shape[-1]))
    return [("grad_weight", rule, None, out, None)]


def max_pool(v):
    rule = "grad_self[argmax of each window] += grad, 0 elsewhere (indices: the saved argmax)"
    x, idx, g = _get(v, ("self",), 0), _get(v, ("result1", "indices"), 99), v.grad
    if x is None or idx is None or g is None:
        return [("grad_self", rule, None, None, None)]
    planes = int(np.prod(x.shape[:-2]))
    out = np.zeros((planes, x.shape[-2] * x.shape[-1]))
    for p, (i, gg) in enumerate(zip(idx.reshape(planes, -1), g.reshape(planes, -1))):
        np.add.at(out[p], i.astype(np.int64), gg)
    return [("grad_self", rule, None, out.reshape(x.shape), None)]


def convolution(v):
    rules = ["conv_transpose2d(grad, weight): each output position sends grad * the kernel back to its window",
             "sum over positions of window(self) * grad: conv2d(self, grad)", "grad.sum((0, 2, 3))"]
    x, w, g = _get(v, ("input",), 0), _get(v, ("weight",), 1), v.grad
    if x is None or w is None or g is None or x.ndim != 4 or v.attrs.get("groups", 1) != 1 or \
            tuple(v.attrs.get("dilation", (1, 1))) != (1, 1):
        return [(f"grad_{n}", r, None, None, None) for n, r in zip(("input", "weight", "bias"), rules)]
    kh, kw = w.shape[-2:]
    oh, ow = g.shape[-2:]
    sh, sw = v.attrs.get("stride", (1, 1))
    ph, pw = v.attrs.get("padding", ((sh * (oh - 1) + kh - x.shape[2]) // 2, (sw * (ow - 1) + kw - x.shape[3]) // 2))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp, gw = np.zeros_like(xp), np.zeros(w.shape)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            gij = g[:, :, i, j]  # (N, out channels)
            gw += np.einsum("no,nchw->ochw", gij, win)
            gxp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum("no,ochw->nchw", gij, w)
    gx = gxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return [("grad_input", rules[0], None, gx, None), ("grad_weight", rules[1], None, gw, None),
            ("grad_bias", rules[2], None, g.sum(axis=(0, 2, 3)), None)]
