"""``Module``: parameters, buffers and submodules registered by attribute, as in ``torch.nn.Module``."""
from collections import OrderedDict

import numpy as np

from .._tensor import Tensor
from ..autograd.function import RemovableHandle
from .parameter import Parameter

# Observers of module calls (gradviz's recorder uses it for module scopes); empty costs one test.
call_listeners = []


class Module:
    training = True

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "_forward_pre_hooks", [])
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError("cannot assign parameters or modules before Module.__init__() call")
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, (Parameter, Module)):
            for store in (params, buffers, modules):
                store.pop(name, None)
            d.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
        elif name in params or name in modules:
            kind = ("parameter", "torch.nn.Parameter") if name in params else ("child module", "torch.nn.Module")
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as {kind[0]} '{name}' ({kind[1]} or None expected)")
            (params if name in params else modules)[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (torch.Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(store, {}):
                del self.__dict__[store][name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        self._buffers[name] = tensor

    def add_module(self, name, module):
        self._modules[name] = module

    register_module = add_module

    # -- calling ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        for hook in self._forward_pre_hooks:
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        if call_listeners:
            for listener in call_listeners:
                listener.module_entered(self)
            try:
                out = self.forward(*args, **kwargs)
            finally:
                for listener in call_listeners:
                    listener.module_exited(self)
        else:
            out = self.forward(*args, **kwargs)
        for hook in self._forward_hooks:
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_hook(self, hook):
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    def register_forward_pre_hook(self, hook):
        self._forward_pre_hooks.append(hook)
        return RemovableHandle(self._forward_pre_hooks, hook)

    # -- traversal -------------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix=""):
        memo = set() if memo is None else memo
        if self in memo:
            return
        memo.add(self)
        yield prefix, self
        for name, mod in self._modules.items():
            if mod is not None:
                yield from mod.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named(self, store, recurse):
        seen = set()
        mods = self.named_modules() if recurse else [("", self)]
        for prefix, mod in mods:
            for name, t in getattr(mod, store).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{prefix}.{name}" if prefix else name), t

    def named_parameters(self, prefix="", recurse=True):
        for name, p in self._named("_parameters", recurse):
            yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        for name, b in self._named("_buffers", recurse):
            yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # -- modes and grads ---------------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs):
        return self

    def float(self):
        return self

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self):
        out = OrderedDict()
        for prefix, mod in self.named_modules():
            for store in ("_parameters", "_buffers"):
                for name, t in getattr(mod, store).items():
                    if t is not None:
                        out[f"{prefix}.{name}" if prefix else name] = t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        for k, target in own.items():
            if k in state_dict:
                src = state_dict[k]
                arr = src._np if isinstance(src, Tensor) else np.asarray(src)
                if arr.shape != target._np.shape:
                    errors.append(f"size mismatch for {k}: copying a param with shape {_size(arr.shape)} from "
                                  f"checkpoint, the shape in current model is {_size(target._np.shape)}.")
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for k, target in own.items():
            if k in state_dict:
                src = state_dict[k]
                target._np[...] = src._np if isinstance(src, Tensor) else np.asarray(src)
        return _IncompatibleKeys(missing, unexpected)

    # -- printing --------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


def _size(shape):
    return f"torch.Size([{', '.join(str(n) for n in shape)}])"


class _IncompatibleKeys(tuple):
    def __new__(cls, missing, unexpected):
        return super().__new__(cls, (missing, unexpected))

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]

    def __repr__(self):
        return "<All keys matched successfully>" if not self[0] and not self[1] else \
            f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"
