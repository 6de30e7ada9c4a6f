"""gradviz leaves nothing in the user's objects (issue 19, item 1): its ids and names are kept
beside the tensors, so pickle, deepcopy, torch.save/torch.load(weights_only=True), state_dict,
torch.compile and code that reads ``__dict__`` see what they would without gradviz."""
import copy
import os
import pickle
import subprocess
import sys

import pytest

import gradviz
import gradviz.engine as gt
from gradviz import events as ev


def test_an_engine_recording_leaves_the_engines_tensors_and_nodes_as_they_were():
    w = gt.tensor([1.0, 2.0], requires_grad=True)
    x = gt.tensor([3.0, 4.0])
    gradviz.name(x, "input")
    with gradviz.record() as rec:
        y = (w * x).sum()
        y.backward()
        assert w.__dict__ == {} and x.__dict__ == {} and y.__dict__ == {}
        assert not any(k.startswith("_gv") for k in vars(y.grad_fn))
    assert "input" in {t.name for t in rec.trace.tensors.values()}  # gradviz.name still names
    assert w.__dict__ == {} and x.__dict__ == {}


def test_engine_ids_do_not_follow_a_deep_copy():
    w = gt.tensor([1.0, 2.0], requires_grad=True)
    with gradviz.record() as rec:
        (w * 2).sum().backward()
        w2 = copy.deepcopy(w)
        (w2 * 3).sum().backward()
    leaves = [e for e in rec.trace.events if isinstance(e, ev.TensorDescribed) and e.kind == "leaf"]
    assert len({e.id for e in leaves}) == 2  # two tensors, two ids: the copy is not w


torch = pytest.importorskip("torch")


def _model():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _train_step(model, opt=None):
    x = torch.randn(3, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    if opt is not None:
        opt.step()
    return x, loss


def test_a_torch_recording_leaves_nothing_in_tensors_during_it_or_after():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    named = gradviz.name(torch.ones(2, requires_grad=True), "named")
    with gradviz.record() as rec:
        x, loss = _train_step(model, opt)
        (named * 2).sum().backward()
        for t in [*model.parameters(), x, loss, named, *(p.grad for p in model.parameters())]:
            assert t.__dict__ == {}, t.__dict__
    assert "named" in {t.name for t in rec.trace.tensors.values()}
    assert all(p.__dict__ == {} for p in model.parameters())


def test_pickle_and_deepcopy_while_recording_give_what_they_give_without_gradviz():
    model = _model()
    with gradviz.record():
        _train_step(model)
        p = model[0].weight
        again = pickle.loads(pickle.dumps(p))
        assert again.__dict__ == {} and torch.equal(again, p)
        twin = copy.deepcopy(model)
        assert all(q.__dict__ == {} for q in twin.parameters())


def test_a_deep_copied_model_is_not_taken_for_the_original():
    student = _model()
    with gradviz.record() as rec:
        _train_step(student)
        teacher = copy.deepcopy(student)  # an EMA teacher, say
        _train_step(teacher)
    params = [e for e in rec.trace.events if isinstance(e, ev.TensorDescribed) and e.kind == "parameter"]
    assert len({e.id for e in params}) == 8  # 4 parameters each, each its own id


_LOAD = r'''
import sys, torch
folder = sys.argv[1]
p = torch.load(folder + "/param.pt", weights_only=True)
sd = torch.load(folder + "/state.pt", weights_only=True)
with torch.serialization.safe_globals([torch.nn.Sequential, torch.nn.Linear, torch.nn.ReLU]):
    m = torch.load(folder + "/model.pt", weights_only=True)
whole = torch.load(folder + "/model.pt", weights_only=False)
for t in [p, *sd.values(), *m.parameters(), *whole.parameters()]:
    assert t.__dict__ == {}, t.__dict__
assert torch.equal(p, m[0].weight) and torch.equal(sd["2.bias"], whole[2].bias)
print("loaded")
'''


def test_a_checkpoint_saved_while_recording_loads_in_plain_pytorch_with_weights_only(tmp_path):
    # The word_language_model example's end: torch.save(model) while recording, torch.load later.
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradviz.record():
        _train_step(model, opt)
        torch.save(model, tmp_path / "model.pt")
        torch.save(model[0].weight, tmp_path / "param.pt")
        torch.save(model.state_dict(), tmp_path / "state.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "loaded", r.stderr
    # and in this process, once the recording is over
    assert torch.load(tmp_path / "param.pt", weights_only=True).__dict__ == {}


def test_state_dict_and_load_state_dict_while_recording():
    model, other = _model(), _model()
    with gradviz.record():
        _train_step(model)
        sd = model.state_dict()
        assert all(t.__dict__ == {} for t in sd.values())
        other.load_state_dict(sd)
        _train_step(other)
    assert all(p.__dict__ == {} for p in other.parameters())


def test_torch_compile_sees_the_tensors_as_without_gradviz():
    pytest.importorskip("torch._dynamo")
    import torch._dynamo

    def run(recording):
        torch._dynamo.reset()
        model = _model()
        compiled = torch.compile(model, backend="eager")
        x = torch.randn(3, 4)
        with (gradviz.record() if recording else _nothing()):
            for _ in range(3):
                compiled(x).sum().backward()
        return [sorted(p.__dict__) for p in model.parameters()], compiled(x).detach()

    plain, recorded = run(False), run(True)
    assert recorded[0] == plain[0]
    assert torch.equal(recorded[1], plain[1])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
