"""Parameters are named so that no two share a name (issue 19, item 2): a module the program calls
itself is named by the variable that holds it; ``trace.grad`` of a name two tensors share raises."""
import numpy as np
import pytest

import gradviz
import gradviz.engine as gt

torch = pytest.importorskip("torch")
nn = torch.nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc1(x)


def _param_names(trace):
    return sorted(t.name for t in trace.tensors.values() if t.kind == "parameter")


def test_modules_called_one_by_one_are_named_by_their_variables():
    torch.manual_seed(0)
    blocks = [Block() for _ in range(3)]
    head = nn.Linear(4, 1)
    lin1, lin2 = nn.Linear(4, 4), nn.Linear(4, 4)
    with gradviz.record() as rec:
        x = torch.randn(2, 4)
        for b in blocks:
            x = b(x)
        head(lin2(lin1(x))).sum().backward()
    names = _param_names(rec.trace)
    assert len(names) == len(set(names)) == 3 * 4 + 2 + 4
    assert {"blocks[2].fc1.weight", "blocks[0].fc2.bias", "head.weight", "lin1.weight", "lin2.bias"} <= set(names)
    np.testing.assert_allclose(rec.trace.grad("blocks[2].fc1.weight").array, blocks[2].fc1.weight.grad.numpy())
    np.testing.assert_allclose(rec.trace.grad("lin2.weight").array, lin2.weight.grad.numpy())
    scopes = {n.scope for n in rec.trace.nodes.values()}
    assert {"blocks[1].fc1", "lin1", "head"} <= scopes


def test_a_model_keeps_pytorchs_names_and_a_second_of_its_kind_is_told_apart():
    torch.manual_seed(0)
    model = Net()
    other = Net()
    part = Block()
    with gradviz.record() as rec:
        x = torch.randn(2, 4)
        (model(x) + other(x)).sum().backward()
        holder = {"block": part}
        holder["block"](x).sum().backward()
    names = _param_names(rec.trace)
    assert {"fc1.weight", "fc1.bias", "other.fc1.weight", "other.fc1.bias",
            "holder['block'].fc1.weight"} <= set(names)
    assert len(names) == len(set(names))


def test_a_part_of_a_model_called_directly_is_named_under_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Linear(4, 1))
    with gradviz.record() as rec:
        x = torch.randn(2, 4)
        model[1](model[0](x)).sum().backward()
    assert {"model.0.fc1.weight", "model.1.weight"} <= set(_param_names(rec.trace))


def test_grad_of_a_name_two_tensors_share_raises_with_both():
    a = gradviz.name(gt.tensor([1.0, 2.0], requires_grad=True), "w")
    b = gradviz.name(gt.tensor([3.0, 4.0], requires_grad=True), "w")
    with gradviz.record() as rec:
        (a * b).sum().backward()
    with pytest.raises(KeyError, match=r"'w' names 2 tensors.*t\d+, t\d+"):
        rec.trace.grad("w")
    keys = [f"t{t.id}" for t in rec.trace.tensors.values() if t.name == "w"]
    np.testing.assert_array_equal(rec.trace.grad(keys[0]).array, [3.0, 4.0])


def test_a_leaf_made_anew_each_iteration_is_found_by_its_name_in_each_pass():
    with gradviz.record() as rec:
        for k in range(2):
            z = torch.full((2,), float(k + 1), requires_grad=True)
            (z * z).sum().backward()
    np.testing.assert_array_equal(rec.trace.grad("z", 0).array, [2.0, 2.0])
    np.testing.assert_array_equal(rec.trace.grad("z").array, [4.0, 4.0])
