"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad`` and ``state_dict``, as in
``torch.optim`` (same checks, messages, state layout and ``repr``)."""
import copy
import warnings
from collections import defaultdict

import numpy as np

from .. import hooks as _hooks
from .._tensor import Tensor
from ..autograd.grad_mode import enable_grad
from ..nn.module import _typename



class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got " + _typename(params))
        self.state = defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for g in param_groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering of "
                            "tensors in sets will change between runs. Please use a list instead.")
        else:
            param_group["params"] = list(params)
        tensors, names = [], []
        for p in param_group["params"]:
            if isinstance(p, tuple):  # (name, param) pairs from named_parameters()
                names.append(p[0])
                tensors.append(p[1])
            else:
                tensors.append(p)
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            param_group["param_names"] = names
        for p in tensors:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " + _typename(p))
            if not self.defaults.get("differentiable", None) and not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        if len({id(p) for p in tensors}) != len(tensors):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in future, this will cause "
                          "an error; see github.com/pytorch/pytorch/issues/40967 for more information", stacklevel=3)
        seen = set()
        for g in self.param_groups:
            seen.update(id(p) for p in g["params"])
            if ("param_names" in param_group) != ("param_names" in g):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if any(id(p) in seen for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        from ..nn.module import zero_grads
        zero_grads((p for g in self.param_groups for p in g["params"]), set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        listening = bool(_hooks.optimizer_step)
        updates = []  # (parameter, L2 norm of its change), for the hooks
        for group in self.param_groups:
            one_delta = self._update_is_one_delta(group)
            for p in group["params"]:
                if p._grad is None:
                    continue
                before = p._np.copy() if listening and not one_delta else None
                if _hooks.array_writing:
                    _hooks.writing(p._np)
                delta = self._update(p, p._grad._np, group, self.state[p])
                p._vc[0] += 1  # an in-place write, as PyTorch's: a graph built before it can no longer backward
                if listening:
                    change = (delta if one_delta else before - p._np).ravel()
                    updates.append((p, float(np.sqrt(np.dot(change, change)))))
        for hook in _hooks.optimizer_step:
            hook(self, updates)
        return loss

    def _update(self, p, grad, group, state):
        """Update ``p`` in place; return the array subtracted from it when the change is exactly
        that (see ``_update_is_one_delta``)."""
        raise NotImplementedError

    def _update_is_one_delta(self, group):
        """Whether ``_update`` changes a parameter by subtracting the one array it returns; if not,
        the parameter is copied first to measure the change (only while someone listens)."""
        return True

    # -- state dict --------------------------------------------------------------------------------
    def state_dict(self):
        mapping = {}
        start = 0

        def pack(group):
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            mapping.update({id(p): i for i, p in enumerate(group["params"], start) if id(p) not in mapping})
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        state_dict = state_dict.copy()
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = dict(zip((i for s in saved_groups for i in s["params"]), (p for g in groups for p in g["params"])))

        def cast(param, value):
            if isinstance(value, Tensor):
                arr = value._np.copy()
                if param._np.dtype.kind == "f" and arr.dtype.kind == "f" and arr.ndim:
                    arr = arr.astype(param._np.dtype)
                return Tensor._wrap(arr)
            if isinstance(value, np.ndarray):
                return Tensor._wrap(value.astype(param._np.dtype) if value.ndim else value.copy())
            if isinstance(value, dict):
                return {k: cast(param, v) for k, v in value.items()}
            return copy.deepcopy(value)

        state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = cast(id_map[k], v)
            else:
                state[k] = v

        def update_group(group, new_group):
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            return new_group

        self.state = state
        self.param_groups = [update_group(g, ng) for g, ng in zip(groups, saved_groups)]

    def __repr__(self):
        s = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += "\n" + f"Parameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    s += f"    {key}: {group[key]}\n"
        return s + ")"


def _check_lr(lr):
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")


def _check_flags(differentiable, fused, foreach):
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if differentiable:
        raise NotImplementedError("gradviz.engine's optimizers are not differentiable (differentiable=True)")


def _state_tensor(arr):
    return Tensor._wrap(arr)
