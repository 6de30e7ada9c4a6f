"""The backward executor: an iterative loop over a ready queue, ordered as PyTorch's engine orders
it. A node becomes ready once every consumer has sent its gradient; among ready nodes the one with
the highest sequence number (created last) runs first; AccumulateGrad has the highest of all.

PyTorch keeps ready nodes in a ``std::priority_queue``; ties (several AccumulateGrad nodes ready at
once) then come out in the order libstdc++'s heap yields them, so the heap below follows libstdc++'s
``push_heap``/``pop_heap`` step for step rather than using ``heapq``.
"""
import numpy as np

from .. import hooks
from . import grad_mode
from .function import AccumulateGrad, GraphRoot


def _push(heap, node):
    heap.append(node)
    hole = len(heap) - 1
    key = node.sequence_nr
    parent = (hole - 1) // 2
    while hole > 0 and heap[parent].sequence_nr < key:
        heap[hole] = heap[parent]
        hole = parent
        parent = (hole - 1) // 2
    heap[hole] = node


def _pop(heap):
    top = heap[0]
    last = heap.pop()
    n = len(heap)
    if n == 0:
        return top
    # libstdc++ __adjust_heap: move the hole at the root down to a leaf, then push `last` up.
    hole, child = 0, 0
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if heap[child].sequence_nr < heap[child - 1].sequence_nr:
            child -= 1
        heap[hole] = heap[child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        heap[hole] = heap[child - 1]
        hole = child - 1
    key = last.sequence_nr
    parent = (hole - 1) // 2
    while hole > 0 and heap[parent].sequence_nr < key:
        heap[hole] = heap[parent]
        hole = parent
        parent = (hole - 1) // 2
    heap[hole] = last
    return top


def _dependencies(root):
    deps = {}
    seen = {root}
    stack = [root]
    while stack:
        node = stack.pop()
        for fn, _ in node.next_functions:
            if fn is None:
                continue
            deps[fn] = deps.get(fn, 0) + 1
            if fn not in seen:
                seen.add(fn)
                stack.append(fn)
    return deps


def _needed(root, targets):
    """Nodes that must run so that gradients reach ``targets`` (for ``autograd.grad``)."""
    needed = {}
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in needed:
            continue
        if not expanded:
            stack.append((node, True))
            stack.extend((fn, False) for fn, _ in node.next_functions if fn is not None and fn not in needed)
        else:
            needed[node] = any(fn is not None and (fn in targets or needed.get(fn, False))
                               for fn, _ in node.next_functions)
    return needed


def _call_pre_hooks(node, grad, wrap):
    for hook in node._tensor_hooks():
        out = hook(wrap(grad))
        if out is not None:
            grad = out._np
    if node._retained is not None:
        tensor = node._retained()
        if tensor is not None:
            if tensor.grad is None:
                tensor.grad = wrap(grad.copy())
            else:
                tensor.grad = wrap(tensor.grad._np + grad)
    for hook in node.__dict__.get("_pre_hooks", ()):
        out = hook((wrap(grad),))
        if out is not None:
            grad = out[0]._np
    return grad


def execute(root_edges, root_grads, retain_graph=False, capture=None, *, make_tensor):
    """Run one backward pass from ``root_edges`` ((node, output_nr) pairs) fed ``root_grads`` (numpy
    arrays). With ``capture`` (a list of nodes), run only what reaches them, accumulate nothing, and
    return the gradient arriving at each of them (``autograd.grad``). ``make_tensor(array)`` makes
    the tensors that user hooks receive (a root's ``_result``: this layer imports no tensor class)."""
    if len(root_edges) == 1:
        root, buffers = root_edges[0][0], {root_edges[0][0]: root_grads[0]}
    else:
        root, buffers = GraphRoot(root_edges, root_grads), {}
    deps = _dependencies(root)
    targets = set(capture) if capture is not None else ()
    needed = _needed(root, targets) if capture is not None else None
    captured = {}
    if hooks.backward_started:
        planned = None if needed is None else [n for n, runs in needed.items() if runs]
        for hook in hooks.backward_started:
            hook(root, root_edges, root_grads, planned)
    # The hooks of one pass are those registered when it began.
    moments = tuple(hooks.node_entered), tuple(hooks.grad_accumulated), tuple(hooks.node_exited)

    def wrap(array):
        return None if array is None else make_tensor(array)

    heap = [root]
    with grad_mode.no_grad(), np.errstate(all="ignore"):
        _run(heap, buffers, deps, needed, targets, captured, moments, retain_graph, wrap)
    for hook in hooks.backward_finished:
        hook(root)
    if capture is not None:
        return [captured.get(c) for c in capture]
    return None


def _run(heap, buffers, deps, needed, targets, captured, moments, retain_graph, wrap):
    entered, accumulated, exited = moments
    node = None
    try:
        while heap:
            node = _pop(heap)
            grad = buffers.pop(node, None)
            if needed is not None and not needed.get(node, False) and node not in targets:
                continue
            if grad is not None and not isinstance(node, GraphRoot):
                grad = _call_pre_hooks(node, grad, wrap)
            if needed is not None:
                if node in targets:
                    captured[node] = grad
                if not needed.get(node, False):
                    continue
            for hook in entered:
                hook(node, grad)
            if isinstance(node, AccumulateGrad):
                if grad is not None:
                    fresh = node.variable._grad is None
                    node.accumulate(grad)
                    for hook in accumulated:
                        hook(node, grad, fresh)
                grad_inputs = ()
            elif grad is None and not isinstance(node, GraphRoot):
                grad_inputs = (None,) * len(node.next_functions)
            else:
                grad_inputs = node.backward(grad)
            post = node.__dict__.get("_post_hooks")
            if post:
                outs = tuple(wrap(g) for g in grad_inputs)
                for hook in post:
                    res = hook(outs, (wrap(grad),))
                    if res is not None:
                        outs = tuple(res)
                grad_inputs = tuple(None if g is None else g._np for g in outs)
            for hook in exited:
                hook(node, grad_inputs)
            if not retain_graph:
                node.release_variables()
            for (fn, _), g in zip(node.next_functions, grad_inputs):
                if fn is None:
                    continue
                if g is not None:
                    prev = buffers.get(fn)
                    buffers[fn] = g if prev is None else prev + g
                left = deps[fn] - 1
                deps[fn] = left
                if left == 0:
                    _push(heap, fn)
    except BaseException as exc:
        if getattr(exc, "gradviz_node", None) is None:
            try:
                exc.gradviz_node = node  # the node being run: the debugger names it
            except AttributeError:
                pass
        raise
