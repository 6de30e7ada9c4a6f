import math

import numpy as np

from .optimizer import Optimizer, _check


class Adam(Optimizer):
    """Adam with PyTorch's bias corrections, L2 weight decay and optional AMSGrad."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}")
        _check("weight_decay value", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _update(self, p, grad, group, state):
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p._np
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p._np)
            state["exp_avg_sq"] = np.zeros_like(p._np)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p._np)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (grad - m)
        v *= beta2
        v += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            denom = np.sqrt(state["max_exp_avg_sq"]) / bias_correction2_sqrt + group["eps"]
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt + group["eps"]
        p._np -= (group["lr"] / bias_correction1) * (m / denom)
