"""The hook lifecycle: ``TorchRecording`` attaches the hooks that feed a producer from PyTorch
(the TorchFunctionMode made by ``_make_mode``, module forward hooks, per-pass backward hooks,
optimizer step hooks) and removes them together; ``TorchAttachment`` attaches it now, or when
torch gets imported (``_ImportWatcher``)."""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import warnings

from gradviz.adapters.torch.ddp import DDPWatch
from gradviz.adapters.torch import replay
from gradviz.adapters.torch.aten_calls import AtenCalls
from gradviz.adapters.torch.dispatch import MultiAdapter
from gradviz.adapters.torch.values import TorchAdapter

_COMPILE_HOOKS_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks"


def _flat_tensors(torch, items):
    out = []
    for x in items:
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            out.extend(y for y in x if isinstance(y, torch.Tensor))
    return out


class TorchRecording:
    """The hooks that feed a producer from PyTorch, attached together and removed together."""

    def __init__(self, producer, torch):
        self.producer = producer
        self.torch = torch
        self.adapter = TorchAdapter(torch)
        self.ddp = DDPWatch(producer, torch)
        self._handles = []
        self._mode = None
        self._before_step = {}
        self._warning_filter = None
        self._apply_wrapped = None
        self._backward_funcs = {torch.Tensor.backward: "tensor", torch.autograd.backward: "backward",
                                torch.autograd.grad: "grad"}
        # A context in which torch's __torch_function__ handling is off (modes included), where
        # this torch has one.
        self._torch_function_off = getattr(torch._C, "DisableTorchFunction", None) or contextlib.nullcontext

    def attach(self):
        torch = self.torch
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module
        p = self.producer
        p.adapter = MultiAdapter(p.adapter, self.adapter)
        p.refresh_skip_dirs()
        compiling = _is_compiling(torch)
        ddp = self.ddp

        def module_entered(m, args):
            if not compiling():
                ddp.module_entered(m)
                p.module_entered(m)
        # torch.compile(module) warns of global module hooks: gradviz's, which stand aside while
        # it traces (a warning the program would not have printed without gradviz)
        warnings.filterwarnings("ignore", message=_COMPILE_HOOKS_WARNING, category=UserWarning)
        self._warning_filter = warnings.filters[0]
        self._handles = [
            # quiet: the entry reads each parameter's requires_grad, through the mode otherwise
            nn_module.register_module_forward_pre_hook(self._quiet(module_entered)),
            nn_module.register_module_forward_hook(
                lambda m, args, out: None if compiling() else p.module_exited(m), always_call=True),
            optim_module.register_optimizer_step_pre_hook(self._step_pre),
            optim_module.register_optimizer_step_post_hook(self._step_post),
        ]
        self._mode = _make_mode(torch, self)()
        self._mode.__enter__()
        if getattr(p, "keep_forward", False):
            self._wrap_function_apply()
        return self

    def _wrap_function_apply(self):
        """A custom ``torch.autograd.Function``'s apply is seen by no mode: wrapped while attached,
        to keep its arguments for a gradient check (``replay``)."""
        torch, key = self.torch, self.adapter.forward_key
        fn_cls = torch.autograd.Function
        original = fn_cls.__dict__.get("apply")
        if not isinstance(original, classmethod):
            return
        inner = original.__func__

        def apply(cls, *args, **kwargs):
            out = inner(cls, *args, **kwargs)
            if torch.is_grad_enabled():
                replay.record(torch, key, None, args, kwargs, out if isinstance(out, tuple) else (out,), custom=cls)
            return out
        fn_cls.apply = classmethod(apply)
        self._apply_wrapped = original

    def detach(self):
        self.producer.flush()  # (while this adapter, which holds the pending summaries, is in place)
        if self._apply_wrapped is not None:
            self.torch.autograd.Function.apply = self._apply_wrapped
            self._apply_wrapped = None
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._warning_filter in warnings.filters:
            warnings.filters.remove(self._warning_filter)
            getattr(warnings, "_filters_mutated", lambda: None)()  # (as warnings' own functions do)
        p = self.producer
        if isinstance(p.adapter, MultiAdapter):
            p.adapter = p.adapter.engine
            p.refresh_skip_dirs()

    # -- forward --------------------------------------------------------------------------------
    def made(self, args, kwargs, out, func=None, before=None, aten=None):
        torch = self.torch
        outs = out if isinstance(out, tuple) else (out,)
        if func is not None and self.producer.keep_forward:
            replay.record(torch, self.adapter.forward_key, func, args, kwargs, outs, before=before, aten=aten)
        inputs = None
        for o in outs:
            if isinstance(o, torch.Tensor) and o.grad_fn is not None and self.adapter.node_tag(o.grad_fn) is None:
                if inputs is None:
                    inputs = _flat_tensors(torch, list(args) + list((kwargs or {}).values()))
                self.producer.node_created(o.grad_fn, inputs, o)

    # -- backward -------------------------------------------------------------------------------
    def run_backward(self, kind, func, args, kwargs):
        torch = self.torch
        kwargs = kwargs or {}
        if kind == "tensor":
            roots = [args[0]]
            grads = [args[1] if len(args) > 1 else kwargs.get("gradient")]
        else:
            # (PyTorch makes the roots a tuple before a mode sees them; not the gradients)
            first = args[0] if args else kwargs.get("tensors" if kind == "backward" else "outputs")
            roots = [first] if isinstance(first, torch.Tensor) else list(first)
            name, at = ("grad_tensors", 1) if kind == "backward" else ("grad_outputs", 2)
            g = args[at] if len(args) > at else kwargs.get(name)
            if not (g is None or isinstance(g, (torch.Tensor, list, tuple))):
                g = tuple(g)  # an iterator read here is handed on as what it gave, not used up
                if len(args) > at:
                    args = args[:at] + (g,) + args[at + 1:]
                else:
                    kwargs = {**kwargs, name: g}
            grads = [g] if isinstance(g, torch.Tensor) or g is None else list(g)
            grads += [None] * (len(roots) - len(grads))
        root_nodes = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
        if not root_nodes:
            return func(*args, **kwargs)
        grads = [torch.ones_like(r) if g is None else g for r, g in zip(roots, grads) if r.grad_fn is not None]
        handles = self._hook_graph(root_nodes)
        p = self.producer
        inputs, args, kwargs = _backward_inputs(kind, args, kwargs)
        p.backward_started(root_nodes, grads, inputs and self._planned(kind, root_nodes, inputs))
        self.ddp.pass_started(kind, root_nodes)
        ok = False
        try:
            out = func(*args, **kwargs)
            ok = True
        finally:
            for h in handles:
                h.remove()
            with self._torch_function_off():
                self.ddp.pass_finished(ok)
            if not p.optimizer_known and _optimizer_in_sight(torch, p._user_frame()):
                p.optimizer_known = True  # made before its first step: its iteration is one too
            p.backward_finished()
        create_graph = args[4] if kind == "grad" and len(args) > 4 else kwargs.get("create_graph")
        if kind == "grad" and create_graph:
            # The graph of the gradients (double backward) was made by this call, inside the
            # engine where no op is seen: its nodes are announced now, made at this call's line,
            # not at the line that first uses them.
            made = [g.grad_fn for g in _flat_tensors(torch, out if isinstance(out, tuple) else (out,))
                    if g.grad_fn is not None]
            if made:
                p.nodes_made_by_backward(made)
        return out

    def _planned(self, kind, roots, inputs):
        """The nodes a pass with ``inputs`` will run: those on the way from the roots to an input's
        node. An input's own node runs only on the way to another input, or when it is a leaf's
        AccumulateGrad in ``backward(inputs=...)``: ``autograd.grad`` takes the gradient at it."""
        torch = self.torch
        get_edge = getattr(torch.autograd.graph, "get_gradient_edge", None)
        targets = set()
        for t in inputs:
            if _is_edge(t):
                targets.add(t.node)
            elif not isinstance(t, torch.Tensor):
                continue
            elif t.grad_fn is not None:
                targets.add(t.grad_fn)
            elif get_edge is not None and t.requires_grad:
                try:
                    targets.add(get_edge(t).node)
                except (RuntimeError, AttributeError):  # no edge to give (inside torch.func's transforms)
                    return None  # (no plan: the steps counted as the roots reach)
        if not targets:
            return None
        needed, expanded = {}, set()
        stack = [(r, False) for r in roots]
        while stack:
            node, done = stack.pop()
            nexts = [fn for fn, _ in node.next_functions if fn is not None]
            if done:
                needed[node] = any(m in targets or needed.get(m, False) for m in nexts)
            elif node not in expanded:
                expanded.add(node)
                stack.append((node, True))
                stack.extend((m, False) for m in nexts if m not in expanded)
        return [n for n in needed if needed[n] or (n in targets and kind != "grad" and
                                                   getattr(n, "variable", None) is not None)]

    def _hook_graph(self, roots):
        p = self.producer
        # The hooks run with gradviz's TorchFunctionMode on: each torch call they make (a
        # summary's reductions, a copy to the host) would go through its Python dispatch, and the
        # mode has nothing to record in backward. Off while a hook runs (measured: most of the
        # recorded step's time on CUDA, where a summary makes ~8 calls).
        off = self._torch_function_off
        entered, exited, accumulated = p.node_entered, p.node_exited, p.grad_accumulated
        ran = p.node_ran
        ddp_ready = self.ddp.accumulated
        apart = p.acts_before_nodes
        handles, seen, stack = [], set(), list(roots)
        pending = {}
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)
            if var is None and not apart:
                # Nothing acts before a node runs: its entry and exit told together once it ran
                # (PyTorch hands a node's post hook its grad_outputs too), one hook a node, not two.
                def both(gi, go, node=node):
                    with off():
                        ran(node, go, gi)
                handles.append(node.register_hook(both))
            elif var is None:
                # (A hook's return value would replace the gradients: these return None.)
                def pre(go, node=node):
                    with off():
                        entered(node, go)

                def post(gi, go, node=node):
                    with off():
                        exited(node, gi)

                handles.append(node.register_prehook(pre))
                handles.append(node.register_hook(post))
            else:
                def before(go, node=node, var=var):
                    # The gradient's Value, not the tensor: while anything else holds the
                    # tensor, AccumulateGrad copies it into .grad instead of taking it.
                    with off():
                        fresh = var.grad is None
                        values = entered(node, go)
                    pending[node] = (values[0] if values else None, fresh)

                def after(tensor, node=node):
                    # AccumulateGrad's work is done here, and it has no gradients to hand on:
                    # its exit is told here too, in the engine's order, without a third hook.
                    contribution, fresh = pending.pop(node, (None, False))
                    with off():
                        accumulated(node, tensor, contribution, tensor.grad, fresh)
                        exited(node, ())
                        ddp_ready(node, tensor)

                handles.append(node.register_prehook(before))
                handles.append(var.register_post_accumulate_grad_hook(after))
            stack.extend([fn for fn, _ in node.next_functions])
        return handles

    # -- optimizers -----------------------------------------------------------------------------
    def _quiet(self, fn):
        """``fn`` run with torch's __torch_function__ handling off."""
        off = self._torch_function_off

        def call(*args):
            with off():
                return fn(*args)
        return call

    def _params_of(self, optimizer):
        return [q for g in optimizer.param_groups for q in g["params"] if q.grad is not None]

    # The step hooks run outside any torch call, so with gradviz's mode on: each of their torch
    # calls would go through its Python dispatch (about 20 µs each, four a parameter).
    def _step_pre(self, optimizer, args, kwargs):
        self.producer.optimizer_step_started()
        with self._torch_function_off(), self.torch.no_grad():
            self._before_step[id(optimizer)] = [(q, q.detach().clone()) for q in self._params_of(optimizer)]

    def _step_post(self, optimizer, args, kwargs):
        before = self._before_step.pop(id(optimizer), [])
        torch = self.torch
        with self._torch_function_off(), torch.no_grad():
            norms = []
            for q, b in before:
                b.sub_(q.detach())  # the change, in the copy's own memory: no new arrays
                low = b.dtype in (torch.float16, torch.bfloat16)
                norms.append(torch.linalg.vector_norm(b, dtype=torch.float32 if low else None).double())
            if len({n.device for n in norms}) > 1:
                norms = [n.item() for n in norms]
            elif norms:
                norms = torch.stack(norms).tolist()  # one wait on a device for them all
        lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        self.producer.optimizer_step(type(optimizer).__name__, list(zip([q for q, _ in before], norms)),
                                     float(lr) if isinstance(lr, (int, float)) else None)


def _backward_inputs(kind, args, kwargs):
    """(the ``inputs`` of a backward call, ``autograd.grad``'s second argument, as a list, or None
    when it has none: every leaf the roots reach gets a gradient; args; kwargs). Inputs given as
    an iterator (``model.parameters()``) are read here and handed on as what it gave."""
    at = {"tensor": 4, "backward": 5, "grad": 1}[kind]
    given = args[at] if len(args) > at else kwargs.get("inputs")
    if given is None:
        return None, args, kwargs
    if hasattr(given, "grad_fn") or _is_edge(given):  # one tensor, one GradientEdge
        return [given], args, kwargs
    if not isinstance(given, (list, tuple)):
        given = tuple(given)
        if len(args) > at:
            args = args[:at] + (given,) + args[at + 1:]
        else:
            kwargs = {**kwargs, "inputs": given}
    return (list(given) or None), args, kwargs  # (no inputs: every leaf, as PyTorch takes it)


def _is_edge(x):
    return type(x).__name__ == "GradientEdge" and hasattr(x, "node")


def _optimizer_in_sight(torch, frame):
    """Whether the code that ran the backward pass holds a torch optimizer (before its first step):
    in its locals, its globals, or its ``self``'s attributes."""
    if frame is None:
        return False
    optimizer = torch.optim.Optimizer
    owner = frame.f_locals.get("self")
    scopes = [frame.f_locals, frame.f_globals]
    try:
        scopes.append(vars(owner))
    except TypeError:  # no self, or one without attributes
        pass
    return any(isinstance(v, optimizer) for scope in scopes for v in list(scope.values()))


def _is_compiling(torch):
    """Whether torch.compile or torch.jit.trace is tracing the program. While they do, gradviz's
    hooks stand aside: tracing them would break torch.compile, and put a summary's reductions into
    the graph torch.jit.trace makes. What they made runs as PyTorch graph nodes, recorded as any."""
    compiler = getattr(torch, "compiler", None)
    compiling = getattr(compiler, "is_compiling", None) or (lambda: False)
    jit_tracing = torch._C._is_tracing if hasattr(torch._C, "_is_tracing") else (lambda: False)
    return lambda: compiling() or jit_tracing()


def _make_mode(torch, rec):
    from torch.overrides import TorchFunctionMode

    backward_funcs = rec._backward_funcs
    is_grad_enabled = torch.is_grad_enabled

    def keep_forward():
        return rec.producer.keep_forward
    is_compiling = _is_compiling(torch)

    class GradvizMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if is_compiling():  # torch.compile tracing: its compiled graph is recorded when it runs
                return func(*args, **(kwargs or {}))
            kind = backward_funcs.get(func)
            if kind is not None:
                return rec.run_backward(kind, func, args, kwargs)
            grad = is_grad_enabled()
            keep = grad and keep_forward()
            before = replay.before_call(torch, func, args, kwargs) if keep else None
            if keep:  # the aten calls below autograd: each node's own forward (aten_calls)
                with AtenCalls(torch) as aten:
                    out = func(*args, **(kwargs or {}))
            else:
                aten = None
                out = func(*args, **(kwargs or {}))
            if grad:
                rec.made(args, kwargs, out, func, before, aten)
            return out

    return GradvizMode


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Calls back once torch has been imported, for programs that import it while recording."""

    def __init__(self, callback):
        self.callback = callback

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        self.remove()
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        loader, callback = spec.loader, self.callback
        original = loader.exec_module

        def exec_module(module):
            original(module)
            callback(module)

        loader.exec_module = exec_module
        return spec

    def remove(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class TorchAttachment:
    """Attaches torch recording to a producer now if torch is loaded, else when it gets imported."""

    def __init__(self, producer):
        self.producer = producer
        self.recording = None
        self._watcher = None

    def start(self):
        if "torch" in sys.modules:
            self._attach(sys.modules["torch"])
        else:
            self._watcher = _ImportWatcher(self._attach)
            sys.meta_path.insert(0, self._watcher)
        return self

    def _attach(self, torch):
        if self.recording is None:
            self.recording = TorchRecording(self.producer, torch).attach()

    def stop(self):
        if self._watcher is not None:
            self._watcher.remove()
            self._watcher = None
        if self.recording is not None:
            self.recording.detach()
            self.recording.adapter.clear_tags()  # nothing of gradviz's stays with the program's tensors
            self.recording = None
