"""Every engine op against PyTorch: forward values, the gradient of every input, dtypes and the
backward graph (``grad_fn.name()`` and the names reached through ``next_functions``).

Each case runs twice: ``test_engine`` needs no torch (numpy references, central differences in
float64 and the expected grad_fn names written here), ``test_matches_torch`` runs the same function
with ``torch`` in place of ``gradviz.engine`` and compares everything, and also checks that the
names written here are torch's."""
import numpy as np
import pytest

import gradviz.engine as gt

ACC = "torch::autograd::AccumulateGrad"


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


_rng = np.random.default_rng(20240601)


def R(*shape, dtype=np.float32, pos=False):
    """Standard normal values (``pos``: in [0.5, 2.5)), drawn in collection order: deterministic."""
    a = _rng.uniform(0.5, 2.5, shape) if pos else _rng.standard_normal(shape)
    return np.asarray(a, dtype=dtype)


def D(*shape, pos=False):
    return R(*shape, dtype=np.float64, pos=pos)


class K:
    """A constant input: a tensor that does not require grad (targets, indices, masks, stats)."""

    def __init__(self, a, dtype=None):
        self.a = np.asarray(a, dtype=dtype)


class Case:
    def __init__(self, fn, inputs, name, graph=None, ref=None, fd=True, rtol=1e-5, atol=1e-6):
        self.fn, self.inputs, self.name, self.graph, self.ref = fn, inputs, name, graph, ref
        self.fd, self.rtol, self.atol = fd, rtol, atol


def case(id, fn, *inputs, **kw):
    return pytest.param(Case(fn, inputs, **kw), id=id)


def make(lib, inputs, cast=None):
    """Fresh tensors of ``lib`` (torch or the engine) for the case's inputs: float arrays require
    grad, ``K`` constants do not."""
    out = []
    for x in inputs:
        if isinstance(x, K):
            out.append(lib.from_numpy(x.a.copy()))
        else:
            out.append(lib.from_numpy(np.array(x, dtype=cast or x.dtype)).requires_grad_())
    return out


def outputs(o):
    return [o] if hasattr(o, "grad_fn") else list(o)


def graph(t):
    """The backward graph below ``t`` as nested (name, [children]); a node without children is its
    name. Edges without a node (inputs that need no grad, Python scalars) are left out."""
    def sig(fn):
        kids = [sig(f) for f, _ in fn.next_functions if f is not None]
        return (fn.name(), kids) if kids else fn.name()
    return None if t.grad_fn is None else sig(t.grad_fn)


def close(actual, expected, c):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=c.rtol, atol=c.atol)


def G(*nodes):
    """Shorthand for a chain of single-input nodes ending in a leaf: G('A', 'B') = ('A', [('B', [ACC])])."""
    out = ACC
    for n in reversed(nodes):
        out = (n, [out])
    return out


# -- numpy references for the nn ops -----------------------------------------------------------------
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_ref(x, w, b=None, stride=1, padding=0):
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = np.einsum("nckl,ockl->no", xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], w)
    return out if b is None else out + b[None, :, None, None]


def maxpool_ref(x, k, s=None, p=0):
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(s or k), _pair(p)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out


def adaptive_ref(x, size):
    oh, ow = _pair(size)
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * h) // oh, -(-(i + 1) * h // oh)
            c0, c1 = (j * w) // ow, -(-(j + 1) * w // ow)
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(axis=(-1, -2))
    return out


def bn_ref(x, w=None, b=None, mean=None, var=None, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        out = out * w.reshape(shape)
    if b is not None:
        out = out + b.reshape(shape)
    return out


def log_softmax_ref(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def softmax_ref(x, axis):
    return np.exp(log_softmax_ref(x, axis))


def nll_ref(logp, t, reduction="mean", ignore_index=-100, weight=None):
    w = np.ones(logp.shape[1]) if weight is None else weight
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    wt = w[safe] * valid
    per = -logp[np.arange(len(t)), safe] * wt
    return {"none": per, "sum": per.sum(), "mean": per.sum() / wt.sum()}[reduction]


def ce_nd_ref(x, t, reduction="mean", ignore_index=-100):
    """cross_entropy over (N, C, d1, ...): every position a row."""
    rows = np.moveaxis(log_softmax_ref(x, 1), 1, -1).reshape(-1, x.shape[1])
    out = nll_ref(rows, t.reshape(-1), reduction, ignore_index)
    return out.reshape(t.shape) if reduction == "none" else out


# -- the cases --------------------------------------------------------------------------------------
A, B = (3, 1, 4), (2, 1)  # broadcast to (3, 2, 4)

BINARY = [
    case("add", lambda L, a, b: a + b, R(*A), R(*B), name="AddBackward0", ref=np.add),
    case("add_same_shape", lambda L, a, b: a + b, R(2, 3), R(2, 3), name="AddBackward0", ref=np.add),
    case("add_leading_dims", lambda L, a, b: a + b, R(4), R(2, 3, 4), name="AddBackward0", ref=np.add),
    case("add_both_broadcast", lambda L, a, b: a + b, R(2, 1, 3), R(1, 4, 1), name="AddBackward0", ref=np.add),
    case("add_0dim", lambda L, a, b: a + b, R(2, 3), R(), name="AddBackward0", ref=np.add),
    case("add_alpha", lambda L, a, b: a.add(b, alpha=2.5), R(*A), R(*B), name="AddBackward0",
         ref=lambda a, b: a + 2.5 * b),
    case("torch_add", lambda L, a, b: L.add(a, b), R(*B), R(*A), name="AddBackward0", ref=np.add),
    case("add_scalar", lambda L, a: a + 2.5, R(2, 3), name="AddBackward0", ref=lambda a: a + 2.5),
    case("radd_scalar", lambda L, a: 2.5 + a, R(2, 3), name="AddBackward0", ref=lambda a: a + 2.5),
    case("add_int_scalar", lambda L, a: a + 2, R(2, 3), name="AddBackward0", ref=lambda a: a + 2),
    case("add_f32_f64", lambda L, a, b: a + b, R(2, 3), D(3), name="AddBackward0", ref=np.add),
    case("add_f32_0dim_f64", lambda L, a, b: a + b, R(2, 3), D(), name="AddBackward0", ref=np.add),
    case("add_f32_int_tensor", lambda L, a, k: a + k, R(2, 3), K([1, 2, 3]), name="AddBackward0", ref=np.add),
    case("add_used_twice", lambda L, a: a + a, R(2, 3), name="AddBackward0", ref=lambda a: 2 * a),
    case("sub", lambda L, a, b: a - b, R(*A), R(*B), name="SubBackward0", ref=np.subtract),
    case("sub_broadcast", lambda L, a, b: a - b, R(4, 1), R(3), name="SubBackward0", ref=np.subtract),
    case("sub_alpha", lambda L, a, b: a.sub(b, alpha=3), R(*A), R(*B), name="SubBackward0",
         ref=lambda a, b: a - 3 * b),
    case("sub_scalar", lambda L, a: a - 1.5, R(2, 3), name="SubBackward0", ref=lambda a: a - 1.5),
    case("rsub_scalar", lambda L, a: 1.5 - a, R(2, 3), name="RsubBackward1", ref=lambda a: 1.5 - a),
    case("mul", lambda L, a, b: a * b, R(*A), R(*B), name="MulBackward0", ref=np.multiply),
    case("mul_broadcast", lambda L, a, b: a * b, R(2, 3, 1), R(3, 4), name="MulBackward0", ref=np.multiply),
    case("mul_scalar", lambda L, a: a * 3, R(2, 3), name="MulBackward0", ref=lambda a: a * 3),
    case("rmul_scalar", lambda L, a: 3 * a, R(2, 3), name="MulBackward0", ref=lambda a: a * 3),
    case("mul_self", lambda L, a: a * a, R(2, 3), name="MulBackward0", ref=lambda a: a * a),
    case("mul_int_tensor", lambda L, a, k: a * k, R(2, 3), K([[2], [-1]]), name="MulBackward0", ref=np.multiply),
    case("div", lambda L, a, b: a / b, R(*A), R(*B, pos=True), name="DivBackward0", ref=np.divide),
    case("div_broadcast", lambda L, a, b: a / b, R(4), R(3, 1, pos=True), name="DivBackward0", ref=np.divide),
    case("div_scalar", lambda L, a: a / 4, R(2, 3), name="DivBackward0", ref=lambda a: a / 4),
    case("rdiv_scalar", lambda L, a: 2 / a, R(2, 3, pos=True), name="MulBackward0",
         graph=G("MulBackward0", "ReciprocalBackward0"), ref=lambda a: 2 / a),
    case("torch_div", lambda L, a, b: L.div(a, b), R(2, 3), R(3, pos=True), name="DivBackward0", ref=np.divide),
    case("pow_2", lambda L, a: a ** 2, R(2, 3), name="PowBackward0", ref=lambda a: a ** 2),
    case("pow_half", lambda L, a: a ** 0.5, R(2, 3, pos=True), name="PowBackward0", ref=np.sqrt),
    case("pow_negative", lambda L, a: a ** -1.5, R(2, 3, pos=True), name="PowBackward0", ref=lambda a: a ** -1.5),
    case("pow_0", lambda L, a: a ** 0, R(2, 3), name="PowBackward0", ref=lambda a: np.ones_like(a)),
    case("pow_method", lambda L, a: a.pow(3), R(2, 3), name="PowBackward0", ref=lambda a: a ** 3),
    case("torch_pow", lambda L, a: L.pow(a, 3), R(2, 3), name="PowBackward0", ref=lambda a: a ** 3),
    case("square", lambda L, a: a.square(), R(2, 3), name="PowBackward0", ref=np.square),
    case("pow_tensor", lambda L, a, b: a ** b, R(*A, pos=True), R(*B), name="PowBackward1", ref=np.power),
    case("pow_tensor_broadcast", lambda L, a, b: a.pow(b), R(3, 1, pos=True), R(4), name="PowBackward1",
         ref=np.power),
    case("rpow", lambda L, a: 2 ** a, R(2, 3), name="PowBackward2", ref=lambda a: 2.0 ** a),
    case("rpow_float", lambda L, a: 0.5 ** a, R(2, 3), name="PowBackward2", ref=lambda a: 0.5 ** a),
    case("neg", lambda L, a: -a, R(2, 3), name="NegBackward0", ref=np.negative),
    case("neg_method", lambda L, a: a.neg(), R(2, 3), name="NegBackward0", ref=np.negative),
    case("maximum", lambda L, a, b: L.maximum(a, b), R(*A), R(*B), name="MaximumBackward0", ref=np.maximum),
    case("minimum", lambda L, a, b: L.minimum(a, b), R(*A), R(*B), name="MinimumBackward0", ref=np.minimum),
    case("maximum_ties", lambda L, a, b: L.maximum(a, b), np.array([1., 2., 3.], np.float32),
         np.array([1., 0., 3.], np.float32), name="MaximumBackward0", ref=np.maximum, fd=False),
    case("minimum_ties", lambda L, a, b: a.min(b), np.array([1., 2., 3.], np.float32),
         np.array([1., 0., 3.], np.float32), name="MinimumBackward0", ref=np.minimum, fd=False),
    case("where", lambda L, c, a, b: L.where(c, a, b), K(R(3, 1) > 0), R(1, 4), R(3, 4), name="WhereBackward0",
         ref=np.where),
    case("where_scalar", lambda L, c, a: L.where(c, a, 0.0), K(R(3, 4) > 0), R(3, 4), name="WhereBackward0",
         ref=lambda c, a: np.where(c, a, 0)),
    case("where_f32_f64", lambda L, c, a, b: L.where(c, a, b), K(R(2, 3) > 0), R(2, 3), D(3), name="WhereBackward0",
         ref=np.where),
]

UNARY = [
    case("exp", lambda L, a: a.exp(), R(2, 3), name="ExpBackward0", ref=np.exp),
    case("torch_exp", lambda L, a: L.exp(a), R(2, 3), name="ExpBackward0", ref=np.exp),
    case("exp_int", lambda L, k: k.exp(), K([0, 1, 2]), name=None, ref=lambda k: np.exp(k).astype(np.float32)),
    case("log", lambda L, a: a.log(), R(2, 3, pos=True), name="LogBackward0", ref=np.log),
    case("sqrt", lambda L, a: a.sqrt(), R(2, 3, pos=True), name="SqrtBackward0", ref=np.sqrt),
    case("torch_sqrt", lambda L, a: L.sqrt(a), R(2, 3, pos=True), name="SqrtBackward0", ref=np.sqrt),
    case("abs", lambda L, a: a.abs(), R(2, 3), name="AbsBackward0", ref=np.abs),
    case("builtin_abs", lambda L, a: abs(a), R(2, 3), name="AbsBackward0", ref=np.abs),
    case("tanh", lambda L, a: a.tanh(), R(2, 3), name="TanhBackward0", ref=np.tanh),
    case("F_tanh", lambda L, a: L.nn.functional.tanh(a), R(2, 3), name="TanhBackward0", ref=np.tanh),
    case("sigmoid", lambda L, a: a.sigmoid(), R(2, 3), name="SigmoidBackward0", ref=lambda a: 1 / (1 + np.exp(-a))),
    case("sigmoid_large", lambda L, a: L.sigmoid(a),
         np.array([-1000., -100., -30., -1., 0., 1., 30., 100., 1000.], np.float32), name="SigmoidBackward0",
         ref=lambda a: np.array([0, 3.720076e-44, 9.357623e-14, 0.26894143, 0.5, 0.7310586, 1, 1, 1], np.float32)),
    case("F_sigmoid", lambda L, a: L.nn.functional.sigmoid(a), R(2, 3), name="SigmoidBackward0",
         ref=lambda a: 1 / (1 + np.exp(-a))),
    case("relu", lambda L, a: a.relu(), R(3, 4), name="ReluBackward0", ref=lambda a: np.maximum(a, 0)),
    case("F_relu", lambda L, a: L.nn.functional.relu(a), R(3, 4), name="ReluBackward0",
         ref=lambda a: np.maximum(a, 0)),
    case("clamp", lambda L, a: a.clamp(-0.5, 0.5), R(3, 4), name="ClampBackward1",
         ref=lambda a: np.clip(a, -0.5, 0.5)),
    case("clamp_min", lambda L, a: a.clamp(min=0.1), R(3, 4), name="ClampBackward1",
         ref=lambda a: np.maximum(a, 0.1)),
    case("clamp_max", lambda L, a: L.clamp(a, max=-0.1), R(3, 4), name="ClampBackward1",
         ref=lambda a: np.minimum(a, -0.1)),
    case("clamp_at_bounds", lambda L, a: a.clamp(-1, 1), np.array([-2., -1., 0., 1., 2.], np.float32),
         name="ClampBackward1", ref=lambda a: np.clip(a, -1, 1), fd=False),
    case("sin", lambda L, a: a.sin(), R(2, 3), name="SinBackward0", ref=np.sin),
    case("cos", lambda L, a: L.cos(a), R(2, 3), name="CosBackward0", ref=np.cos),
    case("reciprocal", lambda L, a: a.reciprocal(), R(2, 3, pos=True), name="ReciprocalBackward0",
         ref=np.reciprocal),
]

REDUCTIONS = [
    case("sum", lambda L, a: a.sum(), R(2, 3, 4), name="SumBackward0", ref=np.sum),
    case("torch_sum", lambda L, a: L.sum(a), R(2, 3), name="SumBackward0", ref=np.sum),
    case("sum_dim", lambda L, a: a.sum(1), R(2, 3, 4), name="SumBackward1", ref=lambda a: a.sum(1)),
    case("sum_neg_dim_keepdim", lambda L, a: a.sum(-1, keepdim=True), R(2, 3, 4), name="SumBackward1",
         ref=lambda a: a.sum(-1, keepdims=True)),
    case("sum_tuple_dims", lambda L, a: a.sum((0, 2)), R(2, 3, 4), name="SumBackward1",
         ref=lambda a: a.sum((0, 2))),
    case("sum_tuple_dims_keepdim", lambda L, a: L.sum(a, (0, 2), keepdim=True), R(2, 3, 4), name="SumBackward1",
         ref=lambda a: a.sum((0, 2), keepdims=True)),
    case("sum_int", lambda L, k: k.sum(), K([[1, 2], [3, 4]]), name=None, ref=lambda k: np.int64(10)),
    case("sum_bool", lambda L, k: k.sum(), K([True, False, True]), name=None, ref=lambda k: np.int64(2)),
    case("mean", lambda L, a: a.mean(), R(2, 3, 4), name="MeanBackward0", ref=np.mean),
    case("mean_dim", lambda L, a: a.mean(1), R(2, 3, 4), name="MeanBackward1", ref=lambda a: a.mean(1)),
    case("mean_tuple_keepdim", lambda L, a: a.mean((0, 2), keepdim=True), R(2, 3, 4), name="MeanBackward1",
         ref=lambda a: a.mean((0, 2), keepdims=True)),
    case("mean_neg_dim", lambda L, a: L.mean(a, -1), R(2, 3, 4), name="MeanBackward1", ref=lambda a: a.mean(-1)),
    case("max", lambda L, a: a.max(), R(3, 4), name="MaxBackward1", ref=np.max),
    case("max_ties", lambda L, a: a.max(), np.array([[1., 3.], [3., 2.]], np.float32), name="MaxBackward1",
         ref=lambda a: np.float32(3), fd=False),
    case("min", lambda L, a: L.min(a), R(3, 4), name="MinBackward1", ref=np.min),
    case("max_dim", lambda L, a: a.max(1), R(3, 4, 2), name="MaxBackward0",
         ref=lambda a: (a.max(1), a.argmax(1))),
    case("max_dim_keepdim", lambda L, a: L.max(a, 0, keepdim=True), R(3, 4), name="MaxBackward0",
         ref=lambda a: (a.max(0, keepdims=True), a.argmax(0, keepdims=True))),
    case("max_dim_ties", lambda L, a: a.max(1), np.array([[1., 3., 3., 1.], [2., 2., 0., 2.]], np.float32),
         name="MaxBackward0", ref=lambda a: (a.max(1), np.array([1, 0])), fd=False),
    case("min_dim", lambda L, a: a.min(-1), R(3, 4), name="MinBackward0", ref=lambda a: (a.min(-1), a.argmin(-1))),
    case("amax", lambda L, a: a.amax(1), R(3, 4, 2), name="AmaxBackward0", ref=lambda a: a.max(1)),
    case("amax_all", lambda L, a: a.amax(), R(3, 4), name="AmaxBackward0", ref=np.max),
    case("amax_tuple_keepdim", lambda L, a: L.amax(a, (0, 2), keepdim=True), R(3, 4, 2), name="AmaxBackward0",
         ref=lambda a: a.max((0, 2), keepdims=True)),
    case("amax_ties", lambda L, a: a.amax(1), np.array([[1., 3., 3., 1.], [2., 2., 0., 2.]], np.float32),
         name="AmaxBackward0", ref=lambda a: a.max(1), fd=False),
    case("amin", lambda L, a: a.amin(0), R(3, 4), name="AminBackward0", ref=lambda a: a.min(0)),
    case("argmax", lambda L, a: a.argmax(), R(3, 4), name=None, ref=np.argmax),
    case("argmax_dim", lambda L, a: a.argmax(1), R(3, 4), name=None, ref=lambda a: a.argmax(1)),
    case("argmax_keepdim", lambda L, a: L.argmax(a, 0, keepdim=True), R(3, 4), name=None,
         ref=lambda a: a.argmax(0, keepdims=True)),
    case("argmin_ties", lambda L, a: a.argmin(1), np.array([[3., 1., 1., 3.]], np.float32), name=None,
         ref=lambda a: np.array([1])),
    case("norm", lambda L, a: a.norm(), R(3, 4), name="LinalgVectorNormBackward0",
         ref=lambda a: np.sqrt((a * a).sum())),
    case("torch_norm_p2", lambda L, a: L.norm(a, 2), R(3, 4), name="LinalgVectorNormBackward0",
         ref=lambda a: np.sqrt((a * a).sum())),
    case("norm_dim_keepdim", lambda L, a: a.norm(dim=1, keepdim=True), R(3, 4), name="LinalgVectorNormBackward0",
         ref=lambda a: np.sqrt((a * a).sum(1, keepdims=True))),
    case("norm_of_zeros", lambda L, a: a.norm(dim=0), np.array([[0., 1.], [0., 2.]], np.float32),
         name="LinalgVectorNormBackward0", ref=lambda a: np.array([0., np.sqrt(5)], np.float32), fd=False),
    case("softmax", lambda L, a: a.softmax(1), R(3, 4), name="SoftmaxBackward0", ref=lambda a: softmax_ref(a, 1)),
    case("softmax_dim0", lambda L, a: L.softmax(a, 0), R(3, 4), name="SoftmaxBackward0",
         ref=lambda a: softmax_ref(a, 0)),
    case("F_softmax_3d", lambda L, a: L.nn.functional.softmax(a, dim=-1), R(2, 3, 4), name="SoftmaxBackward0",
         ref=lambda a: softmax_ref(a, -1)),
    case("softmax_large", lambda L, a: a.softmax(-1), R(3, 4) * 100, name="SoftmaxBackward0",
         ref=lambda a: softmax_ref(a, -1)),
    case("log_softmax", lambda L, a: a.log_softmax(1), R(3, 4), name="LogSoftmaxBackward0",
         ref=lambda a: log_softmax_ref(a, 1)),
    case("F_log_softmax_dim0", lambda L, a: L.nn.functional.log_softmax(a, dim=0), R(3, 4),
         name="LogSoftmaxBackward0", ref=lambda a: log_softmax_ref(a, 0)),
    case("log_softmax_large", lambda L, a: L.log_softmax(a, 1), R(3, 4) * 100, name="LogSoftmaxBackward0",
         ref=lambda a: log_softmax_ref(a, 1), rtol=1e-5, atol=1e-4),
]

SHAPE = [
    case("reshape", lambda L, a: a.reshape(4, 3), R(3, 4), name="ViewBackward0", ref=lambda a: a.reshape(4, 3)),
    case("reshape_infer", lambda L, a: L.reshape(a, (-1,)), R(3, 4), name="ViewBackward0",
         ref=lambda a: a.reshape(-1)),
    case("reshape_noncontiguous_copy", lambda L, a: a.t().reshape(-1), R(3, 4), name="UnsafeViewBackward0",
         graph=G("UnsafeViewBackward0", "CloneBackward0", "TBackward0"), ref=lambda a: a.T.reshape(-1)),
    case("reshape_noncontiguous_alias", lambda L, a: a.permute(2, 0, 1).reshape(4, 6), R(2, 3, 4),
         name="ReshapeAliasBackward0", graph=G("ReshapeAliasBackward0", "PermuteBackward0"),
         ref=lambda a: a.transpose(2, 0, 1).reshape(4, 6)),
    case("view", lambda L, a: a.view(-1), R(3, 4), name="ViewBackward0", ref=lambda a: a.reshape(-1)),
    case("view_shape", lambda L, a: a.view(2, 3, 2), R(3, 4), name="ViewBackward0",
         ref=lambda a: a.reshape(2, 3, 2)),
    case("view_of_permuted", lambda L, a: a.permute(2, 0, 1).view(4, 6), R(2, 3, 4), name="ViewBackward0",
         graph=G("ViewBackward0", "PermuteBackward0"), ref=lambda a: a.transpose(2, 0, 1).reshape(4, 6)),
    case("flatten", lambda L, a: a.flatten(), R(2, 3, 4), name="ViewBackward0", ref=lambda a: a.reshape(-1)),
    case("flatten_1", lambda L, a: L.flatten(a, 1), R(2, 3, 4), name="ViewBackward0",
         ref=lambda a: a.reshape(2, -1)),
    case("flatten_transposed", lambda L, a: a.transpose(0, 1).flatten(), R(2, 3, 4), name="UnsafeViewBackward0",
         graph=G("UnsafeViewBackward0", "CloneBackward0", "TransposeBackward0"),
         ref=lambda a: a.transpose(1, 0, 2).reshape(-1)),
    case("transpose", lambda L, a: a.transpose(0, 2), R(2, 3, 4), name="TransposeBackward0",
         ref=lambda a: a.transpose(2, 1, 0)),
    case("transpose_neg", lambda L, a: L.transpose(a, -1, -2), R(2, 3, 4), name="TransposeBackward0",
         ref=lambda a: a.transpose(0, 2, 1)),
    case("t", lambda L, a: a.t(), R(3, 4), name="TBackward0", ref=lambda a: a.T),
    case("t_1d", lambda L, a: a.t(), R(3), name="TBackward0", ref=lambda a: a),
    case("T", lambda L, a: a.T, R(3, 4), name="PermuteBackward0", ref=lambda a: a.T),
    case("mT", lambda L, a: a.mT, R(2, 3, 4), name="TransposeBackward0", ref=lambda a: a.transpose(0, 2, 1)),
    case("permute", lambda L, a: a.permute(2, 0, 1), R(2, 3, 4), name="PermuteBackward0",
         ref=lambda a: a.transpose(2, 0, 1)),
    case("permute_neg", lambda L, a: L.permute(a, (-1, 0, 1)), R(2, 3, 4), name="PermuteBackward0",
         ref=lambda a: a.transpose(2, 0, 1)),
    case("unsqueeze", lambda L, a: a.unsqueeze(0), R(3, 4), name="UnsqueezeBackward0", ref=lambda a: a[None]),
    case("unsqueeze_neg", lambda L, a: a.unsqueeze(-1), R(3, 4), name="UnsqueezeBackward0",
         ref=lambda a: a[..., None]),
    case("unsqueeze_middle", lambda L, a: L.unsqueeze(a, 1), R(3, 4), name="UnsqueezeBackward0",
         ref=lambda a: a[:, None]),
    case("squeeze", lambda L, a: a.squeeze(), R(3, 1, 4, 1), name="SqueezeBackward0",
         ref=lambda a: a.reshape(3, 4)),
    case("squeeze_dim", lambda L, a: a.squeeze(1), R(3, 1, 4, 1), name="SqueezeBackward1",
         ref=lambda a: a.reshape(3, 4, 1)),
    case("squeeze_neg_dim", lambda L, a: L.squeeze(a, -1), R(3, 1, 4, 1), name="SqueezeBackward1",
         ref=lambda a: a.reshape(3, 1, 4)),
    case("squeeze_not_one", lambda L, a: a.squeeze(0), R(3, 1, 4), name="SqueezeBackward1", ref=lambda a: a),
    case("expand", lambda L, a: a.expand(2, 3, 4), R(3, 1), name="ExpandBackward0",
         ref=lambda a: np.broadcast_to(a, (2, 3, 4))),
    case("expand_minus_one", lambda L, a: a.expand(-1, 5), R(3, 1), name="ExpandBackward0",
         ref=lambda a: np.broadcast_to(a, (3, 5))),
    case("expand_as", lambda L, a, k: a.expand_as(k), R(1, 4), K(np.zeros((3, 4), np.float32)),
         name="ExpandBackward0", ref=lambda a, k: np.broadcast_to(a, (3, 4))),
    case("expand_same", lambda L, a: a.expand(3, 4), R(3, 4), name="ExpandBackward0", ref=lambda a: a),
    case("view_as", lambda L, a, k: a.view_as(k), R(3, 4), K(np.zeros((2, 6), np.float32)), name="ViewBackward0",
         ref=lambda a, k: a.reshape(2, 6)),
    case("reshape_as_noncontiguous", lambda L, a, k: a.t().reshape_as(k), R(3, 4), K(np.zeros((2, 6), np.float32)),
         name="UnsafeViewBackward0", ref=lambda a, k: a.T.reshape(2, 6)),
    case("clone", lambda L, a: a.clone(), R(3, 4), name="CloneBackward0", ref=lambda a: a),
    case("contiguous", lambda L, a: a.t().contiguous(), R(3, 4), name="CloneBackward0",
         graph=G("CloneBackward0", "TBackward0"), ref=lambda a: a.T),
    case("to_float64", lambda L, a: a.to(L.float64), R(3, 4), name="ToCopyBackward0", ref=lambda a: a),
    case("double", lambda L, a: a.double(), R(3, 4), name="ToCopyBackward0", ref=lambda a: a),
    # (no finite differences through a cast to float32: too coarse)
    case("to_float32", lambda L, a: a.float(), D(3, 4), name="ToCopyBackward0", ref=lambda a: a.astype(np.float32),
         fd=False),
    case("to_same_dtype", lambda L, a: a.to(L.float32) * 1, R(3, 4), name="MulBackward0", ref=lambda a: a, fd=False),
]

X = R(3, 4)
IDX = [
    case("int", lambda L, a: a[1], X, name="SelectBackward0", ref=lambda a: a[1]),
    case("negative_int", lambda L, a: a[-1], X, name="SelectBackward0", ref=lambda a: a[-1]),
    case("int_int", lambda L, a: a[1, 2], X, name="SelectBackward0", graph=G("SelectBackward0", "SelectBackward0"),
         ref=lambda a: a[1, 2]),
    case("slice", lambda L, a: a[1:3], X, name="SliceBackward0", ref=lambda a: a[1:3]),
    case("slice_step", lambda L, a: a[::2], X, name="SliceBackward0", ref=lambda a: a[::2]),
    case("slice_negative", lambda L, a: a[-2:], X, name="SliceBackward0", ref=lambda a: a[-2:]),
    case("slice_full", lambda L, a: a[:], X, name="SliceBackward0", ref=lambda a: a),
    case("slice_beyond_end", lambda L, a: a[1:100], X, name="SliceBackward0", ref=lambda a: a[1:]),
    case("slice_slice", lambda L, a: a[1:, ::2], X, name="SliceBackward0",
         graph=G("SliceBackward0", "SliceBackward0"), ref=lambda a: a[1:, ::2]),
    case("column", lambda L, a: a[:, 1], X, name="SelectBackward0", ref=lambda a: a[:, 1]),
    case("column_negative", lambda L, a: a[:, -1], X, name="SelectBackward0", ref=lambda a: a[:, -1]),
    case("full_slices", lambda L, a: a[:, :], X, name="AliasBackward0", ref=lambda a: a),
    case("ellipsis_int", lambda L, a: a[..., 0], R(2, 3, 4), name="SelectBackward0", ref=lambda a: a[..., 0]),
    case("ellipsis_slice", lambda L, a: a[..., 1:], R(2, 3, 4), name="SliceBackward0", ref=lambda a: a[..., 1:]),
    case("none", lambda L, a: a[None], X, name="UnsqueezeBackward0", ref=lambda a: a[None]),
    case("none_middle", lambda L, a: a[:, None], X, name="UnsqueezeBackward0", ref=lambda a: a[:, None]),
    case("none_ellipsis_int", lambda L, a: a[..., None, 1], R(2, 3, 4), name="SelectBackward0",
         graph=G("SelectBackward0", "UnsqueezeBackward0"), ref=lambda a: a[..., None, 1]),
    case("int_tensor_0dim", lambda L, a, i: a[i], X, K(np.int64(2)), name="SelectBackward0", ref=lambda a, i: a[i]),
    case("index_tensor", lambda L, a, i: a[i], X, K([2, 0]), name="IndexBackward0", ref=lambda a, i: a[i]),
    case("index_repeated", lambda L, a, i: a[i], X, K([0, 2, 0, 0]), name="IndexBackward0",
         ref=lambda a, i: a[i]),
    case("index_negative", lambda L, a, i: a[i], X, K([-1, 0, -1]), name="IndexBackward0",
         ref=lambda a, i: a[i]),
    case("index_2d", lambda L, a, i: a[i], X, K([[0, 1], [2, 2]]), name="IndexBackward0", ref=lambda a, i: a[i]),
    case("index_list", lambda L, a: a[[0, 2, 2]], X, name="IndexBackward0", ref=lambda a: a[[0, 2, 2]]),
    case("index_column_list", lambda L, a: a[:, [0, 0, 3]], X, name="IndexBackward0",
         ref=lambda a: a[:, [0, 0, 3]]),
    case("index_pairs", lambda L, a, i, j: a[i, j], X, K([0, 2, 0]), K([1, 3, 1]), name="IndexBackward0",
         ref=lambda a, i, j: a[i, j]),
    case("index_then_slice", lambda L, a, i: a[i, 1:], X, K([2, 0, 2]), name="IndexBackward0",
         graph=G("IndexBackward0", "SliceBackward0"), ref=lambda a, i: a[i, 1:]),
    case("slice_then_index", lambda L, a, i: a[1:, i], X, K([0, 3, 3]), name="IndexBackward0",
         graph=G("IndexBackward0", "SliceBackward0"), ref=lambda a, i: a[1:, i]),
    case("int_then_index", lambda L, a, i: a[0, i], X, K([0, 0, 3]), name="IndexBackward0",
         graph=G("IndexBackward0", "SelectBackward0"), ref=lambda a, i: a[0, i]),
    case("int_slice_index", lambda L, a, i: a[0, :, i], R(2, 3, 4), K([1, 3]), name="IndexBackward0",
         graph=G("IndexBackward0", "SelectBackward0"), ref=lambda a, i: a[0][:, i]),
    case("bool_mask", lambda L, a, m: a[m], X, K(R(3, 4) > 0), name="IndexBackward0", ref=lambda a, m: a[m]),
    case("bool_rows", lambda L, a, m: a[m], X, K([True, False, True]), name="IndexBackward0",
         ref=lambda a, m: a[m]),
    case("compare_mask", lambda L, a: a[a > 0], X, name="IndexBackward0", ref=lambda a: a[a > 0]),
]

CAT = [
    case("cat", lambda L, a, b, c: L.cat([a, b, c]), R(2, 3), R(1, 3), R(4, 3), name="CatBackward0",
         ref=lambda a, b, c: np.concatenate([a, b, c])),
    case("cat_dim1", lambda L, a, b: L.cat((a, b), 1), R(2, 3), R(2, 1), name="CatBackward0",
         ref=lambda a, b: np.concatenate([a, b], 1)),
    case("cat_neg_dim", lambda L, a, b: L.cat([a, b], dim=-1), R(2, 3, 1), R(2, 3, 2), name="CatBackward0",
         ref=lambda a, b: np.concatenate([a, b], -1)),
    case("cat_const", lambda L, a, k: L.cat([k, a]), R(2, 3), K(np.ones((1, 3), np.float32)), name="CatBackward0",
         ref=lambda a, k: np.concatenate([k, a])),
    case("cat_f32_f64", lambda L, a, b: L.cat([a, b]), R(2, 3), D(1, 3), name="CatBackward0",
         ref=lambda a, b: np.concatenate([a, b])),
    case("cat_same_twice", lambda L, a: L.cat([a, a]), R(2, 3), name="CatBackward0",
         ref=lambda a: np.concatenate([a, a])),
    case("stack", lambda L, a, b: L.stack([a, b]), R(2, 3), R(2, 3), name="StackBackward0",
         ref=lambda a, b: np.stack([a, b])),
    case("stack_dim1", lambda L, a, b, c: L.stack([a, b, c], 1), R(2, 3), R(2, 3), R(2, 3), name="StackBackward0",
         ref=lambda a, b, c: np.stack([a, b, c], 1)),
    case("stack_neg_dim", lambda L, a, b: L.stack((a, b), dim=-1), R(2, 3), R(2, 3), name="StackBackward0",
         ref=lambda a, b: np.stack([a, b], -1)),
]

_mm = ("MmBackward0", [ACC, ACC])
_clone_t = G("UnsafeViewBackward0", "CloneBackward0", "TransposeBackward0")
MATMUL = [
    case("dot_1d_1d", lambda L, a, b: a @ b, R(4), R(4), name="DotBackward0", graph=("DotBackward0", [ACC, ACC]),
         ref=np.matmul),
    case("dot", lambda L, a, b: L.dot(a, b), R(4), R(4), name="DotBackward0", ref=np.dot),
    case("mv_2d_1d", lambda L, a, b: a @ b, R(3, 4), R(4), name="MvBackward0", graph=("MvBackward0", [ACC, ACC]),
         ref=np.matmul),
    case("mv", lambda L, a, b: a.mv(b), R(3, 4), R(4), name="MvBackward0", ref=np.matmul),
    case("matmul_1d_2d", lambda L, a, b: L.matmul(a, b), R(3), R(3, 4), name="SqueezeBackward4",
         graph=("SqueezeBackward4", [("MmBackward0", [G("UnsqueezeBackward0"), ACC])]), ref=np.matmul),
    case("mm_2d_2d", lambda L, a, b: a @ b, R(3, 4), R(4, 2), name="MmBackward0", graph=_mm, ref=np.matmul),
    case("mm", lambda L, a, b: L.mm(a, b), R(3, 4), R(4, 2), name="MmBackward0", ref=np.matmul),
    case("mm_transposed", lambda L, a, b: a.t().mm(b), R(4, 3), R(4, 2), name="MmBackward0", ref=lambda a, b: a.T @ b),
    case("matmul_3d_2d", lambda L, a, b: a @ b, R(2, 3, 4), R(4, 5), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("MmBackward0", [G("ViewBackward0"), ACC])]), ref=np.matmul),
    case("matmul_3d_2d_const", lambda L, a, b: a.matmul(b), R(2, 3, 4), K(R(4, 5)), name="UnsafeViewBackward0",
         graph=G("UnsafeViewBackward0", "MmBackward0", "ViewBackward0"), ref=np.matmul),
    case("matmul_3d_1d", lambda L, a, b: a @ b, R(2, 3, 4), R(4), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("MvBackward0", [G("ViewBackward0"), ACC])]), ref=np.matmul),
    case("matmul_4d_1d", lambda L, a, b: a @ b, R(2, 3, 5, 4), R(4), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("MvBackward0", [G("ViewBackward0"), ACC])]), ref=np.matmul),
    case("matmul_1d_3d", lambda L, a, b: a @ b, R(4), R(2, 4, 5), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("MvBackward0", [_clone_t, ACC])]), ref=np.matmul),
    case("matmul_2d_3d", lambda L, a, b: a @ b, R(3, 4), R(2, 4, 5), name="CloneBackward0",
         graph=("CloneBackward0", [("TransposeBackward0", [("UnsafeViewBackward0", [
             ("MmBackward0", [_clone_t, G("TBackward0")])])])]), ref=np.matmul),
    case("matmul_3d_3d", lambda L, a, b: a @ b, R(2, 3, 4), R(2, 4, 5), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("BmmBackward0", [G("ViewBackward0", "ExpandBackward0"),
                                                          G("ViewBackward0", "ExpandBackward0")])]), ref=np.matmul),
    case("bmm", lambda L, a, b: a.bmm(b), R(2, 3, 4), R(2, 4, 5), name="BmmBackward0",
         graph=("BmmBackward0", [ACC, ACC]), ref=np.matmul),
    case("torch_bmm", lambda L, a, b: L.bmm(a, b), R(2, 3, 4), R(2, 4, 5), name="BmmBackward0", ref=np.matmul),
    case("matmul_4d_3d_broadcast", lambda L, a, b: a @ b, R(2, 1, 3, 4), R(3, 4, 5), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("BmmBackward0", [
             G("UnsafeViewBackward0", "CloneBackward0", "ExpandBackward0"),
             G("UnsafeViewBackward0", "CloneBackward0", "ExpandBackward0")])]), ref=np.matmul),
    case("matmul_4d_4d_broadcast", lambda L, a, b: L.matmul(a, b), R(2, 1, 3, 4), R(1, 5, 4, 2),
         name="UnsafeViewBackward0", ref=np.matmul),
    case("matmul_3d_3d_squeeze", lambda L, a, b: a @ b, R(1, 3, 4), R(2, 4, 5), name="CloneBackward0",
         graph=("CloneBackward0", [("TransposeBackward0", [("UnsafeViewBackward0", [
             ("MmBackward0", [_clone_t, G("TBackward0", "SqueezeBackward1")])])])]), ref=np.matmul),
    case("matmul_3d_3d_const", lambda L, a, b: a @ b, R(2, 3, 4), K(R(2, 4, 5)), name="UnsafeViewBackward0",
         graph=G("UnsafeViewBackward0", "BmmBackward0", "ViewBackward0", "ExpandBackward0"), ref=np.matmul),
    case("matmul_3d_noncontiguous_1d_const", lambda L, a, v: a.transpose(0, 1) @ v, R(3, 2, 4), K(R(4)),
         name="UnsafeViewBackward0", ref=lambda a, v: a.transpose(1, 0, 2) @ v),
    case("matmul_1d_const_3d", lambda L, v, b: v @ b, K(R(4)), R(2, 4, 5), name="UnsafeViewBackward0",
         ref=np.matmul),
    case("matmul_f64", lambda L, a, b: a @ b, D(2, 3, 4), D(4, 5), name="UnsafeViewBackward0", ref=np.matmul),
]

F_LINEAR = [
    case("linear_2d_bias", lambda L, x, w, b: L.nn.functional.linear(x, w, b), R(3, 4), R(5, 4), R(5),
         name="AddmmBackward0", graph=("AddmmBackward0", [ACC, ACC, G("TBackward0")]),
         ref=lambda x, w, b: x @ w.T + b),
    case("linear_3d_bias", lambda L, x, w, b: L.nn.functional.linear(x, w, b), R(2, 3, 4), R(5, 4), R(5),
         name="ViewBackward0",
         graph=("ViewBackward0", [("AddmmBackward0", [ACC, G("ViewBackward0"), G("TBackward0")])]),
         ref=lambda x, w, b: x @ w.T + b),
    case("linear_2d", lambda L, x, w: L.nn.functional.linear(x, w), R(3, 4), R(5, 4), name="MmBackward0",
         graph=("MmBackward0", [ACC, G("TBackward0")]), ref=lambda x, w: x @ w.T),
    case("linear_3d", lambda L, x, w: L.nn.functional.linear(x, w), R(2, 3, 4), R(5, 4), name="UnsafeViewBackward0",
         graph=("UnsafeViewBackward0", [("MmBackward0", [G("ViewBackward0"), G("TBackward0")])]),
         ref=lambda x, w: x @ w.T),
    case("linear_1d_bias", lambda L, x, w, b: L.nn.functional.linear(x, w, b), R(4), R(5, 4), R(5),
         name="ViewBackward0",
         graph=("ViewBackward0", [("AddmmBackward0", [ACC, G("ViewBackward0"), G("TBackward0")])]),
         ref=lambda x, w, b: x @ w.T + b),
    case("linear_const_weight", lambda L, x, w, b: L.nn.functional.linear(x, w, b), R(3, 4), K(R(5, 4)), R(5),
         name="AddmmBackward0", graph=("AddmmBackward0", [ACC, ACC]), ref=lambda x, w, b: x @ w.T + b),
]

def F(L):
    return L.nn.functional


CONV = [
    case("conv_s1_p0_bias", lambda L, x, w, b: F(L).conv2d(x, w, b), D(2, 3, 7, 5), D(4, 3, 3, 3), D(4),
         name="ConvolutionBackward0", graph=("ConvolutionBackward0", [ACC, ACC, ACC]), ref=conv_ref),
    case("conv_s2_p1_bias", lambda L, x, w, b: F(L).conv2d(x, w, b, stride=2, padding=1), D(2, 3, 7, 5),
         D(4, 3, 3, 3), D(4), name="ConvolutionBackward0", ref=lambda x, w, b: conv_ref(x, w, b, 2, 1)),
    case("conv_k7_p3_s2", lambda L, x, w, b: F(L).conv2d(x, w, b, stride=2, padding=3), D(1, 2, 9, 8),
         D(3, 2, 7, 7), D(3), name="ConvolutionBackward0", ref=lambda x, w, b: conv_ref(x, w, b, 2, 3)),
    case("conv_k1_nobias", lambda L, x, w: F(L).conv2d(x, w), D(2, 3, 5, 4), D(4, 3, 1, 1),
         name="ConvolutionBackward0", graph=("ConvolutionBackward0", [ACC, ACC]), ref=conv_ref),
    case("conv_s2_p0_nobias", lambda L, x, w: F(L).conv2d(x, w, stride=2), D(2, 3, 8, 7), D(2, 3, 3, 3),
         name="ConvolutionBackward0", ref=lambda x, w: conv_ref(x, w, None, 2, 0)),
    case("conv_k3_p1_s1", lambda L, x, w, b: F(L).conv2d(x, w, b, 1, 1), D(1, 2, 6, 7), D(3, 2, 3, 3), D(3),
         name="ConvolutionBackward0", ref=lambda x, w, b: conv_ref(x, w, b, 1, 1)),
    case("conv_tuple_args", lambda L, x, w, b: F(L).conv2d(x, w, b, stride=(2, 1), padding=(1, 0)),
         D(1, 2, 6, 5), D(2, 2, 3, 2), D(2), name="ConvolutionBackward0",
         ref=lambda x, w, b: conv_ref(x, w, b, (2, 1), (1, 0))),
    case("conv_unbatched", lambda L, x, w, b: F(L).conv2d(x, w, b, padding=1), D(3, 6, 5), D(2, 3, 3, 3), D(2),
         name="SqueezeBackward1",
         graph=("SqueezeBackward1", [("ConvolutionBackward0", [G("UnsqueezeBackward0"), ACC, ACC])]),
         ref=lambda x, w, b: conv_ref(x[None], w, b, 1, 1)[0]),
    case("conv_const_weight", lambda L, x, w: F(L).conv2d(x, w, padding=1), D(1, 2, 5, 5), K(D(3, 2, 3, 3)),
         name="ConvolutionBackward0", ref=lambda x, w: conv_ref(x, w, None, 1, 1)),
    case("conv_f32", lambda L, x, w, b: F(L).conv2d(x, w, b, stride=2, padding=1), R(2, 3, 7, 5), R(4, 3, 3, 3),
         R(4), name="ConvolutionBackward0", ref=lambda x, w, b: conv_ref(x, w, b, 2, 1), rtol=1e-5, atol=1e-5),
]

TIES = np.round(R(1, 2, 7, 6) * 1.5).astype(np.float32)  # small integers: many ties in every window
POOL = [
    case("maxpool_k3_s2_p1", lambda L, x: F(L).max_pool2d(x, 3, 2, 1), D(2, 2, 7, 6),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 3, 2, 1)),
    case("maxpool_k2_s2", lambda L, x: F(L).max_pool2d(x, 2, 2), D(1, 2, 6, 8),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 2, 2)),
    case("maxpool_k2_default_stride", lambda L, x: F(L).max_pool2d(x, kernel_size=2), D(1, 3, 5, 7),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 2)),
    case("maxpool_k3_s1_p1", lambda L, x: F(L).max_pool2d(x, 3, stride=1, padding=1), D(1, 2, 5, 4),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 3, 1, 1)),
    case("maxpool_ties_k3_s2_p1", lambda L, x: F(L).max_pool2d(x, 3, 2, 1), TIES,
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 3, 2, 1), fd=False),
    case("maxpool_ties_k2_s2", lambda L, x: F(L).max_pool2d(x, 2, 2), TIES,
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 2, 2), fd=False),
    case("maxpool_constant", lambda L, x: F(L).max_pool2d(x, 3, 2, 1), np.ones((1, 1, 5, 5), np.float32),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 3, 2, 1), fd=False),
    case("maxpool_unbatched", lambda L, x: F(L).max_pool2d(x, 3, 2, 1), D(2, 7, 6),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x[None], 3, 2, 1)[0]),
    case("maxpool_f32", lambda L, x: F(L).max_pool2d(x, 3, 2, 1), R(2, 2, 7, 6),
         name="MaxPool2DWithIndicesBackward0", ref=lambda x: maxpool_ref(x, 3, 2, 1)),
    case("adaptive_1", lambda L, x: F(L).adaptive_avg_pool2d(x, 1), D(2, 3, 7, 5), name="MeanBackward1",
         ref=lambda x: adaptive_ref(x, 1)),
    case("adaptive_1x1", lambda L, x: F(L).adaptive_avg_pool2d(x, (1, 1)), D(2, 3, 7, 5), name="MeanBackward1",
         ref=lambda x: adaptive_ref(x, 1)),
    case("adaptive_2x3", lambda L, x: F(L).adaptive_avg_pool2d(x, (2, 3)), D(2, 3, 7, 5),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: adaptive_ref(x, (2, 3))),
    case("adaptive_3x2", lambda L, x: F(L).adaptive_avg_pool2d(x, (3, 2)), D(1, 2, 7, 5),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: adaptive_ref(x, (3, 2))),
    case("adaptive_same_size", lambda L, x: F(L).adaptive_avg_pool2d(x, (7, 5)), D(1, 2, 7, 5),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: x),
    case("adaptive_upsample", lambda L, x: F(L).adaptive_avg_pool2d(x, (4, 3)), D(1, 2, 3, 2),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: adaptive_ref(x, (4, 3))),
    case("adaptive_unbatched", lambda L, x: F(L).adaptive_avg_pool2d(x, (2, 3)), D(3, 7, 5),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: adaptive_ref(x, (2, 3))),
    case("adaptive_f32", lambda L, x: F(L).adaptive_avg_pool2d(x, (2, 3)), R(2, 3, 7, 5),
         name="AdaptiveAvgPool2DBackward0", ref=lambda x: adaptive_ref(x, (2, 3))),
]


def _bn(training, affine=True):
    if affine:
        return lambda L, x, rm, rv, w, b: F(L).batch_norm(x, rm, rv, w, b, training=training, momentum=0.3)
    return lambda L, x, rm, rv: F(L).batch_norm(x, rm, rv, training=training)


def _stats(c):
    return K(D(c) * 0.1), K(D(c, pos=True))


BN = [
    case("bn_train_4d", _bn(True), D(4, 3, 5, 2), *_stats(3), D(3, pos=True), D(3), name="NativeBatchNormBackward0",
         graph=("NativeBatchNormBackward0", [ACC, ACC, ACC]), ref=lambda x, rm, rv, w, b: bn_ref(x, w, b)),
    case("bn_train_2d", _bn(True), D(8, 3), *_stats(3), D(3, pos=True), D(3), name="NativeBatchNormBackward0",
         ref=lambda x, rm, rv, w, b: bn_ref(x, w, b)),
    case("bn_train_3d", _bn(True), D(4, 2, 3), *_stats(2), D(2, pos=True), D(2), name="NativeBatchNormBackward0",
         ref=lambda x, rm, rv, w, b: bn_ref(x, w, b)),
    case("bn_train_no_affine", _bn(True, False), D(4, 3, 2, 2), *_stats(3), name="NativeBatchNormBackward0",
         ref=lambda x, rm, rv: bn_ref(x)),
    case("bn_train_f32", _bn(True), R(4, 3, 5, 2), K(R(3)), K(R(3, pos=True)), R(3, pos=True), R(3),
         name="NativeBatchNormBackward0", ref=lambda x, rm, rv, w, b: bn_ref(x, w, b), rtol=1e-4, atol=1e-5),
    case("bn_eval_4d", _bn(False), D(4, 3, 5, 2), *_stats(3), D(3, pos=True), D(3), name="NativeBatchNormBackward0",
         ref=lambda x, rm, rv, w, b: bn_ref(x, w, b, rm, rv)),
    case("bn_eval_no_affine", _bn(False, False), D(4, 3), *_stats(3), name="NativeBatchNormBackward0",
         ref=lambda x, rm, rv: bn_ref(x, None, None, rm, rv)),
]

T5 = K([3, 0, 1, 3, 2])
LOSS = [
    case("ce_mean", lambda L, x, t: F(L).cross_entropy(x, t), R(5, 4), T5, name="NllLossBackward0",
         graph=G("NllLossBackward0", "LogSoftmaxBackward0"), ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t)),
    case("ce_sum", lambda L, x, t: F(L).cross_entropy(x, t, reduction="sum"), R(5, 4), T5, name="NllLossBackward0",
         ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t, "sum")),
    case("ce_none", lambda L, x, t: F(L).cross_entropy(x, t, reduction="none"), R(5, 4), T5,
         name="NllLossBackward0", ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t, "none")),
    case("ce_ignore_index", lambda L, x, t: F(L).cross_entropy(x, t, ignore_index=3), R(5, 4), T5,
         name="NllLossBackward0", ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t, ignore_index=3)),
    case("ce_ignore_default", lambda L, x, t: F(L).cross_entropy(x, t, reduction="none"), R(4, 3),
         K([2, -100, 0, -100]), name="NllLossBackward0",
         ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t, "none")),
    case("ce_ignore_sum", lambda L, x, t: F(L).cross_entropy(x, t, ignore_index=0, reduction="sum"), R(5, 4), T5,
         name="NllLossBackward0", ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t, "sum", 0)),
    case("ce_weight", lambda L, x, t, w: F(L).cross_entropy(x, t, weight=w), R(5, 4), T5,
         K(np.array([1., 2., .5, 3.], np.float32)), name="NllLossBackward0",
         ref=lambda x, t, w: nll_ref(log_softmax_ref(x, 1), t, weight=w)),
    case("ce_1d", lambda L, x, t: F(L).cross_entropy(x, t), R(4), K(np.int64(2)), name="NllLossBackward0",
         ref=lambda x, t: -log_softmax_ref(x, 0)[2]),
    case("ce_probabilities", lambda L, x, p: F(L).cross_entropy(x, p), R(3, 4),
         K(softmax_ref(R(3, 4), 1).astype(np.float32)), name="DivBackward1",
         ref=lambda x, p: -(log_softmax_ref(x, 1) * p).sum() / 3),
    case("ce_f64", lambda L, x, t: F(L).cross_entropy(x, t), D(5, 4), T5, name="NllLossBackward0",
         ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t)),
    case("ce_all_ignored", lambda L, x, t: F(L).cross_entropy(x, t, ignore_index=1), R(2, 3), K([1, 1]),
         name="NllLossBackward0", ref=lambda x, t: np.float32(np.nan), fd=False),
    case("ce_4d", lambda L, x, t: F(L).cross_entropy(x, t), R(2, 3, 4, 5), K(_rng.integers(0, 3, (2, 4, 5))),
         name="NllLoss2DBackward0", graph=G("NllLoss2DBackward0", "LogSoftmaxBackward0"), ref=ce_nd_ref),
    case("ce_4d_sum_ignore", lambda L, x, t: F(L).cross_entropy(x, t, ignore_index=0, reduction="sum"),
         R(2, 3, 2, 3), K(_rng.integers(0, 3, (2, 2, 3))), name="NllLoss2DBackward0",
         ref=lambda x, t: ce_nd_ref(x, t, "sum", 0)),
    case("ce_3d", lambda L, x, t: F(L).cross_entropy(x, t), R(2, 3, 4), K(_rng.integers(0, 3, (2, 4))),
         name="NllLoss2DBackward0", graph=G("NllLoss2DBackward0", "ViewBackward0", "LogSoftmaxBackward0"),
         ref=ce_nd_ref),
    case("ce_3d_none", lambda L, x, t: F(L).cross_entropy(x, t, reduction="none"), R(2, 3, 4),
         K(_rng.integers(0, 3, (2, 4))), name="ViewBackward0",
         graph=G("ViewBackward0", "NllLoss2DBackward0", "ViewBackward0", "LogSoftmaxBackward0"),
         ref=lambda x, t: ce_nd_ref(x, t, "none")),
    case("ce_5d_none_ignore", lambda L, x, t: F(L).cross_entropy(x, t, reduction="none", ignore_index=1),
         R(2, 3, 2, 2, 2), K(_rng.integers(0, 3, (2, 2, 2, 2))), name="ViewBackward0",
         ref=lambda x, t: ce_nd_ref(x, t, "none", 1)),
    case("ce_4d_probabilities", lambda L, x, p: F(L).cross_entropy(x, p), R(2, 3, 2, 2),
         K(softmax_ref(R(2, 3, 2, 2), 1).astype(np.float32)), name="DivBackward1",
         ref=lambda x, p: -(log_softmax_ref(x, 1) * p).sum() / 8),
    case("nll_4d", lambda L, x, t: F(L).nll_loss(x, t, reduction="sum"), R(2, 3, 4, 5),
         K(_rng.integers(0, 3, (2, 4, 5))), name="NllLoss2DBackward0", graph=G("NllLoss2DBackward0"),
         ref=lambda x, t: nll_ref(np.moveaxis(x, 1, -1).reshape(-1, 3), t.reshape(-1), "sum")),
    case("nll_mean", lambda L, x, t: F(L).nll_loss(x.log_softmax(1), t), R(5, 4), T5, name="NllLossBackward0",
         ref=lambda x, t: nll_ref(log_softmax_ref(x, 1), t)),
    case("nll_raw", lambda L, x, t: F(L).nll_loss(x, t), R(5, 4), T5, name="NllLossBackward0",
         graph=G("NllLossBackward0"), ref=lambda x, t: nll_ref(x, t)),
    case("nll_sum", lambda L, x, t: F(L).nll_loss(x, t, reduction="sum"), R(5, 4), T5, name="NllLossBackward0",
         ref=lambda x, t: nll_ref(x, t, "sum")),
    case("nll_none_ignore", lambda L, x, t: F(L).nll_loss(x, t, ignore_index=3, reduction="none"), R(5, 4), T5,
         name="NllLossBackward0", ref=lambda x, t: nll_ref(x, t, "none", 3)),
    case("mse_mean", lambda L, x, y: F(L).mse_loss(x, y), R(3, 4), R(3, 4), name="MseLossBackward0",
         graph=("MseLossBackward0", [ACC, ACC]), ref=lambda x, y: ((x - y) ** 2).mean()),
    case("mse_sum", lambda L, x, y: F(L).mse_loss(x, y, reduction="sum"), R(3, 4), R(3, 4),
         name="MseLossBackward0", ref=lambda x, y: ((x - y) ** 2).sum()),
    case("mse_none", lambda L, x, y: F(L).mse_loss(x, y, reduction="none"), R(3, 4), R(3, 4),
         name="MseLossBackward0", ref=lambda x, y: (x - y) ** 2),
    case("mse_const_target", lambda L, x, y: F(L).mse_loss(x, y), R(3, 4), K(R(3, 4)), name="MseLossBackward0",
         ref=lambda x, y: ((x - y) ** 2).mean()),
]

CASES = BINARY + UNARY + REDUCTIONS + SHAPE + IDX + CAT + MATMUL + F_LINEAR + CONV + POOL + BN + LOSS


def _arrays(c):
    return [x.a if isinstance(x, K) else x for x in c.inputs]


@pytest.mark.parametrize("c", CASES)
def test_engine(c):
    """Without torch: the grad_fn graph written in the case, numpy's values and the gradients of
    central differences (float64)."""
    res = outputs(c.fn(gt, *make(gt, c.inputs)))
    out = res[0]
    assert (out.grad_fn.name() if out.grad_fn is not None else None) == c.name
    if c.graph is not None:
        assert graph(out) == c.graph
    if c.ref is not None:
        expected = c.ref(*_arrays(c))
        expected = expected if isinstance(expected, tuple) else (expected,)
        assert len(expected) == len(res)
        for r, e in zip(res, expected):
            close(r.detach().numpy(), e, c)
    if c.name is not None and c.fd:
        _finite_differences(c)


def _finite_differences(c, eps=1e-6):
    base = [(K(x.a.astype(np.float64)) if x.a.dtype.kind == "f" else x) if isinstance(x, K) else x.astype(np.float64)
            for x in c.inputs]
    ts = make(gt, base)
    out = outputs(c.fn(gt, *ts))[0]
    g = np.random.default_rng(7).standard_normal(out.shape).astype(out.detach().numpy().dtype)
    out.backward(gt.from_numpy(g))

    def loss(arrays):
        with gt.no_grad():
            o = outputs(c.fn(gt, *make(gt, arrays)))[0]
        return float((o.detach().numpy().astype(np.float64) * g).sum())

    for i, x in enumerate(base):
        if isinstance(x, K):
            continue
        numeric = np.zeros(x.size)
        for j in range(x.size):
            arrays = list(base)
            for sign in (1, -1):
                p = x.copy().reshape(-1)
                p[j] += sign * eps
                arrays[i] = p.reshape(x.shape)
                numeric[j] += sign * loss(arrays)
        numeric /= 2 * eps
        assert ts[i].grad is not None, f"no gradient for input {i}"
        np.testing.assert_allclose(ts[i].grad.numpy(), numeric.reshape(x.shape), rtol=1e-4, atol=1e-5,
                                   err_msg=f"input {i}")


@pytest.mark.parametrize("c", CASES)
def test_matches_torch(c, torch):
    """Values, dtypes, requires_grad, the whole backward graph and every input's gradient equal
    torch's; the names written in the case are torch's."""
    te, tt = make(gt, c.inputs), make(torch, c.inputs)
    re, rt = outputs(c.fn(gt, *te)), outputs(c.fn(torch, *tt))
    assert len(re) == len(rt)
    for e, t in zip(re, rt):
        assert tuple(e.shape) == tuple(t.shape)
        assert str(e.dtype) == str(t.dtype)
        close(e.detach().numpy(), t.detach().numpy(), c)
        assert e.requires_grad == t.requires_grad
        assert graph(e) == graph(t)
    assert (rt[0].grad_fn.name() if rt[0].grad_fn is not None else None) == c.name
    if c.graph is not None:
        assert graph(rt[0]) == c.graph
    if not rt[0].requires_grad:
        return
    g = np.random.default_rng(3).standard_normal(tuple(rt[0].shape)).astype(rt[0].detach().numpy().dtype)
    re[0].backward(gt.from_numpy(g.copy()))
    rt[0].backward(torch.from_numpy(g.copy()))
    for i, (a, b) in enumerate(zip(te, tt)):
        if not b.requires_grad:
            continue
        assert (a.grad is None) == (b.grad is None), f"input {i}"
        if b.grad is not None:
            assert str(a.grad.dtype) == str(b.grad.dtype), f"input {i}"
            close(a.grad.numpy(), b.grad.numpy(), c)


# -- type promotion, comparisons ---------------------------------------------------------------------
def _promotion_operands(L):
    return dict(i=L.tensor([1, 2, 3]), i32=L.tensor([1, 2, 3], dtype=L.int32), f=L.tensor([1., 2., 4.]),
                d=L.tensor([1., 2., 4.], dtype=L.float64), b=L.tensor([True, False, True]),
                d0=L.tensor(2.5, dtype=L.float64), i0=L.tensor(2), c=L.tensor([True, False, True]), L=L)


PROMOTION = [  # expression, PyTorch's dtype, values
    ("i + 2.5", "float32", [3.5, 4.5, 5.5]),
    ("2.5 + i", "float32", [3.5, 4.5, 5.5]),
    ("i + 2", "int64", [3, 4, 5]),
    ("i * True", "int64", [1, 2, 3]),
    ("b + b", "bool", [True, False, True]),
    ("b + 1", "int64", [2, 1, 2]),
    ("b * 2.5", "float32", [2.5, 0., 2.5]),
    ("i / i", "float32", [1., 1., 1.]),
    ("i / 2", "float32", [.5, 1., 1.5]),
    ("2 / i", "float32", [2., 1., 2 / 3]),
    ("i - 1.5", "float32", [-.5, .5, 1.5]),
    ("1.5 - i", "float32", [.5, -.5, -1.5]),
    ("f + d", "float64", [2., 4., 8.]),
    ("d * f", "float64", [1., 4., 16.]),
    ("f + i", "float32", [2., 4., 7.]),
    ("i * f", "float32", [1., 4., 12.]),
    ("d + i", "float64", [2., 4., 7.]),
    ("i32 + i", "int64", [2, 4, 6]),
    ("i32 + 1", "int32", [2, 3, 4]),
    ("i32 + 1.5", "float32", [2.5, 3.5, 4.5]),
    ("f + d0", "float32", [3.5, 4.5, 6.5]),
    ("i + d0", "float64", [3.5, 4.5, 5.5]),
    ("i32 + i0", "int32", [3, 4, 5]),
    ("i0 + 2.5", "float32", 4.5),
    ("i ** 2", "int64", [1, 4, 9]),
    ("i ** 2.0", "float32", [1., 4., 9.]),
    ("2 ** i", "int64", [2, 4, 8]),
    ("2.0 ** i", "float32", [2., 4., 8.]),
    ("-i", "int64", [-1, -2, -3]),
    ("abs(-i)", "int64", [1, 2, 3]),
    ("i.sum()", "int64", 6),
    ("b.sum()", "int64", 2),
    ("i.exp()", "float32", list(np.exp(np.float32([1, 2, 3])))),
    ("i.sqrt()", "float32", list(np.sqrt(np.float32([1, 2, 3])))),
    ("i.float().mean()", "float32", 2.),
    ("i.clamp(0, 2)", "int64", [1, 2, 2]),
    ("i.clamp(0.5, 2.5)", "float32", [1., 2., 2.5]),
    ("L.maximum(i, f)", "float32", [1., 2., 4.]),
    ("L.minimum(d, i)", "float64", [1., 2., 3.]),
    ("L.where(c, i, f)", "float32", [1., 2., 3.]),
    ("L.where(c, i, 1.5)", "float32", [1., 1.5, 3.]),
    ("L.where(c, 1.5, i)", "float32", [1.5, 2., 1.5]),
    ("L.where(c, f, d)", "float64", [1., 2., 4.]),
    ("L.where(c, 1, 0)", "int64", [1, 0, 1]),
    ("L.where(c, 1.0, 0.0)", "float32", [1., 0., 1.]),
    ("L.cat([i, f])", "float32", [1., 2., 3., 1., 2., 4.]),
    ("L.cat([f, d])", "float64", [1., 2., 4., 1., 2., 4.]),
    ("L.stack([i32, i])", "int64", [[1, 2, 3], [1, 2, 3]]),
    ("f.to(L.float64)", "float64", [1., 2., 4.]),
    ("d.float()", "float32", [1., 2., 4.]),
    ("np.float64(2.0) * f", "float32", [2., 4., 8.]),
    ("np.int64(3) - f", "float32", [2., 1., -1.]),
]


@pytest.mark.parametrize("expr,dtype,values", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_type_promotion(expr, dtype, values):
    out = eval(expr, {"np": np}, _promotion_operands(gt))
    assert isinstance(out, gt.Tensor) and str(out.dtype) == f"torch.{dtype}"
    np.testing.assert_allclose(out.numpy(), np.array(values), rtol=1e-6)


@pytest.mark.parametrize("expr,dtype,values", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_type_promotion_is_torchs(expr, dtype, values, torch):
    out = eval(expr, {"np": np}, _promotion_operands(torch))
    assert str(out.dtype) == f"torch.{dtype}"
    np.testing.assert_allclose(out.numpy(), np.array(values), rtol=1e-6)


def test_grad_dtypes_follow_inputs():
    """A float32 and a float64 input: the output is float64, each gradient has its input's dtype."""
    a = gt.tensor([1., 2.], requires_grad=True)
    b = gt.tensor([3., 4.], dtype=gt.float64, requires_grad=True)
    out = (a * b).sum()
    out.backward()
    assert out.dtype == gt.float64 and a.grad.dtype == gt.float32 and b.grad.dtype == gt.float64
    np.testing.assert_array_equal(a.grad.numpy(), [3., 4.])
    np.testing.assert_array_equal(b.grad.numpy(), [1., 2.])


_CX, _CY = R(3, 4), R(4)
_CX[0, :2] = _CY[:2]  # some equal elements
COMPARISONS = ["x > y", "x >= y", "x < y", "x <= y", "x == y", "x != y", "x > 0.5", "0.5 < x", "x == x",
               "x.gt(y)", "x.le(0)", "x.eq(y)", "x.ne(y)", "(x > 0) & (x < 1)", "(x < -1) | (x > 1)", "~(x > 0)",
               "x[:, :1] > y", "i == 2", "i >= 1.5", "i < x[0]"]


def _cmp_operands(L):
    return dict(x=L.from_numpy(_CX.copy()), y=L.from_numpy(_CY.copy()), i=L.tensor([1, 2, 3, 2]))


@pytest.mark.parametrize("expr", COMPARISONS)
def test_comparisons(expr):
    out = eval(expr, {}, _cmp_operands(gt))
    np_expr = expr
    for op in ("gt", "le", "eq", "ne"):
        np_expr = np_expr.replace(f".{op}(", f".__{op}__(")
    ref = eval(np_expr, {}, dict(x=_CX, y=_CY, i=np.array([1, 2, 3, 2])))
    assert out.dtype == gt.bool and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), ref)
    assert bool(out.all()) == bool(ref.all()) and bool(out.any()) == bool(ref.any())
    assert out.all().dtype == gt.bool and out.any().shape == ()
    np.testing.assert_array_equal(out.all(0).numpy(), ref.all(0))
    np.testing.assert_array_equal(out.any(-1, keepdim=True).numpy(), ref.any(-1, keepdims=True))


@pytest.mark.parametrize("expr", COMPARISONS)
def test_comparisons_match_torch(expr, torch):
    out, ref = eval(expr, {}, _cmp_operands(gt)), eval(expr, {}, _cmp_operands(torch))
    assert str(out.dtype) == str(ref.dtype) == "torch.bool"
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    for e, t in ((out.all(), ref.all()), (out.any(), ref.any()), (out.all(0), ref.all(0)),
                 (out.any(-1, keepdim=True), ref.any(-1, keepdim=True)), (gt.all(out), torch.all(ref))):
        assert str(e.dtype) == str(t.dtype) and e.shape == t.shape
        np.testing.assert_array_equal(e.numpy(), t.numpy())


def test_comparison_with_requires_grad_tensor_has_no_graph():
    x = gt.tensor([1., -2.], requires_grad=True)
    m = x > 0
    assert m.grad_fn is None and not m.requires_grad and m.tolist() == [True, False]


# -- graph leaves, namedtuples, accumulation ----------------------------------------------------------
def _leaf_checks(L):
    x = L.tensor([1., 2.], requires_grad=True)
    y = x * 2
    assert x.grad_fn is None and x.is_leaf and not y.is_leaf
    (acc, nr), = [e for e in y.grad_fn.next_functions if e[0] is not None]
    assert acc.name() == ACC and nr == 0 and acc.next_functions == ()
    assert acc.variable is x
    # One AccumulateGrad per leaf, however often it is used.
    assert (x + 1).grad_fn.next_functions[0][0] is acc


def test_leaves_accumulate_grad():
    _leaf_checks(gt)


def test_leaves_accumulate_grad_torch(torch):
    _leaf_checks(torch)


def test_max_dim_returns_values_and_indices():
    x = gt.tensor([[1., 5., 2.], [7., 0., 7.]], requires_grad=True)
    r = x.max(1)
    assert r.values.tolist() == [5., 7.] and r.indices.tolist() == [1, 0] and r.indices.dtype == gt.int64
    v, i = gt.min(x, dim=0, keepdim=True)
    assert v.tolist() == [[1., 0., 2.]] and i.tolist() == [[0, 1, 0]]
    r.values.sum().backward()
    assert x.grad.tolist() == [[0., 1., 0.], [1., 0., 0.]]  # the selected index only, first of a tie


def test_max_all_shares_ties():
    x = gt.tensor([[1., 7.], [7., 2.]], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [[0., .5], [.5, 0.]]


def test_repeated_indices_add_up():
    x = gt.tensor([[1., 2.], [3., 4.], [5., 6.]], requires_grad=True)
    i = gt.tensor([0, 2, 0, 0])
    (x[i] * gt.tensor([[1.], [10.], [100.], [1000.]])).sum().backward()
    assert x.grad.tolist() == [[1101., 1101.], [0., 0.], [10., 10.]]
    x.grad = None
    x[[1, 1], [0, 0]].sum().backward()
    assert x.grad.tolist() == [[0., 0.], [2., 0.], [0., 0.]]


def test_cross_entropy_all_targets_ignored():
    """The mean over no targets is 0/0 = nan (as in torch), but the gradient is zero, not nan."""
    x = gt.ones(2, 3, requires_grad=True)
    loss = F(gt).cross_entropy(x, gt.tensor([1, 1]), ignore_index=1)
    assert np.isnan(loss.item())
    loss.backward()
    assert x.grad.tolist() == [[0.] * 3] * 2
    x.grad = None
    loss = F(gt).cross_entropy(x, gt.tensor([1, 1]), ignore_index=1, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and x.grad.tolist() == [[0.] * 3] * 2


def test_sigmoid_large_inputs_no_warnings():
    import warnings
    x = gt.tensor([-1e4, -800., 800., 1e4], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.sigmoid()
        y.sum().backward()
    assert y.tolist() == [0., 0., 1., 1.] and x.grad.tolist() == [0., 0., 0., 0.]


# -- batch norm running statistics -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2), (4, 3, 6)])
def test_batch_norm_running_stats(shape):
    x = D(*shape)
    rm0, rv0 = D(3) * 0.1, D(3, pos=True)
    rm, rv = gt.from_numpy(rm0.copy()), gt.from_numpy(rv0.copy())
    F(gt).batch_norm(gt.from_numpy(x), rm, rv, training=True, momentum=0.3)
    axes = (0,) + tuple(range(2, x.ndim))
    exp_m = 0.7 * rm0 + 0.3 * x.mean(axes)
    exp_v = 0.7 * rv0 + 0.3 * x.var(axes, ddof=1)  # running var: the unbiased batch variance
    np.testing.assert_allclose(rm.numpy(), exp_m, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), exp_v, rtol=1e-12)
    # A second batch keeps averaging; eval mode leaves the stats alone and uses them.
    F(gt).batch_norm(gt.from_numpy(2 * x), rm, rv, training=True)
    exp_m, exp_v = 0.9 * exp_m + 0.1 * 2 * x.mean(axes), 0.9 * exp_v + 0.1 * 4 * x.var(axes, ddof=1)
    np.testing.assert_allclose(rm.numpy(), exp_m, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), exp_v, rtol=1e-12)
    out = F(gt).batch_norm(gt.from_numpy(x), rm, rv, training=False)
    np.testing.assert_allclose(rm.numpy(), exp_m, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), bn_ref(x, mean=exp_m, var=exp_v), rtol=1e-10)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_running_stats_match_torch(shape, dtype, torch):
    x, w, b = R(*shape, dtype=dtype), R(3, dtype=dtype, pos=True), R(3, dtype=dtype)
    rm0, rv0 = R(3, dtype=dtype) * 0.1, R(3, dtype=dtype, pos=True)
    stats, outs = [], []
    for L in (gt, torch):
        rm, rv = L.from_numpy(rm0.copy()), L.from_numpy(rv0.copy())
        for momentum in (0.1, 0.5):
            outs.append(F(L).batch_norm(L.from_numpy(x.copy()), rm, rv, L.from_numpy(w.copy()),
                                        L.from_numpy(b.copy()), training=True, momentum=momentum))
        outs.append(F(L).batch_norm(L.from_numpy(x.copy()), rm, rv, training=False))
        stats.append((rm.numpy().copy(), rv.numpy().copy()))
        assert str(rm.dtype) == str(rv.dtype) == f"torch.{np.dtype(dtype).name}"
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
    for e, t in zip(stats[0], stats[1]):
        np.testing.assert_allclose(e, t, **tol)
    for e, t in zip(outs[:3], outs[3:]):
        assert str(e.dtype) == str(t.dtype)
        np.testing.assert_allclose(e.numpy(), t.numpy(), **(dict(rtol=1e-4, atol=1e-5) if dtype == np.float32
                                                          else dict(rtol=1e-10)))


def test_batch_norm_without_running_stats():
    x = D(6, 2)
    out = F(gt).batch_norm(gt.from_numpy(x), None, None, training=True)
    np.testing.assert_allclose(out.numpy(), bn_ref(x), rtol=1e-10)


# -- dropout -----------------------------------------------------------------------------------------
def test_dropout_identity_cases():
    gt.manual_seed(0)
    x = gt.randn(4, 5, requires_grad=True)
    assert F(gt).dropout(x, p=0.0) is x
    assert F(gt).dropout(x, p=0.7, training=False) is x
    m = gt.nn.Dropout(0.7)
    m.eval()
    assert m(x) is x


def test_dropout_identity_cases_torch(torch):
    x = torch.randn(4, 5, requires_grad=True)
    assert torch.nn.functional.dropout(x, p=0.0) is x
    assert torch.nn.functional.dropout(x, p=0.7, training=False) is x


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [gt.float32, gt.float64])
def test_dropout_training_scales_kept_values(p, dtype):
    gt.manual_seed(0)
    x = (gt.rand(200, 100, dtype=dtype) + 0.5).requires_grad_()  # no zeros in x
    y = F(gt).dropout(x, p=p)
    assert y.dtype == dtype and y.grad_fn.name() == "MulBackward0"
    xv, yv = x.detach().numpy(), y.detach().numpy()
    kept = yv != 0
    np.testing.assert_allclose(yv[kept], xv[kept] / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.02
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p), rtol=1e-6)
    # Same seed, same mask.
    gt.manual_seed(0)
    x2 = gt.rand(200, 100, dtype=dtype) + 0.5
    np.testing.assert_array_equal(F(gt).dropout(x2, p=p).numpy() != 0, kept)


def test_dropout_p1_zeroes_everything():
    x = gt.randn(3, 4, requires_grad=True)
    y = F(gt).dropout(x, p=1.0)
    assert y.tolist() == [[0.] * 4] * 3
    y.sum().backward()
    assert x.grad.tolist() == [[0.] * 4] * 3


def test_dropout_training_matches_torch_statistics(torch):
    """The masks of the two libraries differ (different generators); the graph and the rule do not."""
    torch.manual_seed(0)
    gt.manual_seed(0)
    x = torch.rand(100, 100) + 0.5
    x.requires_grad_()
    y = torch.nn.functional.dropout(x, p=0.3)
    kept = y.detach().numpy() != 0
    np.testing.assert_allclose(y.detach().numpy()[kept], x.detach().numpy()[kept] / 0.7, rtol=1e-6)
    assert y.grad_fn.name() == "MulBackward0"
    e = F(gt).dropout(gt.rand(100, 100, requires_grad=True), p=0.3)
    assert graph(e) == graph(y)
