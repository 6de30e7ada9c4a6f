import numpy as np

from .._tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a module's learnable parameter: ``requires_grad=True`` by default."""

    def __init__(self, data=None, requires_grad=True):
        arr = np.zeros(0, np.float32) if data is None else (data._np if isinstance(data, Tensor) else np.asarray(data))
        self._init(arr, None, False)
        self.requires_grad = requires_grad

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
