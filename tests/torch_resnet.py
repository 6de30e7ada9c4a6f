"""The oracle for ``gradviz.engine.models.resnet18``: torchvision's resnet18 in plain torch, which is
the ``torch-resnet`` demo's (torchvision cannot be imported here), and a weight copier. Import it
only after ``pytest.importorskip("torch")``."""


def torch_resnet18(num_classes=1000):
    from gradviz.demos.torch_resnet import resnet18
    return resnet18(num_classes)


def copy_torch_state(torch_module, engine_module):
    """Copy a torch module's parameters and buffers into the engine's module, through numpy."""
    import gradviz.engine as gt
    state = {k: gt.from_numpy(v.detach().cpu().numpy().copy()) for k, v in torch_module.state_dict().items()}
    return engine_module.load_state_dict(state)
