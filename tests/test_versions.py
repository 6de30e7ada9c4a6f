"""Version counters against PyTorch (``torch==2.13.0``), case by case: every in-place write bumps
``t._version`` (under ``no_grad`` too, not through ``.data``), views share their base's counter, a
node checks the versions of what it saved, with PyTorch's message, and optimiser steps between
iterations never raise."""
import pytest

import gradviz.engine as engine

torch = pytest.importorskip("torch")


def _plain(*values):
    return [v.tolist() if hasattr(v, "tolist") else v for v in values]


def case_saved_operand_setitem(torch, out):
    x = torch.ones(2, requires_grad=True)
    a = torch.tensor([1.0, 2.0])
    y = (x * a).sum()
    a[0] = 100.0
    y.backward()


def case_saved_operand_add_(torch, out):
    x = torch.ones(2, requires_grad=True)
    a = torch.tensor([1.0, 2.0])
    y = (x * a).sum()
    a.add_(1)
    y.backward()


def case_saved_output_under_no_grad(torch, out):
    x = torch.ones(2, requires_grad=True)
    y = x.exp()
    with torch.no_grad():
        y.add_(1)
    y.sum().backward()


def case_operand_not_saved(torch, out):
    w = torch.ones(2, requires_grad=True)
    a = w * 1
    b = torch.tensor([3.0, 4.0])
    y = (a * b).sum()
    with torch.no_grad():
        a.add_(1)
    y.backward()
    out.append(_plain(w.grad, a._version))


def case_view_write_bumps_base(torch, out):
    x = torch.ones(2, requires_grad=True)
    a = torch.tensor([[1.0, 2.0]])
    v = a[0]
    y = (x * a).sum()
    v.mul_(2)
    out.append(_plain(a._version, v._version))
    y.backward()


def case_data_write_not_counted(torch, out):
    x = torch.ones(2, requires_grad=True)
    a = torch.tensor([1.0, 2.0])
    y = (x * a).sum()
    a.data.add_(1)
    out.append(_plain(a._version))
    y.backward()
    out.append(_plain(x.grad))


def case_every_in_place_write_counts(torch, out):
    a = torch.tensor([1.0, 2.0])
    a.detach().add_(1)
    out.append(_plain(a._version))
    a.data = torch.zeros(2)
    out.append(_plain(a._version))
    a.zero_()
    a.fill_(1)
    a.copy_(torch.ones(2))
    a += 1
    a -= 1
    a *= 2
    a /= 2
    a.clamp_(0, 1)
    a.uniform_()
    a.normal_()
    a[0] = 1
    a[:1] = 2
    out.append(_plain(a._version))


def case_views_share_the_counter(torch, out):
    out.append(_plain(torch.tensor([1.0, 2.0]).detach()._version))
    a = torch.ones(2, 3)
    b = a.view(6)
    b.add_(1)
    out.append(_plain(a._version, b._version, a[0]._version, a.t()._version, a.unsqueeze(0)._version))
    d = a.reshape(3, 2)
    e = a.clone()
    out.append(_plain(d._version, e._version))
    with torch.no_grad():
        a.add_(1)
    out.append(_plain(a._version, d._version, b._version, a.transpose(0, 1)._version, a[:, 1:]._version,
                      a.expand(2, 2, 3)._version, a.permute(1, 0)._version, a[[0, 1]]._version))


def case_sgd_between_iterations(torch, out):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        m(torch.ones(4, 2)).sum().backward()
        opt.step()
    out.append(_plain(m[0].weight._version))


def case_adam_between_iterations(torch, out):
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        m(torch.ones(3, 2)).sum().backward()
        opt.step()
    out.append(_plain(m.weight._version))


def case_step_before_backward_with_weights_saved(torch, out):
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = m(torch.ones(1, 2)).sum()
    opt.step()  # no gradients yet: nothing changes
    m(torch.ones(1, 2)).sum().backward()
    loss = m(torch.ones(1, 2)).sum()
    opt.step()
    loss.backward()


def case_step_before_backward_first_layer(torch, out):
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.ones(1, 2)).sum().backward()
    loss = m(torch.ones(1, 2)).sum()
    opt.step()  # the weight is not saved (the input needs no gradient): no error, as in PyTorch
    loss.backward()


def case_relu_output(torch, out):
    x = torch.ones(2, 2, requires_grad=True)
    z = (x * 2).relu()
    with torch.no_grad():
        z.add_(1)
    z.sum().backward()


def case_float64(torch, out):
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = torch.ones(2, requires_grad=True, dtype=torch.float64)
    y = (x * a).sum()
    a.add_(1)
    y.backward()


def case_mm_of_a_transposed_view(torch, out):
    x = torch.ones(2, 2, requires_grad=True)
    a = torch.ones(2, 2)
    y = x.mm(a.t())
    a.add_(1)
    y.sum().backward()


def case_non_leaf_input(torch, out):
    w = torch.ones(2, requires_grad=True)
    a = w * 2
    b = torch.ones(2, requires_grad=True)
    y = (a * b).sum()
    with torch.no_grad():
        a.add_(1)
    y.backward()


def case_saved_view_of_a_leaf(torch, out):
    w = torch.ones(2, 3, requires_grad=True)
    v = w.t()
    y = (v * v).sum()
    with torch.no_grad():
        w.add_(1)
    out.append(_plain(w._version, v._version))
    y.backward()


def case_log_softmax_output(torch, out):
    x = torch.ones(2, 2, requires_grad=True)
    y = torch.log_softmax(x, 1)
    with torch.no_grad():
        y.add_(1)
    y.sum().backward()


def case_softmax_output(torch, out):
    x = torch.ones(2, 3, requires_grad=True) * 1
    y = x.softmax(1)
    with torch.no_grad():
        y.mul_(2)
    y.sum().backward()


def case_conv_input(torch, out):
    x = torch.ones(1, 1, 4, 4)
    y = torch.nn.Conv2d(1, 1, 3)(x).sum()
    x.add_(1)
    y.backward()


def case_batch_norm_input(torch, out):
    x = torch.ones(2, 2, 4, 4, requires_grad=True) * 1
    y = torch.nn.BatchNorm2d(2)(x).sum()
    with torch.no_grad():
        x.add_(1)
    y.backward()


def case_mse_target(torch, out):
    x = torch.ones(3, requires_grad=True)
    t = torch.zeros(3)
    y = torch.nn.functional.mse_loss(x, t)
    t.add_(1)
    y.backward()


def case_divisor(torch, out):
    x = torch.ones(3, requires_grad=True)
    t = torch.ones(3)
    y = (x / t).sum()
    t.add_(1)
    y.backward()


def case_dividend(torch, out):
    x = torch.ones(3)
    t = torch.ones(3, requires_grad=True)
    y = (x / t).sum()
    x.add_(1)
    y.backward()


def case_pow_base(torch, out):
    x = torch.ones(3, requires_grad=True) * 1
    y = (x**2).sum()
    with torch.no_grad():
        x.add_(1)
    y.backward()


def case_sigmoid_output(torch, out):
    x = torch.ones(3, requires_grad=True)
    y = x.sigmoid()
    z = y.sum()
    with torch.no_grad():
        y.mul_(2)
    z.backward()


def case_write_through_another_view(torch, out):
    x = torch.ones(3, requires_grad=True)
    a = torch.ones(3, 3)
    y = (x * a[1]).sum()
    a[2] = 5
    y.backward()


def case_batched_matmul(torch, out):
    x = torch.ones(2, 3, 4, requires_grad=True)
    a = torch.ones(2, 4, 5)
    y = (x @ a).sum()
    a.add_(1)
    y.backward()


def case_retain_graph_second_backward(torch, out):
    x = torch.ones(2, requires_grad=True)
    a = torch.tensor([1.0, 2.0])
    y = (x * a).sum()
    y.backward(retain_graph=True)
    a.mul_(3)
    y.backward()


CASES = {name[len("case_"):]: fn for name, fn in list(globals().items()) if name.startswith("case_")}


def _outcome(module, case):
    out = []
    try:
        case(module, out)
    except Exception as ex:  # noqa: BLE001 - compared with PyTorch's
        return out, type(ex).__name__, str(ex)
    return out, None, None


@pytest.mark.parametrize("name", sorted(CASES))
def test_versions_as_pytorch(name):
    assert _outcome(engine, CASES[name]) == _outcome(torch, CASES[name])


def test_the_issue_case_raises_instead_of_a_wrong_gradient():
    x = engine.ones(2, requires_grad=True)
    a = engine.tensor([1.0, 2.0])
    y = (x * a).sum()
    a[0] = 100.0
    with pytest.raises(RuntimeError, match=r"is at version 1; expected version 0 instead\. Hint: enable anomaly"):
        y.backward()
    assert x.grad is None
