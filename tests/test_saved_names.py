"""``grad_fn._saved_<name>`` as PyTorch names and fills them (``torch==2.13.0``): what each node's
backward reads, so that an inspector shows the same thing for either library."""
import numpy as np
import pytest

import gradviz.engine as engine

torch = pytest.importorskip("torch")

A = np.array([[2.0, 3.0], [1.5, -1.0]], np.float32)
B = np.array([[0.5, -2.0], [4.0, 1.0]], np.float32)

CASES = {
    "3*a**3": (lambda t, a, b: 3 * a ** 3, ["self", "other"]),
    "a**3": (lambda t, a, b: a ** 3, ["self", "exponent"]),
    "a*b": (lambda t, a, b: a * b, ["self", "other"]),
    "a*b.detach()": (lambda t, a, b: a * b.detach(), ["self", "other"]),
    "a/b": (lambda t, a, b: a / b, ["self", "other"]),
    "mm": (lambda t, a, b: a.mm(b), ["self", "mat2"]),
    "linear": (lambda t, a, b: t.nn.functional.linear(a, b, b[0]), ["mat1", "mat2"]),
    "exp": (lambda t, a, b: a.exp(), ["result"]),
    "tanh": (lambda t, a, b: a.tanh(), ["result"]),
    "relu": (lambda t, a, b: a.relu(), ["result"]),
    "log": (lambda t, a, b: a.abs().log(), ["self"]),
    "softmax": (lambda t, a, b: a.softmax(1), ["result"]),
    "log_softmax": (lambda t, a, b: a.log_softmax(1), ["result"]),
    "max": (lambda t, a, b: a.max(), ["self", "result"]),
    "max dim": (lambda t, a, b: a.max(1).values, ["indices"]),
    "clamp": (lambda t, a, b: a.clamp(0, 1), ["self"]),
    "gelu": (lambda t, a, b: t.nn.functional.gelu(a), ["self"]),
    "masked_fill": (lambda t, a, b: a.masked_fill(t.tensor([True, False]), 0.0), ["mask"]),
}


def _value(v):
    if v is None or isinstance(v, (int, float)):
        return v
    return np.asarray(v.detach().numpy(), np.float64).tolist()


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_tensors_named_as_pytorch(name):
    fn, names = CASES[name]
    got = {}
    for lib in (torch, engine):
        a, b = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
        node = fn(lib, a, b).grad_fn
        got[lib.__name__] = [_value(getattr(node, f"_saved_{n}")) for n in names]
    ours, theirs = got["gradviz.engine"], got["torch"]
    assert [v is None for v in ours] == [v is None for v in theirs]
    for o, t in zip(ours, theirs):
        if t is not None:
            np.testing.assert_allclose(o, t, rtol=1e-6)


def test_saved_tensors_are_freed_with_the_graph():
    a = engine.tensor(A, requires_grad=True)
    y = a.exp()
    node = y.grad_fn
    assert node._saved_result.tolist() == y.tolist()
    y.sum().backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        node._saved_result  # noqa: B018
    with pytest.raises(AttributeError):
        node._saved_nothing  # noqa: B018
