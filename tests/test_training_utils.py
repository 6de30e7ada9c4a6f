"""A training script's utilities against PyTorch (``torch==2.13.0``): gradient clipping, AdamW,
StepLR and CosineAnnealingLR, ``torch.save``/``torch.load`` of state dicts in a safe format,
``zero_grad(set_to_none=True)``, ``train()``/``eval()`` and ``manual_seed``."""
import pickle

import numpy as np
import pytest

import gradviz.engine as engine

torch = pytest.importorskip("torch")


def _pair(seed=0):
    """The same small model in both libraries, with gradients from the same batch."""
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    ours = engine.nn.Sequential(engine.nn.Linear(4, 8), engine.nn.Tanh(), engine.nn.Linear(8, 3))
    ours.load_state_dict({k: engine.tensor(v.numpy()) for k, v in ref.state_dict().items()})
    x = np.random.default_rng(seed).standard_normal((5, 4)).astype(np.float32) * 3
    return ref, ours, x


def _backward(ref, ours, x):
    (ref(torch.tensor(x)) ** 2).sum().backward()
    (ours(engine.tensor(x)) ** 2).sum().backward()


def _close(ref_params, our_params, rtol=1e-5, atol=1e-6):
    for r, o in zip(ref_params, our_params):
        np.testing.assert_allclose(o.detach().numpy(), r.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (1e3, 2.0), (0.5, float("inf")), (2.0, 1.0)])
def test_clip_grad_norm_as_pytorch(max_norm, norm_type):
    ref, ours, x = _pair()
    _backward(ref, ours, x)
    total_ref = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm, norm_type=norm_type)
    total = engine.nn.utils.clip_grad_norm_(ours.parameters(), max_norm, norm_type=norm_type)
    assert total.shape == () and total.dtype == engine.float32
    np.testing.assert_allclose(total.item(), total_ref.item(), rtol=1e-5)
    _close([p.grad for p in ref.parameters()], [p.grad for p in ours.parameters()])


def test_clip_grad_norm_of_nothing_and_of_a_tensor():
    assert engine.nn.utils.clip_grad_norm_([engine.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    p = engine.tensor([3.0, 4.0], requires_grad=True)
    p.grad = engine.tensor([3.0, 4.0])
    assert engine.nn.utils.clip_grad_norm_(p, 1.0).item() == 5.0
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)


def test_clip_grad_value_as_pytorch():
    ref, ours, x = _pair()
    _backward(ref, ours, x)
    torch.nn.utils.clip_grad_value_(ref.parameters(), 0.5)
    engine.nn.utils.clip_grad_value_(ours.parameters(), 0.5)
    _close([p.grad for p in ref.parameters()], [p.grad for p in ours.parameters()])


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1, "amsgrad": True}])
def test_adamw_as_pytorch(kwargs):
    ref, ours, x = _pair()
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, **kwargs)
    opt = engine.optim.AdamW(ours.parameters(), lr=1e-2, **kwargs)
    assert opt.param_groups[0]["weight_decay"] == opt_ref.param_groups[0]["weight_decay"]
    for _ in range(5):
        opt_ref.zero_grad()
        opt.zero_grad()
        _backward(ref, ours, x)
        opt_ref.step()
        opt.step()
    _close(ref.parameters(), ours.parameters())


def _schedule(lib, make, steps=25, lr=0.1):
    opt = lib.optim.SGD([lib.zeros(2, requires_grad=True)], lr=lr)
    sched = make(lib, opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, sched.get_last_lr(), sched.last_epoch


SCHEDULES = {
    "StepLR": lambda lib, opt: lib.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    "CosineAnnealingLR": lambda lib, opt: lib.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
    "CosineAnnealingLR eta_min": lambda lib, opt: lib.optim.lr_scheduler.CosineAnnealingLR(opt, 7, eta_min=1e-3),
    "LambdaLR": lambda lib, opt: lib.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 5)),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedulers_as_pytorch(name):
    # Bit for bit: the same formulas evaluated in the same order.
    assert _schedule(engine, SCHEDULES[name]) == _schedule(torch, SCHEDULES[name])


def test_scheduler_state_dict_round_trip():
    opt = engine.optim.SGD([engine.zeros(2, requires_grad=True)], lr=0.1)
    sched = engine.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["last_epoch"] == 3 and "optimizer" not in state


def test_save_load_round_trip(tmp_path):
    _, ours, x = _pair()
    opt = engine.optim.Adam(ours.parameters(), lr=1e-2)
    (ours(engine.tensor(x)) ** 2).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    engine.save({"model": ours.state_dict(), "optim": opt.state_dict(), "epoch": 3, "note": "best",
                 "dtype": engine.float64, "loss": float("nan")}, path)
    back = engine.load(path, map_location="cpu", weights_only=True)
    assert back["epoch"] == 3 and back["note"] == "best" and back["dtype"] is engine.float64
    assert np.isnan(back["loss"])
    assert list(back["model"]) == list(ours.state_dict())
    fresh = engine.nn.Sequential(engine.nn.Linear(4, 8), engine.nn.Tanh(), engine.nn.Linear(8, 3))
    fresh.load_state_dict(back["model"])
    _close(ours.parameters(), fresh.parameters(), rtol=0, atol=0)
    opt2 = engine.optim.Adam(fresh.parameters(), lr=1e-2)
    opt2.load_state_dict(back["optim"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    state, state2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert state.keys() == state2.keys()
    np.testing.assert_array_equal(state[0]["exp_avg"].numpy(), state2[0]["exp_avg"].numpy())


def test_save_load_to_a_file_object_and_a_bare_tensor(tmp_path):
    import io
    buf = io.BytesIO()
    engine.save(engine.arange(6).reshape(2, 3), buf)
    buf.seek(0)
    t = engine.load(buf)
    assert t.dtype == engine.int64 and t.tolist() == [[0, 1, 2], [3, 4, 5]]


class _Boom:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_a_pickle_is_refused_and_nothing_runs(tmp_path):
    boom = _Boom()
    boom.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": boom}))
    with pytest.raises(ValueError, match="is not a file written by gradviz.engine.save"):
        engine.load(path)
    assert not (tmp_path / "pwned").exists()


def test_a_pytorch_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / "torch.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="PyTorch checkpoint"):
        engine.load(path)
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a file written by gradviz.engine.save"):
        engine.load(tmp_path / "text.txt")
    with pytest.raises(FileNotFoundError):
        engine.load(tmp_path / "missing.pt")


def test_save_refuses_arbitrary_objects(tmp_path):
    with pytest.raises(TypeError, match="stores tensors, numbers"):
        engine.save({"f": lambda: 1}, tmp_path / "x.pt")


def test_zero_grad_sets_to_none_by_default():
    _, ours, x = _pair()
    opt = engine.optim.SGD(ours.parameters(), lr=0.1)
    (ours(engine.tensor(x)) ** 2).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())
    (ours(engine.tensor(x)) ** 2).sum().backward()
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())
    (ours(engine.tensor(x)) ** 2).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in ours.parameters())


def test_train_eval_dropout_and_batch_norm_as_pytorch():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    ours = engine.nn.Sequential(engine.nn.Linear(3, 4), engine.nn.BatchNorm1d(4), engine.nn.Dropout(0.5))
    ours.load_state_dict({k: engine.tensor(v.numpy()) for k, v in ref.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    ref(torch.tensor(x))  # a training step moves the running stats
    ours(engine.tensor(x))
    ref.eval()
    ours.eval()
    assert not ours.training and not ours[2].training
    np.testing.assert_allclose(ours(engine.tensor(x)).detach().numpy(), ref(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    ours.train()
    out = ours(engine.tensor(x)).detach().numpy()
    assert ours[2].training and (out == 0).any()


def test_manual_seed_reproduces_a_run():
    def run():
        engine.manual_seed(123)
        model = engine.nn.Sequential(engine.nn.Linear(3, 5), engine.nn.Dropout(0.3), engine.nn.Linear(5, 1))
        return model(engine.randn(4, 3)).detach().numpy()
    np.testing.assert_array_equal(run(), run())
