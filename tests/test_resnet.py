"""``gradviz.engine.models.resnet18`` against torchvision's resnet18 (written in plain torch in
``torch_resnet.py``): architecture, parameter names and shapes, forward outputs and gradients with the
same weights, weight files, and the pretrained-weights error."""
import numpy as np
import pytest

import gradviz.engine as gt
from gradviz.engine import nn
from gradviz.engine.models import ResNet18_Weights, load_weights, resnet18, save_weights

RESNET18_PARAMETERS = 11_689_512


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models(torch):
    """A plain-torch resnet18 and the engine's, with torch's weights copied across."""
    from torch_resnet import copy_torch_state, torch_resnet18
    torch.manual_seed(0)
    gt.manual_seed(0)
    tm, em = torch_resnet18(), resnet18()
    copy_torch_state(tm, em)
    return tm, em


def test_parameter_count():
    gt.manual_seed(0)
    model = resnet18()
    assert sum(p.numel() for p in model.parameters()) == RESNET18_PARAMETERS
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == RESNET18_PARAMETERS
    assert len(list(model.parameters())) == 62


def test_same_names_shapes_and_structure_as_torch(torch, models):
    tm, em = models
    assert sum(p.numel() for p in tm.parameters()) == RESNET18_PARAMETERS
    assert [(n, tuple(p.shape)) for n, p in em.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert [(n, tuple(b.shape)) for n, b in em.named_buffers()] == \
        [(n, tuple(b.shape)) for n, b in tm.named_buffers()]
    assert [n for n, _ in em.named_modules()] == [n for n, _ in tm.named_modules()]
    assert [type(m).__name__ for m in em.modules()][1:] == [type(m).__name__ for m in tm.modules()][1:]
    assert list(em.state_dict()) == list(tm.state_dict())
    assert repr(em) == repr(tm)


def _compare_grads(tm, em, rtol=1e-4):
    tp, ep = dict(tm.named_parameters()), dict(em.named_parameters())
    assert list(ep) == list(tp)
    for name, pe in ep.items():
        ge, gtorch = pe.grad.numpy(), tp[name].grad.numpy()
        scale = np.abs(gtorch).max()
        assert scale > 0, name
        err = np.abs(ge - gtorch).max()
        assert err <= rtol * scale, f"{name}: max error {err:.3g}, grad scale {scale:.3g}"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_and_backward_match_torch(torch, models, mode):
    tm, em = models
    tm.zero_grad()
    em.zero_grad()
    getattr(tm, mode)()
    getattr(em, mode)()
    running_before = {n: b.numpy().copy() for n, b in em.named_buffers()}
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    target = np.array([3, 917])
    out_t = tm(torch.from_numpy(x))
    out_e = em(gt.from_numpy(x))
    assert tuple(out_e.shape) == (2, 1000)
    np.testing.assert_allclose(out_e.detach().numpy(), out_t.detach().numpy(), rtol=1e-4, atol=2e-5)
    loss_t = torch.nn.CrossEntropyLoss()(out_t, torch.from_numpy(target))
    loss_e = nn.CrossEntropyLoss()(out_e, gt.from_numpy(target))
    assert abs(loss_e.item() - loss_t.item()) < 1e-5 * abs(loss_t.item())
    loss_t.backward()
    loss_e.backward()
    _compare_grads(tm, em)
    # BatchNorm buffers: updated like torch's in train mode, untouched in eval mode
    tb = dict(tm.named_buffers())
    for n, b in em.named_buffers():
        np.testing.assert_allclose(b.numpy(), tb[n].numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
        if mode == "eval":
            np.testing.assert_array_equal(b.numpy(), running_before[n], err_msg=n)
    if mode == "train":
        assert int(em.bn1.num_batches_tracked) == int(tm.bn1.num_batches_tracked) >= 1


@pytest.mark.parametrize("weights", [ResNet18_Weights.DEFAULT, ResNet18_Weights.IMAGENET1K_V1, "IMAGENET1K_V1"])
def test_named_pretrained_weights_cannot_be_downloaded(weights):
    with pytest.raises(RuntimeError) as info:
        resnet18(weights=weights)
    message = str(info.value)
    assert "cannot download" in message
    assert "weights=PATH" in message and "save_weights" in message and "numpy.savez" in message


def test_pretrained_true_raises_the_same_error():
    with pytest.raises(RuntimeError, match="cannot download pretrained weights"):
        resnet18(pretrained=True)


def test_missing_weights_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such weights file") as info:
        resnet18(weights=tmp_path / "nothing.npz")
    assert "cannot download" not in str(info.value) and "nothing.npz" in str(info.value)
    with pytest.raises(TypeError, match="weights should be None"):
        resnet18(weights=3)


def test_save_weights_round_trip(tmp_path):
    gt.manual_seed(0)
    model = resnet18(num_classes=10)
    model.train()
    model(gt.randn(2, 3, 32, 32))  # moves the running statistics away from their initial values
    path = tmp_path / "r18.npz"
    save_weights(model, path)
    loaded = load_weights(path)
    assert list(loaded) == list(model.state_dict())
    assert loaded["bn1.num_batches_tracked"].dtype == gt.int64
    again = resnet18(weights=path, num_classes=10)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)
    x = gt.randn(2, 3, 32, 32)
    model.eval()
    again.eval()
    np.testing.assert_array_equal(model(x).detach().numpy(), again(x).detach().numpy())
    # str paths work as well as Path objects
    assert np.array_equal(resnet18(weights=str(path), num_classes=10).fc.weight.detach().numpy(),
                          model.fc.weight.detach().numpy())


def test_weights_file_from_torch_state_dict(torch, models, tmp_path):
    tm, _ = models
    path = tmp_path / "from_torch.npz"
    np.savez(path, **{k: v.detach().numpy() for k, v in tm.state_dict().items()})
    em = resnet18(weights=path)
    tm.eval()
    em.eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 48, 48)).astype(np.float32)
    np.testing.assert_allclose(em(gt.from_numpy(x)).detach().numpy(), tm(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=2e-5)


def test_weights_file_for_other_num_classes_is_rejected(tmp_path):
    gt.manual_seed(0)
    path = tmp_path / "ten.npz"
    save_weights(resnet18(num_classes=10), path)
    with pytest.raises(RuntimeError) as info:
        resnet18(weights=path)
    assert str(info.value).startswith("Error(s) in loading state_dict for ResNet:\n\tsize mismatch for fc.weight: "
                                      "copying a param with shape torch.Size([10, 512]) from checkpoint, the shape "
                                      "in current model is torch.Size([1000, 512]).")


def test_num_classes():
    gt.manual_seed(0)
    model = resnet18(num_classes=10)
    assert tuple(model.fc.weight.shape) == (10, 512) and tuple(model.fc.bias.shape) == (10,)
    assert sum(p.numel() for p in model.parameters()) == RESNET18_PARAMETERS - 1000 * 513 + 10 * 513
    model.eval()
    assert tuple(model(gt.randn(3, 3, 32, 32)).shape) == (3, 10)


def test_torchvision_keyword_arguments():
    gt.manual_seed(0)
    model = resnet18(zero_init_residual=True)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8
    assert all(not b.bn2.weight.detach().numpy().any() for b in blocks)
    assert all(b.bn1.weight.detach().numpy().all() for b in blocks)
    with pytest.raises(ValueError, match="BasicBlock only supports groups=1 and base_width=64"):
        resnet18(groups=2)
    with pytest.raises(NotImplementedError, match="Dilation > 1 not supported in BasicBlock"):
        resnet18(replace_stride_with_dilation=[False, False, True])
    with pytest.raises(TypeError):
        resnet18(no_such_argument=1)
    calls = []

    def norm_layer(n):
        calls.append(n)
        return nn.BatchNorm2d(n, momentum=0.5)

    model = resnet18(norm_layer=norm_layer)
    assert len(calls) == 20 and model.layer3[0].downsample[1].momentum == 0.5
