"""Differentiable primitives. Each is a ``Function`` named as PyTorch names its grad_fn, with its
forward and its backward side by side; everything else is composed from these on ``Tensor``."""
