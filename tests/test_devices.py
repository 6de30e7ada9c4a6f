"""The device lines of a typical training script, against PyTorch (``torch==2.13.0``, CPU-only):
``torch.device``, ``torch.cuda``, ``.to(device)``, ``.cpu()``, ``.cuda()``, ``tensor.device`` and
factories' ``device=`` with PyTorch's own errors."""
import pytest

import gradviz.engine as engine

torch = pytest.importorskip("torch")

CASES = {
    "device cpu": lambda t: repr(t.device("cpu")),
    "device cuda": lambda t: repr(t.device("cuda")),
    "device cuda:0": lambda t: repr(t.device("cuda:0")),
    "device cuda, 1": lambda t: (repr(t.device("cuda", 1)), str(t.device("cuda", 1))),
    "device parts": lambda t: (str(t.device("cpu")), t.device("cpu").type, t.device("cpu").index,
                               t.device("cuda:1").index),
    "device equality": lambda t: (t.device("cpu") == t.device("cpu"), t.device("cpu") == "cpu",
                                  t.device("cuda:0") == t.device("cuda"), len({t.device("cpu"), t.device("cpu")})),
    "device bogus": lambda t: t.device("bogus"),
    "device bad index": lambda t: t.device("cuda:x"),
    "device int": lambda t: t.zeros(2, device=0),
    "the usual line": lambda t: repr(t.device("cuda" if t.cuda.is_available() else "cpu")),
    "cuda": lambda t: (t.cuda.is_available(), t.cuda.device_count(), t.cuda.manual_seed(0),
                       t.cuda.manual_seed_all(0)),
    "cuda current_device": lambda t: t.cuda.current_device(),
    "tensor.device": lambda t: (repr(t.ones(2).device), t.ones(2).is_cuda, t.ones(2).is_cpu),
    "to cpu": lambda t: t.ones(2).to("cpu").tolist(),
    "to device cpu": lambda t: t.ones(2).to(t.device("cpu")).tolist(),
    "to device and dtype": lambda t: repr(t.ones(2).to("cpu", t.float64).dtype),
    "to device= dtype=": lambda t: repr(t.ones(2).to(device="cpu", dtype=t.float64).dtype),
    "cpu()": lambda t: t.ones(2).cpu().tolist(),
    "to cuda": lambda t: t.ones(2).to("cuda"),
    "to device cuda": lambda t: t.ones(2).to(t.device("cuda")),
    "to mps": lambda t: t.ones(2).to("mps"),
    ".cuda()": lambda t: t.ones(2).cuda(),
    "zeros cuda": lambda t: t.zeros(2, device="cuda"),
    "zeros bogus": lambda t: t.zeros(2, device="bogus"),
    "tensor cuda": lambda t: t.tensor([1.0], device="cuda"),
    "randn device cuda": lambda t: t.randn(2, device=t.device("cuda")),
    "factories on cpu": lambda t: [f(device="cpu").shape == (2,) for f in (
        lambda **k: t.zeros(2, **k), lambda **k: t.ones(2, **k), lambda **k: t.rand(2, **k),
        lambda **k: t.randn(2, **k), lambda **k: t.arange(2, **k), lambda **k: t.full((2,), 1.0, **k),
        lambda **k: t.tensor([1, 2], **k), lambda **k: t.empty(2, **k), lambda **k: t.linspace(0, 1, 2, **k),
        lambda **k: t.zeros_like(t.ones(2), **k), lambda **k: t.randint(0, 3, (2,), **k),
        lambda **k: t.randperm(2, **k))],
    "model.to cpu": lambda t: t.nn.Linear(2, 2).to(t.device("cpu")).weight.shape == (2, 2),
    "model.to cuda": lambda t: t.nn.Linear(2, 2).to("cuda"),
    "model.cuda()": lambda t: t.nn.Linear(2, 2).cuda(),
}


def _outcome(module, case):
    try:
        return case(module), None
    except Exception as ex:  # noqa: BLE001 - compared with PyTorch's
        return type(ex).__name__, str(ex)


@pytest.mark.parametrize("name", sorted(CASES))
def test_devices_as_pytorch(name):
    assert _outcome(engine, CASES[name]) == _outcome(torch, CASES[name])


def test_meta_is_refused_clearly():
    # PyTorch has a meta device (tensors without data); the engine says it has none.
    with pytest.raises(NotImplementedError, match="no 'meta' device"):
        engine.zeros(2, device="meta")
    with pytest.raises(NotImplementedError, match="no 'meta' device"):
        engine.ones(2).to("meta")


@pytest.mark.parametrize("make", [
    lambda t, d: t.nn.Linear(2, 2, device=d), lambda t, d: t.nn.Conv2d(1, 1, 3, device=d),
    lambda t, d: t.nn.BatchNorm2d(2, device=d), lambda t, d: t.nn.Embedding(3, 2, device=d),
    lambda t, d: t.nn.LayerNorm(2, device=d), lambda t, d: t.nn.LSTMCell(2, 2, device=d)])
def test_layers_take_a_device(make):
    assert _outcome(engine, lambda t: type(make(t, "cpu")).__name__) == \
        _outcome(torch, lambda t: type(make(t, "cpu")).__name__)
    assert _outcome(engine, lambda t: make(t, "cuda")) == _outcome(torch, lambda t: make(t, "cuda"))
