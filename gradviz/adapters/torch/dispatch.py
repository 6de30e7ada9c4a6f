"""Both frameworks at once: ``MultiAdapter`` sends each object to the adapter that owns it (the
engine's or PyTorch's), through ``_dispatch`` and ``_dispatch_by``, which decide once per type."""
from __future__ import annotations


class MultiAdapter:
    """Both frameworks at once: each object goes to the adapter that owns it. Methods are bound
    once here (no per-call dispatch objects): the producer calls them for every node and value."""

    def __init__(self, engine, torch_adapter):
        self.engine, self.torch = engine, torch_adapter
        self.source_dirs = tuple(engine.source_dirs) + tuple(torch_adapter.source_dirs)
        torch = torch_adapter.torch
        from gradviz.engine import Tensor as EngineTensor
        from gradviz.engine.autograd import Node as EngineNode
        engine_types = (EngineTensor, EngineNode)
        tensor_types = (torch.Tensor,)
        # The hottest one (ids of every tensor and node met), resolved per type once: a torch
        # tensor's tag is in a weak table, a torch node's in its metadata. Whatever is not the
        # engine's is torch's: not every torch graph node is a torch.autograd.graph.Node (the
        # generic CppFunction of foreach ops, TorchScript and forward-mode AD is not).
        def tag_getter(cls):
            return (engine.get_tag if issubclass(cls, engine_types) else torch_adapter.tensor_tag
                    if issubclass(cls, torch.Tensor) else torch_adapter.node_tag)

        def tag_setter(cls):
            return (engine.set_tag if issubclass(cls, engine_types) else torch_adapter.set_tensor_tag
                    if issubclass(cls, torch.Tensor) else torch_adapter.set_node_tag)

        def node_owner(cls):
            return engine if issubclass(cls, engine_types) else torch_adapter

        def value_owner(cls):
            return torch_adapter if issubclass(cls, tensor_types) else engine
        # For callers that resolve a type once and then call the owner's methods directly (the
        # producer, on its hottest paths): the same choices as the methods below make.
        self.tag_getter, self.tag_setter = tag_getter, tag_setter
        self.node_owner, self.value_owner = node_owner, value_owner
        self.get_tag = _dispatch_by(tag_getter)
        for name in ("set_tag", "op_name", "next_nodes", "accumulate_variable", "has_grad_fn",
                     "tensor_meta", "array", "is_parameter", "given_name", "saved", "vjp", "replay", "release_forward"):
            setattr(self, name, _dispatch(engine_types, getattr(engine, name), getattr(torch_adapter, name)))
        for name in ("memory", "summarize", "summarize_later", "to_numpy", "is_view", "view_onto"):
            setattr(self, name, _dispatch(tensor_types, getattr(torch_adapter, name), getattr(engine, name)))

    def flush(self):
        self.engine.flush()
        self.torch.flush()

    def kept(self, value):
        """(Only the engine's arrays are kept as the program's own: PyTorch's are always copied.)"""
        self.engine.kept(value)


def _dispatch(types, if_types, otherwise):
    """The adapter method for ``obj``'s framework, decided once per type (this runs thousands of
    times a step, and ``isinstance`` against torch's classes is the slow part)."""
    by_type = {}

    def method(obj, *args):
        f = by_type.get(type(obj))
        if f is None:
            f = by_type[type(obj)] = if_types if isinstance(obj, types) else otherwise
        return f(obj, *args)
    return method


def _dispatch_by(resolve):
    """A method that runs ``resolve(type(obj))(obj, *args)``, resolving each type once."""
    by_type = {}

    def method(obj, *args):
        f = by_type.get(type(obj))
        if f is None:
            f = by_type[type(obj)] = resolve(type(obj))
        return f(obj, *args)
    return method
