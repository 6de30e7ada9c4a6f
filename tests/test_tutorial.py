"""The acceptance test: PyTorch's "60 Minute Blitz" part 2 (autograd), line for line, with
``import gradviz.engine as torch`` and ``torchvision.models`` replaced by ``gradviz.engine.models``."""
import numpy as np
import pytest

import gradviz.engine as torch
from gradviz.engine import nn, optim
from gradviz.engine.models import ResNet18_Weights, resnet18


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet_training_step():
    model = resnet18(weights=None)
    data = torch.rand(1, 3, 64, 64)
    labels = torch.rand(1, 1000)

    prediction = model(data)  # forward pass
    assert prediction.shape == (1, 1000)
    assert prediction.grad_fn.name() == "AddmmBackward0"

    loss = (prediction - labels).sum()
    loss.backward()  # backward pass
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    # d loss / d fc.bias is one for every class.
    assert np.array_equal(model.fc.bias.grad.numpy(), np.ones(1000, np.float32))

    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    optim_ = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    optim_.step()  # gradient descent
    for n, p in model.named_parameters():
        # First SGD step with momentum: the buffer is the gradient itself.
        np.testing.assert_allclose(p.detach().numpy(), before[n] - 1e-2 * p.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_pretrained_weights_cannot_be_downloaded():
    with pytest.raises(RuntimeError, match="cannot download pretrained weights"):
        resnet18(weights=ResNet18_Weights.DEFAULT)


def test_differentiation_in_autograd():
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    Q = 3*a**3 - b**2
    external_grad = torch.tensor([1., 1.])
    Q.backward(gradient=external_grad)

    # Check if collected gradients are correct
    print(9*a**2 == a.grad)
    print(-2*b == b.grad)
    assert (9*a**2 == a.grad).all() and (-2*b == b.grad).all()
    assert a.grad.tolist() == [36.0, 81.0]
    assert b.grad.tolist() == [-12.0, -8.0]
    assert repr(9*a**2 == a.grad) == "tensor([True, True])"


def test_exclusion_from_the_dag():
    x = torch.rand(5, 5)
    y = torch.rand(5, 5)
    z = torch.rand((5, 5), requires_grad=True)

    a = x + y
    print(f"Does `a` require gradients?: {a.requires_grad}")
    b = x + z
    print(f"Does `b` require gradients?: {b.requires_grad}")
    assert a.requires_grad is False
    assert b.requires_grad is True


def test_frozen_parameters_finetuning():
    model = resnet18(weights=None)

    # Freeze all the parameters in the network
    for param in model.parameters():
        param.requires_grad = False

    model.fc = nn.Linear(512, 10)

    # Optimize only the classifier
    optimizer = optim.SGD(model.fc.parameters(), lr=1e-2, momentum=0.9)

    frozen_before = model.conv1.weight.detach().numpy().copy()
    fc_before = model.fc.weight.detach().numpy().copy()
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.sum().backward()
    optimizer.step()
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["fc.weight", "fc.bias"]
    assert np.array_equal(model.conv1.weight.detach().numpy(), frozen_before)
    assert not np.array_equal(model.fc.weight.detach().numpy(), fc_before)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 512 * 10 + 10


def test_no_grad():
    x = torch.rand(3, requires_grad=True)
    with torch.no_grad():
        y = x * 2
    assert y.requires_grad is False and y.grad_fn is None
    assert (x * 2).requires_grad is True


def test_tutorial_file_runs_unchanged(capsys):
    """The tutorial's own code as one script, with only the imports changed."""
    from pathlib import Path
    import runpy
    src = Path(__file__).with_name("tutorial_autograd.py")
    ns = runpy.run_path(str(src), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == [
        "tensor([True, True])", "tensor([True, True])",
        "Does `a` require gradients?: False", "Does `b` require gradients?: True"]
    assert ns["model"].fc.weight.requires_grad and not ns["model"].conv1.weight.requires_grad
