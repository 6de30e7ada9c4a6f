"""The aten calls below one PyTorch call, kept so that a composite's nodes can be checked.

A Python-level call such as ``F.linear`` or ``F.cross_entropy`` makes several graph nodes
(``TBackward0`` and ``AddmmBackward0``; ``LogSoftmaxBackward0`` and ``NllLossBackward0``), each the
``grad_fn`` of one aten call that autograd wrapped (``aten.t``, ``aten.addmm``, ``aten._log_softmax``,
``aten.nll_loss_forward``). A ``TorchDispatchMode`` runs below autograd and sees exactly those
calls, with their own inputs, the intermediates included (the ``t(w)`` view). While the debugger
keeps forwards, each PyTorch call that records gradients runs inside one ``AtenCalls``; after it,
``nodes()`` maps each new grad_fn to the aten call that made it, which ``replay`` runs again.

A mapping is kept only where it is certain: an output written in place after its call (its
grad_fn may have been replaced), an output that is one of the call's inputs, a node claimed by
two calls and a call that writes one of its inputs are left out; their nodes are refused, never
checked against the wrong function.
"""
from __future__ import annotations

from gradviz.adapters.torch.replay import _tensors

_MODE = None


def _mode_class(torch):
    global _MODE
    if _MODE is None:
        from torch.utils._python_dispatch import TorchDispatchMode

        class AtenCallsMode(TorchDispatchMode):
            def __init__(self, calls):
                super().__init__()
                self.calls = calls

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                try:
                    self.calls.seen(func, args, kwargs, out)
                except Exception:  # (odd objects in odd places): that call is just not kept
                    pass
                return out
        _MODE = AtenCallsMode
    return _MODE


def _out_versions(torch, func, args, outs):
    """Each output's version counter now, as it will read once autograd has wrapped it: a view
    (``aten.t``) shares its base's counter then, so it is the base argument's."""
    returns = func._schema.returns
    names = [a.alias_info and set(a.alias_info.before_set) for a in func._schema.arguments]
    versions = []
    for pos, o in enumerate(outs):
        ret = returns[0] if len(returns) == 1 else returns[pos] if pos < len(returns) else None  # (one list)
        alias = ret.alias_info if ret is not None else None
        if not isinstance(o, torch.Tensor):
            versions.append(None)
        elif alias is None:
            versions.append(o._version)
        else:
            sets = set(alias.before_set)  # (empty for a list of views: the set is on its elements)
            base = [i for i, n in enumerate(names) if n and (n & sets if sets else True)]
            base = base if len(base) == 1 or sets else []
            b = args[base[0]] if base and base[0] < len(args) else None
            versions.append(b._version if isinstance(b, torch.Tensor) else -1)  # -1: not known, never kept
    return versions


def _writes_an_input(func):
    schema = getattr(func, "_schema", None)
    if schema is None:
        return True  # not an aten operator with a schema: not known, so not kept
    return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


class AtenCalls:
    """A context: the aten calls made inside it whose inputs include a tensor that requires grad."""

    def __init__(self, torch):
        self.torch = torch
        self.calls: list = []  # (func, args, kwargs, outs, input versions, output versions)
        self._mode = _mode_class(torch)(self)

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)

    def seen(self, func, args, kwargs, out):
        torch = self.torch
        tensors = _tensors(torch, args, kwargs)
        if not any(t.requires_grad for _, t in tensors) or _writes_an_input(func):
            return  # (a call that writes an input: the earlier call that made it sees its version move)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        self.calls.append((func, tuple(args), dict(kwargs or {}), outs,
                           [(place, t._version) for place, t in tensors], _out_versions(torch, func, args, outs)))

    def nodes(self):
        """{id(grad_fn.metadata): (grad_fn, func, args, kwargs, positions, versions)} for each node
        that one aten call certainly made (see the module's text)."""
        torch = self.torch
        claims: dict = {}
        for func, args, kwargs, outs, versions, out_versions in self.calls:
            inputs = [t for _, t in _tensors(torch, args, kwargs)]
            by_node: dict = {}
            for pos, (o, v) in enumerate(zip(outs, out_versions)):
                if not isinstance(o, torch.Tensor) or o.grad_fn is None:
                    continue
                if o._version != v or any(o is t for t in inputs):
                    by_node = {}  # written since, or an input passed through: not certain
                    break
                by_node.setdefault(id(o.grad_fn.metadata), (o.grad_fn, []))[1].append((pos, o.output_nr))
            for k, (node, positions) in by_node.items():
                claims.setdefault(k, []).append((node, func, args, kwargs, positions, versions))
        return {k: c[0] for k, c in claims.items() if len(c) == 1}

