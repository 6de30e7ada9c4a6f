"""``torch.device`` and the checks behind every ``device=`` argument: the engine's tensors live on
the CPU, and any other device is refused with the message a CPU-only PyTorch gives."""
import builtins

__all__ = ["device", "check_device"]

_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla",
          "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")
NO_CUDA = "Torch not compiled with CUDA enabled"


class device:  # noqa: N801 - PyTorch's name
    """A device by type and optional index: ``device("cuda")``, ``device("cuda:1")``, ``device("cuda", 1)``."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002 - PyTorch's argument name
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, builtins.int) and not isinstance(type, builtins.bool):
            raise RuntimeError("Cannot access accelerator device when none is available.")
        elif not isinstance(type, str):
            got = builtins.type(type).__name__
            raise TypeError(f"device() received an invalid combination of arguments - got ({got})")
        else:
            name, _, number = type.partition(":")
            if name not in _TYPES:
                raise RuntimeError(f"Expected one of {', '.join(_TYPES)} device type at start of device string: "
                                   f"{type}")
            if number:
                if not number.isdigit():
                    raise RuntimeError(f"Invalid device string: '{type}'")
                index = builtins.int(number)
            type = name
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "index", index)

    def __setattr__(self, name, value):
        raise AttributeError(f"attribute '{name}' of 'torch.device' objects is not writable")

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = device("cpu")


def check_device(where):
    """``where`` (a device, a string, an int or None) as a device the engine has, or PyTorch's error:
    CUDA is not compiled in; other backends are not linked."""
    if where is None:
        return CPU
    d = where if isinstance(where, device) else device(where)
    if d.type == "cpu":
        return CPU
    if d.type == "cuda":
        raise AssertionError(NO_CUDA)
    if d.type == "meta":
        raise NotImplementedError("gradviz.engine has no 'meta' device: its tensors always hold data, on the CPU")
    raise RuntimeError(f"PyTorch is not linked with support for {d.type} devices")
