"""``Optimizer``: parameter groups, per-parameter state and ``zero_grad``, as in ``torch.optim``."""


from .._tensor import Tensor

# Observers of optimizer steps (gradviz's recorder); empty costs one test per step.
step_listeners = []


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if p._grad is not None:
                    if set_to_none:
                        p._grad = None
                    else:
                        p._grad._np[...] = 0

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        updated = []
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is None:
                    continue
                before = p._np.copy() if step_listeners else None
                self._update(p, p._grad._np, group, self.state.setdefault(p, {}))
                if before is not None:
                    updated.append((p, before))
        for listener in step_listeners:
            listener.optimizer_step(self, updated)
        return loss

    def _update(self, p, grad, group, state):
        raise NotImplementedError

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _check(name, value, low=0.0):
    if not value >= low:
        raise ValueError(f"Invalid {name}: {value}")
