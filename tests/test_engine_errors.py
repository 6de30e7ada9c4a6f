"""Errors that were numpy's, now PyTorch's (``torch==2.13.0``): ragged nested lists, negative sizes,
in-place writes whose broadcast changes the shape, allocation failures; float16 is refused clearly."""
import pytest

import gradviz.engine as engine

torch = pytest.importorskip("torch")


def _iadd(t):
    a = t.zeros(3)
    a += t.ones(2, 3)


CASES = {
    "ragged": lambda t: t.tensor([[1, 2], [3]]),
    "ragged floats": lambda t: t.tensor([[1.0], [3, 4]]),
    "ragged deeper": lambda t: t.tensor([[[1, 2], [3, 4]], [[1, 2], [3]]]),
    "ragged tuple": lambda t: t.tensor(([1.0, 2.0], [3.0])),
    "zeros negative": lambda t: t.zeros(2, -3),
    "zeros negative tuple": lambda t: t.zeros((-1, 2)),
    "ones negative": lambda t: t.ones(-2),
    "empty negative": lambda t: t.empty(-1),
    "rand negative": lambda t: t.rand(-1),
    "randn negative": lambda t: t.randn(-2),
    "full negative": lambda t: t.full((2, -1), 1.0),
    "randint negative": lambda t: t.randint(0, 3, (-1,)),
    "+= broadcast": _iadd,
    "mul_ broadcast": lambda t: t.zeros(3, 1).mul_(t.ones(1, 4)),
    "add_ mismatch": lambda t: t.zeros(3).add_(t.ones(4)),
    "div_ mismatch": lambda t: t.zeros(3).div_(t.ones(4)),
    "copy_ broadcast": lambda t: t.zeros(3).copy_(t.ones(2, 3)),
    "allocation": lambda t: t.zeros(10**7, 10**7),
    "allocation empty": lambda t: t.empty(2**40, 2**20),
    "allocation randn": lambda t: t.randn(10**7, 10**7),
}


def _outcome(module, case):
    try:
        case(module)
    except Exception as ex:  # noqa: BLE001 - compared with PyTorch's
        return type(ex).__name__, str(ex)
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_errors_as_pytorch(name):
    expected = _outcome(torch, CASES[name])
    assert expected is not None
    assert _outcome(engine, CASES[name]) == expected


def test_float16_is_refused_clearly():
    for make in (lambda: engine.ones(2, dtype=engine.float16), lambda: engine.ones(2).half(),
                 lambda: engine.ones(2).to(engine.half), lambda: engine.nn.Linear(2, 2).to(engine.float16),
                 lambda: engine.zeros(2, dtype=engine.bfloat16)):
        with pytest.raises(TypeError, match="does not support torch.(float16|bfloat16)"):
            make()
    assert repr(engine.float16) == repr(torch.float16) and engine.half is engine.float16
