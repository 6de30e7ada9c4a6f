"""DistributedDataParallel seen from outside: which rank this is, when each gradient bucket's
all-reduce was launched, and the synchronised ``.grad`` it left, without changing what DDP does.

DDP's C++ reducer puts a post hook on each parameter's AccumulateGrad node. When the last gradient
of a bucket is ready (and every earlier bucket's), the reducer launches that bucket's all-reduce
from the hook; at the end of the pass a final callback waits for them and writes the mean into
``.grad``. gradviz's own post-accumulate-grad hook runs inside AccumulateGrad, before the reducer's
hook: it sees the rank's local gradient. The launches are mirrored here from the reducer's bucket
layout (``Reducer._get_zeros_like_grad_buckets``, read again after DDP rebuilds its buckets), in the
reducer's order: bucket ``i`` goes once its parameters and all of bucket ``< i``'s are ready. No
comm hook is registered (a program may register its own, and only one is allowed) and no
collective is called: the recorded program reduces exactly what it would have.

Whether a backward pass reduces at all is decided by the DDP module's forward: a forward run inside
``no_sync()`` (or without grad) leaves its backward unreduced, wherever that backward runs, so the
choice is read at the forward. With ``find_unused_parameters=True`` the reducer marks the
parameters the pass cannot reach ready at its first hook; they are found here the same way, by
walking the graph from the pass's roots. With ``static_graph=True`` DDP's first pass reduces no
bucket from the hooks: one callback all-reduces them all at its end (``_delay_all_reduce``), and
they are said to be launched there.
"""
from __future__ import annotations

import weakref


class _Layout:
    """One DDP module's buckets in a pass: which are ready, which launched."""

    def __init__(self, buckets):
        self.buckets = buckets  # [(bucket index, [parameters])], in the reducer's order
        self.bucket_of = {id(p): i for i, (_, ps) in enumerate(buckets) for p in ps}
        self.waiting = [len(ps) for _, ps in buckets]
        self.next = 0  # the first bucket not launched yet
        self.deferred = False  # every bucket reduced at the end of the pass (static graph, first pass)

    def ready(self, param):
        """Mark ``param``'s gradient ready; the buckets launched by it, in order."""
        i = self.bucket_of.pop(id(param), None)
        if i is None or self.deferred:
            return []
        self.waiting[i] -= 1
        return self._launched()

    def unused(self, reached):
        """Mark ready every parameter whose id is not in ``reached`` (what the reducer does for
        unused parameters, at its first hook of the pass)."""
        for pid in [pid for pid in self.bucket_of if pid not in reached]:
            self.waiting[self.bucket_of.pop(pid)] -= 1

    def _launched(self):
        out = []
        while self.next < len(self.buckets) and self.waiting[self.next] == 0:
            out.append(self.buckets[self.next])
            self.next += 1
        return out

    def rest(self):
        out = self.buckets[self.next:]
        self.next = len(self.buckets)
        return out


class DDPWatch:
    """Follows the DistributedDataParallel modules a program runs (met in the module forward
    hooks) and tells the producer of their buckets in each backward pass."""

    def __init__(self, producer, torch):
        self.producer = producer
        self.torch = torch
        self._modules = weakref.WeakSet()
        # ddp -> (its _has_rebuilt_buckets when read, [(index, params)]): read again only when DDP
        # has rebuilt its buckets since (reading allocates a zero copy of every bucket)
        self._layouts = weakref.WeakKeyDictionary()
        self._active = []  # (ddp, _Layout) of the pass under way
        self._accumulated = set()  # ids of parameters that received a gradient in this pass
        self._told_backend = False
        self._syncs = weakref.WeakKeyDictionary()  # ddp -> whether its last forward set up a reduction
        ddp = getattr(getattr(torch.nn, "parallel", None), "DistributedDataParallel", None)
        self._ddp_class = ddp

    def module_entered(self, module):
        if self._ddp_class is not None and isinstance(module, self._ddp_class):
            self._modules.add(module)
            self._syncs[module] = bool(self.torch.is_grad_enabled() and
                                       getattr(module, "require_backward_grad_sync", True))

    def _rank(self):
        """Tell the producer which rank this is, once the process group is up."""
        if self._told_backend:
            return
        dist = getattr(self.torch, "distributed", None)
        try:
            if dist is None or not dist.is_available() or not dist.is_initialized():
                return
            rank, world, backend = dist.get_rank(), dist.get_world_size(), str(dist.get_backend())
        except (RuntimeError, ValueError):
            return
        import os
        local = os.environ.get("LOCAL_RANK", "")
        self.producer.rank_known(rank, world, int(local) if local.isdigit() else rank, backend)
        self._told_backend = True

    def _buckets(self, ddp):
        rebuilt = getattr(ddp, "_has_rebuilt_buckets", None)
        known = self._layouts.get(ddp)
        if known is not None and known[0] == rebuilt:
            return known[1]
        try:
            grad_buckets = ddp.reducer._get_zeros_like_grad_buckets()
        except (AttributeError, RuntimeError):
            return []
        layout = [(b.index(), list(b.parameters())) for b in grad_buckets]
        self._layouts[ddp] = (rebuilt, layout)
        return layout

    def pass_started(self, kind, roots=()):
        """A backward pass from grad_fn nodes ``roots`` begins."""
        self._rank()
        self._accumulated = set()
        self._active = []
        if kind == "grad":  # DDP reduces in backward() only: autograd.grad leaves .grad alone
            return
        reached = None
        for ddp in list(self._modules):
            if self._syncs.get(ddp, False) and getattr(ddp, "reducer", None) is not None:
                layout = self._buckets(ddp)
                if layout:
                    active = _Layout(layout)
                    # the flag is set by DDP's first static-graph backward, which queues the delayed reduction
                    active.deferred = bool(getattr(ddp, "static_graph", False)) and \
                        not getattr(ddp, "_static_graph_delay_allreduce_enqueued", True)
                    if getattr(ddp, "find_unused_parameters", False):
                        reached = _reached_params(roots) if reached is None else reached
                        active.unused(reached)
                    self._active.append((ddp, active))

    def accumulated(self, node, param):
        """``param``'s AccumulateGrad (``node``) ran: the buckets DDP launches now."""
        if not self._active:
            return
        self._accumulated.add(id(param))
        for _, layout in self._active:
            for index, params in layout.ready(param):
                self.producer.bucket_reduced(index, params, node)

    def pass_finished(self, ok):
        """The pass ended (``ok``: without an error): DDP's final callback has written the means."""
        active, self._active = self._active, []
        if not ok:
            return
        for _, layout in active:
            if not any(id(p) in self._accumulated for _, ps in layout.buckets for p in ps):
                continue  # the pass did not reach this module (another model's backward)
            for index, params in layout.rest():
                self.producer.bucket_reduced(index, params, None)
            pairs = [(p, p.grad) for _, ps in layout.buckets for p in ps if p.grad is not None]
            if pairs:
                self.producer.grads_synchronized(pairs)


def _reached_params(roots):
    """ids of the tensors whose AccumulateGrad a backward pass from grad_fn nodes ``roots`` can reach."""
    seen, stack, out = set(), list(roots), set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if var is not None:
            out.add(id(var))
        stack.extend(f for f, _ in getattr(fn, "next_functions", ()))
    return out
