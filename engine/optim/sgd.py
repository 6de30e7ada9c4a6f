from .optimizer import Optimizer, _check_flags, _check_lr, _state_tensor


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum, dampening, weight decay, Nesterov and maximize,
    applied as ``torch.optim.SGD``'s single-tensor path does (same float32 operations in the same order).
    ``foreach`` and ``fused`` are accepted and make no difference here."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False,
                 foreach=None, differentiable=False, fused=None):
        _check_lr(lr)
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        _check_flags(differentiable, fused, foreach)

    def _update(self, p, grad, group, state):
        lr, momentum, weight_decay = float(group["lr"]), group["momentum"], group["weight_decay"]
        d_p = -grad if group["maximize"] else grad
        if weight_decay != 0:
            d_p = d_p + weight_decay * p._np
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = _state_tensor(d_p.copy())
            else:
                buf._np *= momentum
                buf._np += (1 - group["dampening"]) * d_p if group["dampening"] else d_p
            d_p = d_p + momentum * buf._np if group["nesterov"] else buf._np
        delta = lr * d_p
        p._np -= delta
        return delta
