"""Built-in demos: small programs on gradviz's engine, each runnable as ``python -m
gradviz.demos.NAME``, recordable with ``gradviz record --demo NAME`` and run by the tests."""
import importlib

DEMOS = {
    "seed": ("seed", "the autograd tutorial's Q = 3*a**3 - b**2, backward with an external gradient"),
    "mlp": ("mlp", "a few training iterations of a small MLP on synthetic data"),
    "resnet": ("resnet", "the tutorial's resnet18: frozen layers, a new fc, one training step"),
    "nan": ("nan", "a distance at zero: sqrt's backward makes Inf, then NaN, in the backward pass"),
    "control-flow": ("control_flow", "a loop whose graph differs from one iteration to the next"),
    "wrong-backward": ("wrong_backward", "hand-written Functions, one with a subtly wrong backward (gradviz check)"),
    "gpt": ("gpt", "a character-level GPT in plain PyTorch style: ten steps of AdamW, clipping, a cosine schedule"),
    "torch-mlp": ("torch_mlp", "the small MLP in plain PyTorch (needs torch)"),
    "torch-wrong-backward": ("torch_wrong_backward", "wrong-backward with torch.autograd.Functions (needs torch)"),
    "torch-resnet": ("torch_resnet", "the tutorial's resnet18 in plain PyTorch: frozen layers, a new fc (needs torch)"),
}
NEEDS_TORCH = {"torch-mlp", "torch-resnet", "torch-wrong-backward"}


def describe():
    return [(name, text) for name, (_, text) in DEMOS.items()]


def available(name):
    """Whether a demo can run here (the torch demos need torch installed)."""
    if name in NEEDS_TORCH:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    return name in DEMOS


def demo_module(name):
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; the demos are: {', '.join(DEMOS)}")
    return importlib.import_module(f"{__name__}.{DEMOS[name][0]}")


def demo_path(name):
    return demo_module(name).__file__


def run(name):
    return demo_module(name).main()
