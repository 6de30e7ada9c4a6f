"""``gradviz.engine.autograd``: ``backward``, ``grad`` and grad mode, as in ``torch.autograd``."""
from .backward import backward, grad
from .function import AccumulateGrad, Function, Node
from .gradcheck import gradcheck
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

__all__ = ["backward", "grad", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
           "Function", "Node", "AccumulateGrad", "gradcheck"]
