"""A test helper: the autograd graph below a tensor as node names (the engine's and PyTorch's alike)."""


def node_names(t):
    """The graph below ``t`` as node names, depth first in next_functions order."""
    out, stack, seen = [], [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        out.append(fn.name())
        stack.extend(n for n, _ in reversed(fn.next_functions))
    return out
