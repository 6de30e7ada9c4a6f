"""The engine's own finite-difference checker (``gradviz.engine.autograd.gradcheck``, float64) over
every op, small shapes; and proof that the checker fails on a wrong backward."""
import numpy as np
import pytest

import gradviz.engine as gt
from gradviz.engine.autograd import Function, gradcheck
from gradviz.engine.autograd.gradcheck import GradcheckError

F = gt.nn.functional
_rng = np.random.default_rng(99)


def X(*shape, pos=False):
    """A float64 leaf that requires grad; ``pos``: values in [0.5, 2)."""
    a = _rng.uniform(0.5, 2.0, shape) if pos else _rng.standard_normal(shape)
    return np.asarray(a, np.float64)


def C(a, dtype=None):
    """A constant (no grad)."""
    return ("const", np.asarray(a, dtype))


def case(id, fn, *inputs):
    return pytest.param(fn, inputs, id=id)


CASES = [
    # arithmetic, with broadcasting in every binary op
    case("add_broadcast", lambda a, b: a + b, X(3, 1, 2), X(2, 1)),
    case("add_alpha", lambda a, b: a.add(b, alpha=-2.0), X(2, 3), X(3)),
    case("add_scalar", lambda a: 2.5 + a, X(2, 3)),
    case("sub_broadcast", lambda a, b: a - b, X(4, 1), X(3)),
    case("rsub", lambda a: 1.5 - a, X(2, 3)),
    case("mul_broadcast", lambda a, b: a * b, X(2, 3, 1), X(3, 2)),
    case("mul_self", lambda a: a * a, X(2, 3)),
    case("div_broadcast", lambda a, b: a / b, X(3, 1, 2), X(2, 1, pos=True)),
    case("rdiv", lambda a: 2 / a, X(2, 3, pos=True)),
    case("pow_scalar", lambda a: a ** 3, X(2, 3)),
    case("pow_fraction", lambda a: a ** -1.5, X(2, 3, pos=True)),
    case("pow_tensor_broadcast", lambda a, b: a ** b, X(3, 1, pos=True), X(2)),
    case("rpow", lambda a: 2.0 ** a, X(2, 3)),
    case("neg", lambda a: -a, X(2, 3)),
    case("maximum_broadcast", lambda a, b: gt.maximum(a, b), X(3, 1, 2), X(2, 1)),
    case("minimum_broadcast", lambda a, b: gt.minimum(a, b), X(3, 2), X(2)),
    case("where_broadcast", lambda c, a, b: gt.where(c, a, b), C(X(3, 1) > 0), X(1, 4), X(3, 4)),
    # unary
    case("exp", lambda a: a.exp(), X(2, 3)),
    case("log", lambda a: a.log(), X(2, 3, pos=True)),
    case("sqrt", lambda a: a.sqrt(), X(2, 3, pos=True)),
    case("abs", lambda a: a.abs(), X(2, 3)),
    case("tanh", lambda a: a.tanh(), X(2, 3)),
    case("sigmoid", lambda a: a.sigmoid(), X(2, 3) * 5),
    case("relu", lambda a: a.relu(), X(2, 3)),
    case("clamp", lambda a: a.clamp(-0.5, 0.5), X(3, 4)),
    case("sin_cos", lambda a: a.sin() * a.cos(), X(2, 3)),
    case("reciprocal", lambda a: a.reciprocal(), X(2, 3, pos=True)),
    # reductions and softmax
    case("sum", lambda a: a.sum(), X(2, 3)),
    case("sum_dims_keepdim", lambda a: a.sum((0, 2), keepdim=True), X(2, 3, 2)),
    case("mean", lambda a: a.mean(), X(2, 3)),
    case("mean_dim", lambda a: a.mean(-1), X(2, 3, 2)),
    case("max_all", lambda a: a.max(), X(3, 4)),
    case("max_dim", lambda a: a.max(1).values, X(3, 4)),
    case("min_dim_keepdim", lambda a: a.min(0, keepdim=True)[0], X(3, 4)),
    case("amax", lambda a: a.amax((0, 2)), X(2, 3, 2)),
    case("norm", lambda a: a.norm(), X(2, 3)),
    case("norm_dim", lambda a: a.norm(dim=1), X(2, 3)),
    case("softmax", lambda a: a.softmax(1), X(2, 4)),
    case("log_softmax", lambda a: a.log_softmax(0), X(3, 2)),
    # shape and indexing
    case("reshape", lambda a: a.reshape(3, 2) * 1, X(2, 3)),
    case("reshape_copy", lambda a: a.t().reshape(-1), X(2, 3)),
    case("reshape_alias", lambda a: a.permute(2, 0, 1).reshape(2, 6), X(2, 3, 2)),
    case("view", lambda a: a.view(-1), X(2, 3)),
    case("flatten", lambda a: a.flatten(1), X(2, 3, 2)),
    case("transpose_permute", lambda a: a.transpose(0, 2).permute(1, 0, 2), X(2, 3, 2)),
    case("t", lambda a: a.t(), X(2, 3)),
    case("unsqueeze_squeeze", lambda a: a.unsqueeze(1).squeeze(), X(2, 3)),
    case("expand", lambda a: a.expand(2, 3, 4), X(3, 1)),
    case("index_int_slice", lambda a: a[1, ::2], X(3, 4)),
    case("index_neg", lambda a: a[-1, -2:], X(3, 4)),
    case("index_tensor_repeated", lambda a, i: a[i], X(3, 2), C([0, 2, 0, 0])),
    case("index_mask", lambda a, m: a[m], X(3, 4), C(X(3, 4) > 0)),
    case("index_mixed", lambda a, i: a[1:, i], X(3, 4), C([3, 0, 3])),
    case("index_none_ellipsis", lambda a: a[None, ..., 1], X(2, 3)),
    case("cat", lambda a, b: gt.cat([a, b, a], 1), X(2, 1), X(2, 3)),
    case("stack", lambda a, b: gt.stack([a, b], -1), X(2, 3), X(2, 3)),
    # matrix products
    case("dot", lambda a, b: a @ b, X(4), X(4)),
    case("mv", lambda a, b: a @ b, X(3, 4), X(4)),
    case("vec_mat", lambda a, b: a @ b, X(3), X(3, 2)),
    case("mm", lambda a, b: a @ b, X(3, 4), X(4, 2)),
    case("matmul_3d_2d", lambda a, b: a @ b, X(2, 3, 4), X(4, 2)),
    case("matmul_3d_1d", lambda a, b: a @ b, X(2, 3, 4), X(4)),
    case("matmul_1d_3d", lambda a, b: a @ b, X(3), X(2, 3, 2)),
    case("matmul_2d_3d", lambda a, b: a @ b, X(2, 3), X(2, 3, 2)),
    case("matmul_batched", lambda a, b: a @ b, X(2, 2, 3), X(2, 3, 2)),
    case("matmul_batched_broadcast_4d", lambda a, b: a @ b, X(2, 1, 2, 3), X(3, 3, 2)),
    case("matmul_batch_of_one", lambda a, b: a @ b, X(1, 2, 3), X(2, 3, 2)),
    case("bmm", lambda a, b: a.bmm(b), X(2, 2, 3), X(2, 3, 2)),
    case("linear_2d", lambda x, w, b: F.linear(x, w, b), X(3, 4), X(2, 4), X(2)),
    case("linear_3d", lambda x, w, b: F.linear(x, w, b), X(2, 2, 3), X(2, 3), X(2)),
    # nn
    case("conv2d_s2_p1_bias", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), X(1, 2, 5, 4), X(2, 2, 3, 3),
         X(2)),
    case("conv2d_s1_p0", lambda x, w: F.conv2d(x, w), X(2, 1, 4, 3), X(2, 1, 2, 2)),
    case("conv2d_k7_p3_s2", lambda x, w: F.conv2d(x, w, stride=2, padding=3), X(1, 1, 5, 5), X(1, 1, 7, 7)),
    case("conv2d_k1", lambda x, w, b: F.conv2d(x, w, b), X(1, 3, 3, 2), X(2, 3, 1, 1), X(2)),
    case("max_pool_overlapping", lambda x: F.max_pool2d(x, 3, 2, 1), X(1, 2, 5, 6)),
    case("max_pool_k2_s2", lambda x: F.max_pool2d(x, 2, 2), X(2, 1, 4, 4)),
    case("adaptive_avg_pool_2x3_from_7x5", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), X(1, 1, 7, 5)),
    case("adaptive_avg_pool_1", lambda x: F.adaptive_avg_pool2d(x, 1), X(1, 2, 3, 3)),
    case("batch_norm_train_4d", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), X(3, 2, 2, 2),
         X(2, pos=True), X(2)),
    case("batch_norm_train_2d", lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, training=True), X(5, 3),
         X(3, pos=True), X(3), C(np.zeros(3)), C(np.ones(3))),
    case("batch_norm_eval", lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b), X(4, 2, 2), X(2, pos=True),
         X(2), C(X(2)), C(X(2, pos=True))),
    case("cross_entropy_mean", lambda x, t: F.cross_entropy(x, t), X(4, 3), C([2, 0, 1, 2])),
    case("cross_entropy_sum", lambda x, t: F.cross_entropy(x, t, reduction="sum"), X(4, 3), C([2, 0, 1, 2])),
    case("cross_entropy_none_ignore", lambda x, t: F.cross_entropy(x, t, ignore_index=2, reduction="none"),
         X(4, 3), C([2, 0, 1, 2])),
    case("cross_entropy_weight", lambda x, t, w: F.cross_entropy(x, t, weight=w), X(4, 3), C([2, 0, 1, 2]),
         C([1., 2., .5])),
    case("cross_entropy_probabilities", lambda x, p: F.cross_entropy(x, p), X(2, 3), C(np.full((2, 3), 1 / 3))),
    case("cross_entropy_4d", lambda x, t: F.cross_entropy(x, t), X(2, 3, 2, 2),
         C([[[0, 2], [1, 1]], [[2, 2], [0, 1]]])),
    case("cross_entropy_3d_none", lambda x, t: F.cross_entropy(x, t, reduction="none"), X(2, 3, 2),
         C([[0, 2], [1, 1]])),
    case("nll_loss", lambda x, t: F.nll_loss(x, t), X(4, 3), C([2, 0, 1, 1])),
    case("mse_loss", lambda x, y: F.mse_loss(x, y), X(3, 2), X(3, 2)),
    case("mlp", lambda x, w1, w2, t: F.cross_entropy(F.linear(F.linear(x, w1).relu(), w2), t), X(3, 4), X(5, 4),
         X(3, 5), C([0, 2, 1])),
]


def _tensors(inputs):
    out = []
    for x in inputs:
        if isinstance(x, tuple):
            out.append(gt.from_numpy(x[1].copy()))
        else:
            out.append(gt.from_numpy(x.copy()).requires_grad_())
    return out


@pytest.mark.parametrize("fn,inputs", CASES)
def test_gradcheck(fn, inputs):
    assert gradcheck(fn, _tensors(inputs)) is True


# -- the checker itself ------------------------------------------------------------------------------
class Square(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, grad):
        (x,) = self.saved_tensors
        return (2 * x * grad,)


class SquareMissingFactor(Square):
    def backward(self, grad):
        (x,) = self.saved_tensors
        return (x * grad,)


class SquareOneBadElement(Square):
    def backward(self, grad):
        (x,) = self.saved_tensors
        g = 2 * x * grad
        g.reshape(-1)[-1] += 0.01
        return (g,)


class MulSwapped(Function):
    """Each operand receives the gradient meant for the other."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad):
        a, b = self.saved_tensors
        return grad * a, grad * b


def test_gradcheck_accepts_a_correct_function():
    x = gt.from_numpy(X(2, 3)).requires_grad_()
    assert gradcheck(Square.apply, (x,)) is True


@pytest.mark.parametrize("bad", [SquareMissingFactor, SquareOneBadElement])
def test_gradcheck_fails_on_a_wrong_backward(bad):
    x = gt.from_numpy(X(2, 3)).requires_grad_()
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0 with respect to input 0"):
        gradcheck(bad.apply, (x,))
    assert gradcheck(bad.apply, (x,), raise_exception=False) is False


def test_gradcheck_names_the_wrong_input():
    a, b = gt.from_numpy(X(3)).requires_grad_(), gt.from_numpy(X(3)).requires_grad_()
    with pytest.raises(GradcheckError, match="with respect to input 0"):
        gradcheck(MulSwapped.apply, (a, b))
    # With the first operand constant only the second is checked, and it is wrong too.
    c = gt.from_numpy(X(3))
    with pytest.raises(GradcheckError, match="with respect to input 0"):
        gradcheck(MulSwapped.apply, (c, b))


def test_gradcheck_needs_float64():
    x = gt.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(Square.apply, (x,))
