"""Backward explained: the local rule each ``grad_input`` of a node follows, in the notation of
PyTorch's ``derivatives.yaml`` (``grad`` is the incoming gradient, ``self``/``other`` the forward
inputs, ``result`` the forward output), and the same rule with a node's values substituted.

One table, ``RULES``, keyed by the op's name without its ``Backward<n>`` suffix; each entry gives
the rule's text per input and a function computing it from the values, so that the substituted
result can be checked against the ``grad_inputs`` the pass recorded. Plain numpy: no Qt, no
framework.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from gradviz.trace import explain_nn as nn

SMALL = 8  # elements: values larger than this are named, not printed


@dataclass
class Values:
    """What a rule reads. Arrays are numpy; any of them may be missing (None)."""

    inputs: list = field(default_factory=list)  # forward inputs, in the node's input order
    output: object = None  # the forward result
    saved: dict = field(default_factory=dict)  # saved tensor name -> array
    attrs: dict = field(default_factory=dict)  # non-tensor saved values: exponent, alpha, dim...
    grad_outputs: list = field(default_factory=list)
    grad_inputs: list = field(default_factory=list)
    names: list = field(default_factory=list)  # names of the inputs, where known
    grad_before: object = None  # AccumulateGrad: .grad before this pass added to it

    def x(self, i=0, name=None):
        if name and name in self.saved:
            return _arr(self.saved[name])
        return _arr(self.inputs[i]) if i < len(self.inputs) else None

    @property
    def grad(self):
        return _arr(self.grad_outputs[0]) if self.grad_outputs else None

    @property
    def result(self):
        return _arr(self.saved["result"]) if "result" in self.saved else _arr(self.output)


@dataclass
class Term:
    """One grad_input: its rule, the rule with numbers, what the rule gives and what was recorded."""

    name: str  # grad_self, grad_other, grad_a...
    rule: str
    substituted: str | None = None
    computed: object = None
    recorded: object = None
    broadcast: str = ""  # how the rule's result was summed to fit the input's shape

    @property
    def matches(self):
        if self.computed is None or self.recorded is None:
            return None
        c, r = np.asarray(self.computed, dtype=np.float64), np.asarray(self.recorded, dtype=np.float64)
        return c.shape == r.shape and bool(np.allclose(c, r, rtol=1e-4, atol=1e-6, equal_nan=True))


@dataclass
class Explanation:
    op: str
    terms: list
    known: bool = True

    @property
    def text(self):
        if not self.known:
            return f"{self.op}: no rule in gradviz's table for this node"
        lines = []
        for t in self.terms:
            line = t.substituted or (t.rule if t.rule.startswith(t.name) else f"{t.name} = {t.rule}")
            if t.broadcast:
                line += f"   ({t.broadcast})"
            if t.matches is False:
                line += "   (differs from the recorded grad_input)"
            lines.append(line)
        return "\n".join(lines)


def _arr(a):
    return None if a is None else np.asarray(a)


def fmt(a):
    """A value as the substituted rule prints it: the numbers when small, else its shape."""
    if a is None:
        return "?"
    a = np.asarray(a)
    if a.ndim == 0:
        return f"{float(a):g}" if a.dtype.kind == "f" else str(a.item())
    if a.size > SMALL:
        return f"<{'x'.join(map(str, a.shape))}>"
    if a.dtype.kind == "f":
        return np.array2string(a, separator=", ", formatter={"float_kind": lambda v: f"{v:g}"})
    return np.array2string(a, separator=", ")


def base_op(op):
    """``PowBackward0`` -> ``Pow``; ``torch::autograd::AccumulateGrad`` -> ``AccumulateGrad``."""
    op = op.rsplit("::", 1)[-1]
    return re.sub(r"Backward\d*$", "", op)


def unbroadcast(g, shape):
    """Sum ``g`` over the axes broadcasting added or stretched, to ``shape``; says which."""
    shape = tuple(shape)
    axes = []
    while g.ndim > len(shape):
        g = g.sum(axis=0)
        axes.append("leading")
    stretched = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    why = ""
    if axes or stretched:
        parts = ([f"{len(axes)} leading ax{'i' if len(axes) == 1 else 'e'}s"] if axes else []) + \
            ([f"dim{'s' if len(stretched) > 1 else ''} {', '.join(map(str, stretched))}"] if stretched else [])
        why = f"summed over {' and '.join(parts)} broadcast to fit shape {list(shape)}"
    return g, why


def _reduced_dims(xshape, gshape, dims=None):
    """The dims of ``xshape`` a reduction removed (or kept at 1) to give ``gshape``: ``dims`` when
    the node says; else read from the shapes (the first dims that do not line up)."""
    xshape, gshape = tuple(xshape), tuple(gshape)
    if len(gshape) == len(xshape):
        return tuple(i for i, (n, m) in enumerate(zip(xshape, gshape)) if m == 1 and n != 1), True
    if dims is not None:
        return tuple(sorted(d % len(xshape) for d in np.atleast_1d(dims))), False
    removed, j = [], 0
    for i, n in enumerate(xshape):
        if j < len(gshape) and gshape[j] == n:
            j += 1
        else:
            removed.append(i)
    return tuple(removed), False


def _expand_to(g, xshape, dims=None):
    dims, keepdim = _reduced_dims(xshape, g.shape, dims)
    if not keepdim:
        for d in dims:
            g = np.expand_dims(g, d)
    return np.broadcast_to(g, xshape), dims


def _pow_exponent(v):
    if "exponent" in v.attrs:
        return float(v.attrs["exponent"])
    x, y = v.x(0, "self"), _arr(v.output)
    if x is None or y is None:
        return None
    ok = (np.abs(x) > 0) & (np.abs(x) != 1) & (np.abs(y) > 0)
    if not ok.any():
        return None
    p = float(np.log(np.abs(y[ok].flat[0])) / np.log(np.abs(x[ok].flat[0])))
    return float(round(p)) if abs(p - round(p)) < 1e-4 else p


# -- the rules: each returns [(name, rule, substituted, computed, input shape or None)] -------------
def _binary(v, rule_a, rule_b, fa, fb, sub_a, sub_b, scalar=None):
    g, a, b = v.grad, v.x(0, "self"), v.x(1, "other")
    if b is None and len(v.inputs) == 1 and scalar is not None:
        b = v.attrs.get("other", scalar(a, _arr(v.output)))  # a Python number: not a tensor input
    out = []
    for i, (rule, f, sub, x) in enumerate(((rule_a, fa, sub_a, a), (rule_b, fb, sub_b, b))):
        name = _gname(v, i, ("self", "other"))
        if i >= (len(v.grad_inputs) or len(v.inputs) or 2):
            break
        if i == 1 and len(v.inputs) == 1:
            break
        try:
            c = f(g, a, b)
        except Exception:
            c = None
        shape = x.shape if x is not None else (np.shape(v.grad_inputs[i]) if i < len(v.grad_inputs)
                                                and v.grad_inputs[i] is not None else None)
        out.append((name, rule, sub(g, a, b) if c is not None else None, c, shape))
    return out


def _gname(v, i, defaults):
    if i < len(v.names) and v.names[i]:
        return f"grad_{v.names[i]}"
    return f"grad_{defaults[i] if i < len(defaults) else i}"


def _unary(rule, f, sub, needs="self"):
    def r(v):
        g = v.grad
        x = v.x(0, "self") if needs == "self" else v.result
        try:
            c = f(g, x, v)
        except Exception:
            c = None
        return [(_gname(v, 0, ("self",)), rule, sub(g, x, v) if c is not None else None, c, None)]
    return r


def _add(sign):
    def r(v):
        alpha = v.attrs.get("alpha", 1)
        s = "-" if sign < 0 else ""
        rb = f"{s}grad" + (f" * {alpha:g}" if alpha != 1 else "")
        scaled = f" * {alpha:g}" if alpha != 1 else ""
        return _binary(v, "grad", rb, lambda g, a, b: g, lambda g, a, b: sign * alpha * g,
                       lambda g, a, b: f"{fmt(g)}", lambda g, a, b: f"{s}{fmt(g)}{scaled}")
    return r


def _scalar(f):
    def infer(a, y):
        if a is None or y is None:
            return None
        ok = np.abs(a) > 0
        return np.asarray(f(y[ok].flat[0], a[ok].flat[0])) if ok.any() else None
    return infer


def _mul(v):
    return _binary(v, "grad * other", "grad * self", lambda g, a, b: g * b, lambda g, a, b: g * a,
                   lambda g, a, b: f"{fmt(g)} * {fmt(b)}", lambda g, a, b: f"{fmt(g)} * {fmt(a)}",
                   _scalar(lambda y, a: y / a))


def _div(v):
    return _binary(v, "grad / other", "-grad * self / other**2", lambda g, a, b: g / b,
                   lambda g, a, b: -g * a / b ** 2, lambda g, a, b: f"{fmt(g)} / {fmt(b)}",
                   lambda g, a, b: f"-{fmt(g)} * {fmt(a)} / {fmt(b)}**2", _scalar(lambda y, a: a / y))


def _pow(v):
    p = _pow_exponent(v)
    if p is None:
        return _unary("grad * exponent * self**(exponent - 1)", lambda g, x, v: None, lambda g, x, v: None)(v)
    if p == 0:
        return _unary("0", lambda g, x, v: np.zeros_like(x), lambda g, x, v: "0")(v)
    e = "self" if p == 2 else f"self**{p - 1:g}"
    return _unary(f"grad * {p:g} * {e}", lambda g, x, v: g * p * np.power(x, p - 1),
                  lambda g, x, v: f"{fmt(g)} * {p:g} * {fmt(np.power(x, p - 1))}")(v)


def _gelu_grad(g, x, v):
    if v.attrs.get("approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (x + 0.044715 * x ** 3)
        t = np.tanh(inner)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * k * (1 + 3 * 0.044715 * x ** 2))
    from math import erf
    cdf = 0.5 * (1 + np.vectorize(erf)(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x ** 2) / math.sqrt(2 * math.pi)
    return g * (cdf + x * pdf)


def _sum(v, mean=False):
    g, x = v.grad, v.x(0, "self")
    shape = x.shape if x is not None else (np.shape(v.grad_inputs[0]) if v.grad_inputs else None)
    if g is None or shape is None:
        return [("grad_self", "grad.expand(self.sizes())" + (" / N" if mean else ""), None, None, None)]
    e, dims = _expand_to(g, shape, v.attrs.get("dim"))
    n = int(np.prod(shape)) if g.ndim == 0 else int(np.prod([shape[d] for d in dims]))
    c = e / n if mean else e.copy()
    rule = "grad.expand(self.sizes())" + (f" / N   (N = {n}, the elements averaged)" if mean else "")
    sub = f"{fmt(g)}.expand({list(shape)})" + (f" / {n}" if mean else "")
    return [("grad_self", rule, sub, c, shape)]


def _matmul(v, names=("self", "mat2"), bias=False):
    g = v.grad
    out = []
    offset = 1 if bias else 0
    if bias:
        b = v.x(0, "self")
        c = None if g is None else g
        out.append(("grad_self", "grad (summed over the batch: bias)", fmt(g) if g is not None else None, c,
                    b.shape if b is not None else None))
    a, m = v.x(offset, names[0]), v.x(offset + 1, names[1])
    sw = lambda t: np.swapaxes(t, -1, -2)  # noqa: E731
    for i, (nm, rule, f) in enumerate(((names[0], f"grad @ {names[1]}^T", lambda: g @ sw(m)),
                                       (names[1], f"{names[0]}^T @ grad", lambda: sw(a) @ g))):
        try:
            c = f()
        except Exception:
            c = None
        sub = None
        if c is not None:
            sub = f"{fmt(g)} @ {fmt(sw(m))}" if i == 0 else f"{fmt(sw(a))} @ {fmt(g)}"
        out.append((f"grad_{nm}", rule, sub, c, None))
    return out


def _shape(rule, f):
    def r(v):
        g, x = v.grad, v.x(0, "self")
        shape = x.shape if x is not None else (np.shape(v.grad_inputs[0]) if v.grad_inputs and
                                               v.grad_inputs[0] is not None else None)
        try:
            c = f(g, shape, v)
        except Exception:
            c = None
        sub = None if c is None else f"{rule.replace('self.sizes()', str(list(shape)))} = " \
            f"{fmt(g)} -> shape {list(np.shape(c))}"
        return [("grad_self", rule, sub, c, None)]
    return r


def _transpose(g, shape, v):
    if g.ndim == len(shape) and g.ndim == 2:
        return g.T
    d = (v.attrs["dim0"], v.attrs["dim1"]) if "dim0" in v.attrs and "dim1" in v.attrs else None
    if d is None:
        diff = [i for i, (n, m) in enumerate(zip(shape, g.shape)) if n != m]
        d = diff[:2] if len(diff) == 2 else (-1, -2)
    return np.swapaxes(g, d[0], d[1])


def _softmax_dim(v):
    return int(v.attrs.get("dim", -1))


def _softmax(v):
    g, y, d = v.grad, v.result, _softmax_dim(v)
    c = None if g is None or y is None else y * (g - (g * y).sum(axis=d, keepdims=True))
    sub = None if c is None else f"{fmt(y)} * ({fmt(g)} - sum({fmt(g)} * {fmt(y)}, dim={d}))"
    return [("grad_self", "result * (grad - (grad * result).sum(dim, keepdim=True))", sub, c, None)]


def _log_softmax(v):
    g, y, d = v.grad, v.result, _softmax_dim(v)
    c = None if g is None or y is None else g - np.exp(y) * g.sum(axis=d, keepdims=True)
    sub = None if c is None else f"{fmt(g)} - exp({fmt(y)}) * sum({fmt(g)}, dim={d})"
    return [("grad_self", "grad - exp(result) * grad.sum(dim, keepdim=True)", sub, c, None)]


def _accumulate(v):
    g, before = v.grad, _arr(v.grad_before)
    after = None if g is None else (g if before is None else before + g)
    name = v.names[0] if v.names and v.names[0] else "variable"
    sub = None
    if g is not None:
        sub = f"{name}.grad += {fmt(g)}: {fmt(before) if before is not None else 'None'} -> {fmt(after)}"
    return [(f"{name}.grad", f"{name}.grad += grad", sub, after, None)]


def _ruled(text):
    """A rule given as text only: its numbers are the node's own (no recomputation here)."""
    def r(v):
        return [(_gname(v, i, ("self", "weight", "bias")), t, None, None, None) for i, t in enumerate(text)]
    return r


RULES = {
    "Add": _add(1),
    "Sub": _add(-1),
    "Mul": _mul,
    "Div": _div,
    "Neg": _unary("-grad", lambda g, x, v: -g, lambda g, x, v: f"-{fmt(g)}"),
    "Pow": _pow,
    "Exp": _unary("grad * result", lambda g, y, v: g * y, lambda g, y, v: f"{fmt(g)} * {fmt(y)}", "result"),
    "Log": _unary("grad / self", lambda g, x, v: g / x, lambda g, x, v: f"{fmt(g)} / {fmt(x)}"),
    "Sqrt": _unary("grad / (2 * result)", lambda g, y, v: g / (2 * y),
                   lambda g, y, v: f"{fmt(g)} / (2 * {fmt(y)})", "result"),
    "Tanh": _unary("grad * (1 - result**2)", lambda g, y, v: g * (1 - y ** 2),
                   lambda g, y, v: f"{fmt(g)} * (1 - {fmt(y)}**2)", "result"),
    "Sigmoid": _unary("grad * result * (1 - result)", lambda g, y, v: g * y * (1 - y),
                      lambda g, y, v: f"{fmt(g)} * {fmt(y)} * (1 - {fmt(y)})", "result"),
    "Relu": _unary("grad * (result > 0)", lambda g, y, v: g * (y > 0),
                   lambda g, y, v: f"{fmt(g)} * {fmt((y > 0).astype(np.int8))}", "result"),
    "Gelu": _unary("grad * (Phi(self) + self * phi(self))", _gelu_grad,
                   lambda g, x, v: f"{fmt(g)} * (Phi({fmt(x)}) + {fmt(x)} * phi({fmt(x)}))"),
    "Sum": _sum,
    "Mean": lambda v: _sum(v, mean=True),
    "Mm": _matmul,
    "Bmm": _matmul,
    "Addmm": lambda v: _matmul(v, ("mat1", "mat2"), bias=True),
    "T": _shape("grad.t()", lambda g, s, v: g.T),
    "Transpose": _shape("grad.transpose(dim0, dim1)", _transpose),
    "View": _shape("grad.reshape(self.sizes())", lambda g, s, v: g.reshape(s)),
    "UnsafeView": _shape("grad.reshape(self.sizes())", lambda g, s, v: g.reshape(s)),
    "Reshape": _shape("grad.reshape(self.sizes())", lambda g, s, v: g.reshape(s)),
    "ReshapeAlias": _shape("grad.reshape(self.sizes())", lambda g, s, v: g.reshape(s)),
    "Expand": _shape("grad.sum_to_size(self.sizes())", lambda g, s, v: unbroadcast(g, s)[0]),
    "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "NllLoss": nn.nll_loss,
    "Convolution": nn.convolution,
    "NativeBatchNorm": nn.batch_norm,
    "NativeLayerNorm": nn.layer_norm,
    "Embedding": nn.embedding,
    "MaxPool2DWithIndices": nn.max_pool,
    "AccumulateGrad": _accumulate,
}


def _named(text, names):
    """The rule in the program's names: ``self``/``other`` become ``a``/``b`` where known."""
    for word, i in (("self", 0), ("other", 1)):
        if i < len(names) and names[i]:
            text = re.sub(rf"\b{word}\b", names[i], text)
    return text


def explain(op, values: Values) -> Explanation:
    """The rule of node ``op`` (its grad_fn name) and, where values are given, the substituted form."""
    rule = RULES.get(base_op(op))
    if rule is None:
        return Explanation(op, [], known=False)
    terms = []
    with np.errstate(all="ignore"):  # a rule meeting 0 or inf says so in its numbers, as the node did
        try:
            made = rule(values)
        except Exception:  # values the rule cannot read (shapes it cannot line up): the rule alone
            made = rule(Values(names=values.names))
    for i, (name, text, sub, computed, shape) in enumerate(made):
        recorded = values.grad_inputs[i] if i < len(values.grad_inputs) else None
        if base_op(op) == "AccumulateGrad":
            recorded = computed if values.grad is not None else None
        why = ""
        if computed is not None:
            computed = np.asarray(computed)
            target = shape if shape is not None else (np.shape(recorded) if recorded is not None else None)
            if target is not None and computed.shape != tuple(target):
                try:
                    computed, why = unbroadcast(computed, target)
                    computed = computed.reshape(target)
                except ValueError:
                    pass
        text = _named(text, values.names)
        t = Term(name, text, None, computed, None if recorded is None else np.asarray(recorded), why)
        if computed is not None:
            t.substituted = f"{name} = {text} = " + (f"{sub} = " if sub is not None else "") + fmt(computed)
            if base_op(op) == "AccumulateGrad":
                t.substituted = f"{sub}"
        terms.append(t)
    return Explanation(op, terms)


def _value_array(value):
    return None if value is None else value.array


def values_from_trace(trace, node_id, pass_index=None, saved=(), attrs=None) -> Values:
    """What node ``node_id`` read in a backward pass (the latest, or ``pass_index``), from the
    trace: forward inputs (a leaf's value, or the output of the node that made it), the forward
    output, grad_outputs and grad_inputs; ``saved`` as the debugger fetches them, [(name, array)]."""
    n = trace.nodes[node_id]
    p = None
    for q in reversed(trace.passes):
        if (pass_index is None or q.index == pass_index) and node_id in q.grad_outputs:
            p = q
            break
    inputs, names = [], []
    for tid in n.inputs:
        t = trace.tensors.get(tid)
        maker = trace.maker(tid) if t is None or t.value is None else None
        if t is not None and t.value is not None:
            inputs.append(t.value.array)
        elif maker is not None and maker.value is not None:
            inputs.append(maker.value.array)
        else:
            inputs.append(None)
        names.append(t.name if t is not None else None)
    v = Values(inputs=inputs, output=_value_array(n.value), saved={k: a for k, a in saved},
               attrs=dict(attrs or {}), names=names)
    if p is not None:
        v.grad_outputs = [_value_array(g) for g in p.grad_outputs.get(node_id, ())]
        v.grad_inputs = [_value_array(g) for g in p.grad_inputs.get(node_id, ())]
        if n.kind == "accumulate_grad" and n.output in p.accumulated:
            contribution, after = (_value_array(x) for x in p.accumulated[n.output])
            if after is not None and contribution is not None:
                before = after - contribution
                v.grad_before = before if np.any(before) else None
    return v


def saved_attrs(node):
    """A grad_fn's non-tensor saved values (``_saved_exponent``, ``_saved_alpha``, ``_saved_dim``...),
    as the engine and PyTorch both name them."""
    out = {}
    for n in dir(node):
        if n.startswith("_saved_"):
            try:
                x = getattr(node, n)
            except Exception:  # freed, or not readable outside its backward
                continue
            if isinstance(x, (bool, int, float, str)) or (isinstance(x, tuple) and all(isinstance(i, int) for i in x)):
                out[n[len("_saved_"):]] = x
    return out


def explain_node(trace, node_id, pass_index=None, saved=(), attrs=None) -> Explanation:
    """The rule of a node of ``trace`` with the values its backward pass read and wrote."""
    return explain(trace.nodes[node_id].op, values_from_trace(trace, node_id, pass_index, saved, attrs))
