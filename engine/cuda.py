"""``torch.cuda`` as on a CPU-only PyTorch: nothing is available, seeding is a no-op, anything that
needs a GPU raises PyTorch's message."""
from ._device import NO_CUDA

__all__ = ["is_available", "device_count", "manual_seed", "manual_seed_all", "is_initialized", "current_device",
           "synchronize", "empty_cache"]


def is_available():
    return False


def device_count():
    return 0


def is_initialized():
    return False


def manual_seed(seed):
    """Seeds nothing: there is no GPU (PyTorch's is silent too)."""


manual_seed_all = manual_seed


def empty_cache():
    """Frees nothing: there is no GPU cache."""


def current_device():
    raise AssertionError(NO_CUDA)


def synchronize(device=None):
    raise AssertionError(NO_CUDA)
