"""Running a PyTorch node's forward again, in float64, for a gradient check.

What is kept (only under the debugger, where the producer's ``keep_forward`` is set): for each
node an op call made as the output's ``grad_fn`` (the TorchFunctionMode's call: ``F.conv2d``,
``torch.relu``, ``Tensor.__mul__``...), and for each ``torch.autograd.Function.apply`` (a custom
Function, which no mode sees), the function and its arguments, in the node's ``metadata`` under
the adapter's own key: references to the input tensors (no copies) with their version counters,
until the node has run in backward (when PyTorch frees its saved tensors too). The graph's saved
tensors are most of those already; an input no node saved (the input of an add, say) lives until
then instead of dying with the Python variable that held it.

A node is replayed only when its forward is that call alone: each of its ``next_functions``
edges must lead to one of the call's tensor arguments (a leaf's AccumulateGrad, or the
argument's own grad_fn and output number). A composite call (``F.linear`` makes ``TBackward0`` and
``AddmmBackward0`` from ``weight.t()``) is replayed instead as the aten calls that made its nodes
(``aten.t``, ``aten.addmm``), seen below autograd (``aten_calls``), under the same rule; a node
neither fits is refused with its reason, never checked against the wrong function. An in-place
call seen coming (``inplace=True``, ``relu_``, ``__iadd__``) is kept with a copy of its first
argument as it was, made before the call (``before_call``); one not seen coming is refused: its
input is its own output now.
"""
from __future__ import annotations

import contextlib

import numpy as np

from gradviz.adapters.protocol import NotCheckable, Replay, backward_source


RELEASED = "its forward inputs were let go when it ran in backward (as its saved tensors are): check it before it runs"


class _Forward:
    """One recorded call: ``func(*args, **kwargs)`` made this node's outputs ``positions``
    ((index in the flattened result, output_nr)), with the input versions then."""

    __slots__ = ("func", "args", "kwargs", "positions", "versions", "custom", "refused", "edges", "aten")

    def __init__(self, func, args, kwargs, positions, versions, custom=None, refused=None, edges=None, aten=None):
        self.func, self.args, self.kwargs = func, args, kwargs
        self.positions, self.versions, self.custom, self.refused = positions, versions, custom, refused
        self.edges = edges  # an in-place call: {place: (grad_fn, output_nr)} of its input before the call
        self.aten = aten  # the aten call below autograd that made the node (a _Forward), where certain

    def __repr__(self):  # never the tensors: a node's metadata may be printed
        return f"<gradviz forward of {getattr(self.func, '__name__', self.func)}>"


def _tensors(torch, args, kwargs):
    """(place, tensor) for each tensor argument, lists and tuples included: place is (i,) or
    (i, j) in args, or (name,) / (name, j) in kwargs."""
    out = []
    for key, x in list(enumerate(args)) + list((kwargs or {}).items()):
        if isinstance(x, torch.Tensor):
            out.append(((key,), x))
        elif isinstance(x, (list, tuple)):
            out += [((key, j), y) for j, y in enumerate(x) if isinstance(y, torch.Tensor)]
    return out


_INPLACE_DUNDERS = frozenset(f"__i{op}__" for op in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"))


def _inplace_name(func, kwargs):
    name = getattr(func, "__name__", "")
    return (kwargs or {}).get("inplace") is True or (name.endswith("_") and not name.endswith("__")) \
        or name in _INPLACE_DUNDERS


def before_call(torch, func, args, kwargs):
    """Before a call that writes its first argument in place (``inplace=True``, ``relu_``,
    ``__iadd__``) and makes a node: a copy of that argument as it is now, and where its gradient
    went (its grad_fn and output number) before the call; else None. The copy lives until the node
    runs in backward: the price of checking an in-place op (documented in docs/checking.md)."""
    if not args or not isinstance(args[0], torch.Tensor) or not _inplace_name(func, kwargs):
        return None
    if not any(t.requires_grad for _, t in _tensors(torch, args, kwargs)):
        return None
    t = args[0]
    try:
        with torch.no_grad():
            copy = t.detach().clone()
        return copy, t.grad_fn, t.output_nr
    except Exception:  # a tensor subclass that cannot be copied: the call goes on, not checkable
        return None


def record(torch, key, func, args, kwargs, outs, custom=None, before=None, aten=None):
    """Keep ``func``'s call in the metadata of each new grad_fn among ``outs`` (a tuple);
    ``before``: ``before_call``'s answer for an in-place call; ``aten``: the ``AtenCalls`` made
    inside the call (gradviz.adapters.torch.aten_calls), which give each node the aten call that
    made it (the only record of a composite's inner nodes). Never raises: what cannot be kept
    leaves its node uncheckable ("not known"), the program untouched."""
    try:
        made = aten.nodes() if aten is not None and before is None else {}
        _record(torch, key, func, args, kwargs, outs, custom, before, made)
        for node, afunc, aargs, akwargs, positions, versions in made.values():
            if key not in node.metadata:  # an inner node of a composite call
                node.metadata[key] = _Forward(afunc, aargs, akwargs, positions, versions)
    except Exception:  # (tensor subclasses, functorch wrappers: odd objects in odd places)
        pass


def _record(torch, key, func, args, kwargs, outs, custom, before, made):
    kwargs = dict(kwargs or {})
    edges = None
    if before is not None:  # the in-place call, as it was made: on a copy of its first argument
        copy, grad_fn, output_nr = before
        args = (copy,) + tuple(args[1:])
        edges = {(0,): (grad_fn, output_nr)}
    tensors = _tensors(torch, args, kwargs)
    versions = [(place, t._version) for place, t in tensors]
    by_node: dict = {}
    for pos, o in enumerate(outs):
        if isinstance(o, torch.Tensor) and o.grad_fn is not None:
            by_node.setdefault(id(o.grad_fn.metadata), (o.grad_fn, []))[1].append((pos, o.output_nr))
    for node, positions in by_node.values():
        if key in node.metadata:
            continue
        inplace = any(o is t for _, t in tensors for o in outs) or (before is None and _inplace_name(func, kwargs))
        if inplace:  # kept, its input would hold the node that holds it: a cycle no GC sees
            node.metadata[key] = _Forward(func, (), {}, positions, [], custom,
                                          refused="an in-place op: its input was overwritten by its own output")
        else:
            a = made.get(id(node.metadata))
            aten = _Forward(a[1], a[2], a[3], a[4], a[5]) if a is not None else None
            node.metadata[key] = _Forward(func, tuple(args), kwargs, positions, versions, custom, edges=edges,
                                          aten=aten)


def _get(container, place):
    x = container[place[0]]
    return x[place[1]] if len(place) > 1 else x


def _same_node(a, b):
    return a is not None and b is not None and a.metadata is b.metadata


def replay(torch, key, node):
    """``node``'s forward as a ``Replay`` (see the module's text); raises NotCheckable."""
    cls = type(node)
    custom = getattr(cls, "_forward_cls", None)
    src = backward_source(custom) if custom is not None else None
    if cls.__name__ in ("AccumulateGrad",) or node.name() == "torch::autograd::AccumulateGrad":
        raise NotCheckable("AccumulateGrad adds its gradient into .grad: it has no forward to check")
    if custom is not None and getattr(custom, "__module__", "").startswith("torch._functorch"):
        raise _refuse("torch.compile's compiled backward frees its saved tensors when it runs: running it "
                      "once more for a check would break the pass", src)
    fwd = node.metadata.get(key)
    if fwd is None:
        raise _refuse("made inside another op (a composite's inner node) or before gradviz watched: the "
                      "inputs of its own forward are not known", src)
    if fwd is RELEASED:
        raise _refuse(RELEASED, src)
    if fwd.refused:
        raise _refuse(fwd.refused, src)
    matched = _match(torch, fwd, node)
    if isinstance(matched, str) and fwd.aten is not None:  # a composite: the aten call that made it
        below = _match(torch, fwd.aten, node)
        if not isinstance(below, str):
            fwd, matched = fwd.aten, below
    if isinstance(matched, str):
        raise _refuse(matched, src)
    args, kwargs, tensors, diff, edges = matched
    if custom is not None:  # its backward returns one gradient per forward argument
        edges = [_arg_index(tensors[k][0]) for k in diff]
    if not diff:
        raise _refuse("none of its inputs needs a gradient", src)
    for k in diff:
        t = tensors[k][1]
        if not (t.is_floating_point() or t.is_complex()):
            raise _refuse(f"its input {k} is {t.dtype}: nothing to differentiate", src)
        if t.is_complex():
            raise _refuse("complex inputs are not checked (a complex gradient's convention differs)", src)
    device = tensors[diff[0]][1].device
    f64 = torch.float64

    def as64(x):
        if isinstance(x, torch.Tensor):
            return x.detach().to(f64) if x.is_floating_point() else x.detach()
        if isinstance(x, torch.dtype) and x.is_floating_point:
            return f64
        return x
    base_args = [as64(a) if not isinstance(a, (list, tuple)) else type(a)(as64(y) for y in a) for a in args]
    base_kwargs = {n: as64(a) if not isinstance(a, (list, tuple)) else type(a)(as64(y) for y in a)
                   for n, a in kwargs.items()}
    places = [tensors[k][0] for k in diff]
    positions = sorted(fwd.positions, key=lambda p: p[1])
    off = getattr(torch._C, "DisableTorchFunction", None) or contextlib.nullcontext

    def run(arrays):
        a, kw = list(base_args), dict(base_kwargs)
        if fwd.edges and isinstance(a[0], torch.Tensor):  # an in-place call writes its first argument
            a[0] = a[0].clone()
        for place, x in zip(places, arrays):
            t = torch.from_numpy(np.array(x, dtype=np.float64)).to(device)  # a copy: the call may write it
            target = a if isinstance(place[0], int) else kw
            if len(place) == 1:
                target[place[0]] = t
            else:
                seq = list(target[place[0]])
                seq[place[1]] = t
                target[place[0]] = type(target[place[0]])(seq)
        cpu = torch.random.get_rng_state()
        cuda = torch.cuda.get_rng_state() if device.type == "cuda" else None
        try:
            with torch.no_grad(), off():
                out = (fwd.func if fwd.custom is None else fwd.custom.apply)(*a, **kw)
        finally:
            drew = not torch.equal(torch.random.get_rng_state(), cpu) or (
                cuda is not None and not torch.equal(torch.cuda.get_rng_state(), cuda))
            torch.random.set_rng_state(cpu)  # the program's random numbers stay its own
            if cuda is not None:
                torch.cuda.set_rng_state(cuda)
        if drew:
            raise NotCheckable("its forward draws random numbers (such as dropout without its mask)")
        outs = out if isinstance(out, (tuple, list)) else (out,)
        flat = [o for o in outs]
        return [flat[pos].detach().to("cpu", f64).numpy() if flat[pos].is_floating_point()
                else flat[pos].detach().cpu().numpy() for pos, _ in positions]

    inputs = [tensors[k][1].detach().to("cpu", f64).numpy().copy() for k in diff]
    try:
        outputs = run(inputs)
    except NotCheckable as exc:
        raise _refuse(str(exc), src) from None
    except Exception as exc:
        raise _refuse(f"its forward fails when run again in float64: {type(exc).__name__}: {exc}", src) from None
    if not outputs or not np.issubdtype(outputs[0].dtype, np.inexact):
        raise _refuse("not differentiable: its output is not floating point", src)
    return Replay(inputs, edges, run, outputs, src)


def _match(torch, fwd, node):
    """(args, kwargs, tensors, diff, edges): each of ``node``'s next_functions edges led to one
    tensor argument of ``fwd``'s call (``tensors[diff[i]]`` is the input of edge ``edges[i]``);
    or why not, a string."""
    args, kwargs = list(fwd.args), dict(fwd.kwargs)
    tensors = _tensors(torch, args, kwargs)
    current = {place: t._version for place, t in tensors}
    for k, (place, version) in enumerate(fwd.versions):
        if current.get(place) != version:
            return f"input {k} was modified in place since forward (version {version}, now {current.get(place)})"
    # Each edge must lead to an argument of the call: the node is that call alone.
    diff, edges = [], []
    before = fwd.edges or {}
    for e, (fn, nr) in enumerate(node.next_functions):
        if fn is None:
            continue
        var = getattr(fn, "variable", None)
        match = [k for k, (place, t) in enumerate(tensors)
                 if (place in before and _same_node(before[place][0], fn) and before[place][1] == nr)
                 or (place not in before and ((var is not None and t is var)
                                              or (var is None and _same_node(t.grad_fn, fn) and t.output_nr == nr)))]
        if not match:
            return (f"a composite op: {getattr(fwd.func, '__name__', fwd.func)} made it from an intermediate "
                    f"value (its input {e} comes from {fn.name()}, made inside the same call)")
        k = match[0]
        if k in diff:
            return "the same tensor is two of its inputs: their gradients cannot be told apart"
        diff.append(k)
        edges.append(e)
    return args, kwargs, tensors, diff, edges


def _arg_index(place):
    return place[0] if isinstance(place[0], int) else -1


def _refuse(reason, src):
    exc = NotCheckable(reason)
    exc.backward_source = src  # type: ignore[attr-defined]
    return exc
