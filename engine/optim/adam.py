import math

import numpy as np

from .optimizer import Optimizer, _check_flags, _check_lr, _state_tensor


class Adam(Optimizer):
    """Adam with PyTorch's bias corrections, L2 (or decoupled, AdamW's) weight decay, AMSGrad and maximize,
    applied as ``torch.optim.Adam``'s single-tensor path does. ``foreach``, ``fused`` and ``capturable`` are
    accepted and make no difference here."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        _check_lr(lr)
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise ValueError("betas must be either both floats or both Tensors")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)
        _check_flags(differentiable, fused, foreach)

    def _update(self, p, grad, group, state):
        lr, weight_decay, (beta1, beta2) = float(group["lr"]), group["weight_decay"], group["betas"]
        if not state:
            state["step"] = _state_tensor(np.array(0.0, np.float32))
            state["exp_avg"] = _state_tensor(np.zeros_like(p._np))
            state["exp_avg_sq"] = _state_tensor(np.zeros_like(p._np))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = _state_tensor(np.zeros_like(p._np))
        if group["maximize"]:
            grad = -grad
        state["step"]._np += 1
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p._np *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * p._np
        m, v = state["exp_avg"]._np, state["exp_avg_sq"]._np
        # exp_avg.lerp_(grad, 1 - beta1), with lerp's two formulas
        w = np.float32(1 - beta1)
        if w < 0.5:
            m += w * (grad - m)
        else:
            m[...] = grad - (grad - m) * (np.float32(1) - w)
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        step = float(state["step"]._np)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]._np
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax) / bias_correction2_sqrt + group["eps"]
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt + group["eps"]
        delta = (lr / bias_correction1) * (m / denom)
        p._np -= delta
        return delta

    def _update_is_one_delta(self, group):
        # Decoupled weight decay scales the parameter first: the change is not the delta alone.
        return not (group["weight_decay"] != 0 and group["decoupled_weight_decay"])


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2), as ``torch.optim.AdamW``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
