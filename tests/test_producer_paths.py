"""The producer's fast paths tell what its general paths tell: the same events, in the same order,
with the same values, whichever way a node's backward is told (``node_ran`` or ``node_entered``
and ``node_exited``) and whichever adapter answers for an object."""
import numpy as np
import pytest

import gradviz.engine as gt
from gradviz import events as ev
from gradviz.adapters.engine import EngineAdapter
from gradviz.recording.attach import attach
from gradviz.recording.producer import Producer

torch = pytest.importorskip("torch")


class _Apart(Producer):
    """A producer that acts on each node's entry and exit (as the debugger's does): it must be told
    of each through them, never past them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def node_entered(self, node, grad_outputs):
        values = super().node_entered(node, grad_outputs)
        self.calls.append(("entered", self._lookup(node)))
        return values

    def node_exited(self, node, grad_inputs):
        super().node_exited(node, grad_inputs)
        self.calls.append(("exited", self._lookup(node)))


def _canon(e):
    """An event as comparable plain data: its kind, its ids and its values' exact statistics."""
    def val(v):
        return None if v is None else (v.summary.shape, v.summary.min, v.summary.max, v.summary.norm)
    if isinstance(e, (ev.NodeEntered, ev.NodeExited)):
        grads = e.grad_outputs if isinstance(e, ev.NodeEntered) else e.grad_inputs
        return type(e).__name__, e.pass_index, e.node, tuple(val(v) for v in grads)
    if isinstance(e, ev.NodeCreated):
        return "NodeCreated", e.id, e.op, e.inputs, e.output, e.next_nodes, e.scope, val(e.value)
    if isinstance(e, ev.GradAccumulated):
        return "GradAccumulated", e.node, e.tensor, val(e.contribution), val(e.grad)
    return (type(e).__name__,)


def _record_torch(cls, program):
    events = []
    producer = cls(EngineAdapter(), events.append, keep_arrays=False)
    attachment = attach(producer)
    try:
        program()
    finally:
        attachment.stop()
    return producer, [_canon(e) for e in events]


def _torch_program():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 4)
    w = torch.randn(4, 4, requires_grad=True)
    h = c = torch.zeros(2, 4)
    for x in torch.randn(3, 2, 3):
        h, c = cell(x, (h, c))
        h = torch.tanh(h @ w) + h  # a gradient summed from two branches
    (h * h).sum().backward()


def test_a_producer_that_acts_on_entries_and_exits_is_told_through_them_with_the_same_events():
    _, fast = _record_torch(Producer, _torch_program)
    apart, told = _record_torch(_Apart, _torch_program)
    assert told == fast
    ran = [e[2] for e in fast if e[0] == "NodeExited"]
    assert len(ran) > 20
    # every node that ran: its entry, then its exit, in the order PyTorch ran them
    assert apart.calls == [(k, n) for n in ran for k in ("entered", "exited")]


def test_node_ran_tells_entry_and_exit_as_the_two_calls_do():
    a = gt.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = (a * a).sum()
    out = []
    p = Producer(EngineAdapter(), out.append, keep_arrays=False)
    g_out, g_in = np.array(1.0), np.array([2.0, -4.0, 6.0])
    p.node_ran(y.grad_fn, (g_out,), (g_in,))
    p.flush()  # (events wait for their summaries)
    apart = []
    q = _Apart(EngineAdapter(), apart.append, keep_arrays=False)
    q.node_ran(y.grad_fn, (g_out,), (g_in,))
    q.flush()
    assert [_canon(e) for e in out] == [_canon(e) for e in apart]
    entered, exited = out[-2:]
    assert isinstance(entered, ev.NodeEntered) and isinstance(exited, ev.NodeExited)
    assert entered.node == exited.node
    assert entered.grad_outputs[0].summary.max == 1.0 and exited.grad_inputs[0].summary.min == -4.0
    assert q.calls == [("entered", entered.node), ("exited", entered.node)]


def test_the_multi_adapters_owners_are_those_its_methods_dispatch_to():
    from gradviz.adapters.torch import MultiAdapter, TorchAdapter
    engine, ta = EngineAdapter(), TorchAdapter(torch)
    m = MultiAdapter(engine, ta)
    t = torch.randn(3, requires_grad=True)
    tnode = (t * 2).grad_fn
    e = gt.tensor(np.ones(3), requires_grad=True)
    enode = (e * 2).grad_fn
    for obj, tag in ((t, 1), (tnode, 2), (e, 3), (enode, 4)):
        m.set_tag(obj, tag)
        assert m.tag_getter(type(obj))(obj) == m.get_tag(obj) == tag
        m.tag_setter(type(obj))(obj, tag + 10)
        assert m.get_tag(obj) == tag + 10 and m.tag_getter(type(obj))(obj) == tag + 10
    assert m.node_owner(type(tnode)) is ta and m.node_owner(type(enode)) is engine
    assert m.value_owner(torch.Tensor) is ta and m.value_owner(np.ndarray) is engine
    assert m.node_owner(type(tnode)).op_name(tnode) == m.op_name(tnode) == "MulBackward0"
    assert m.node_owner(type(enode)).op_name(enode) == m.op_name(enode)


def test_events_are_made_as_their_dataclasses_make_them():
    import dataclasses
    import inspect
    for name, cls in ev.EVENT_TYPES.items():
        fs = dataclasses.fields(cls)
        params = list(inspect.signature(cls).parameters.values())
        # the dataclass's parameters, in order, with its defaults
        assert [p.name for p in params] == [f.name for f in fs], name
        assert [p.default for p in params] == [inspect.Parameter.empty if f.default is dataclasses.MISSING
                                               else f.default for f in fs], name
        given = {f.name: object() for f in fs}
        e = cls(**given)
        assert all(getattr(e, k) is v for k, v in given.items()), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(e, fs[0].name, 1)
        with pytest.raises(TypeError):
            cls(*given.values(), 1)  # one too many
    e = ev.NodeCreated(3, "MulBackward0", "grad_fn", 0, (1, 2), 4, (None,))
    assert (e.id, e.output, e.next_nodes, e.scope, e.source, e.value) == (3, 4, (None,), "", None, None)
    assert dataclasses.replace(e, id=7).id == 7 and dataclasses.replace(e, id=7).inputs == (1, 2)
    with pytest.raises(TypeError):
        ev.NodeEntered(1)  # a field without a default is required


def _line_of(mark):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if line.rstrip().endswith(mark))


def _scaled(x, k):
    y = x * k  # (scaled-1)
    return y + x  # (scaled-2)


def test_sources_are_each_nodes_own_line_from_every_call_site_and_every_iteration():
    import gradviz
    a = gt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        for _ in range(2):
            b = _scaled(a, 3.0)  # (site-1)
            c = _scaled(b, 4.0)  # (site-2)
            d = c * 5.0  # (site-3)
            e = (d
                 * 6.0)  # (site-4: a call over two lines, at the line of its operator)
            e.sum().backward()  # (site-5)
    made = [e for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.kind == "grad_fn"]
    lines = [(e.op, e.source.line, e.source.function) for e in made]
    one = [("MulBackward0", _line_of("(scaled-1)"), "_scaled"), ("AddBackward0", _line_of("(scaled-2)"), "_scaled")] * 2
    one += [("MulBackward0", _line_of("(site-3)"), "test_sources_are_each_nodes_own_line_from_every_call_site_and_"
             "every_iteration"), ("MulBackward0", None, None), ("SumBackward0", _line_of("(site-5)"), None)]
    assert len(lines) == 2 * len(one)
    for got, want in zip(lines, one * 2):
        assert got[0] == want[0] and (want[1] is None or got[1] == want[1]), (got, want)
    site4 = lines[5][1]
    assert site4 in (_line_of("(site-4: a call over two lines, at the line of its operator)"),
                     _line_of("(site-4: a call over two lines, at the line of its operator)") - 1)
    # one Source object a line, across iterations and call sites
    by_line = {}
    for e in made:
        assert by_line.setdefault((e.source.file, e.source.line), e.source) is e.source
    texts = [e for e in rec.trace.events if isinstance(e, ev.SourceText)]
    assert len(texts) == len({(t.file, t.line) for t in texts}) == len(by_line)  # each line's text told once


@pytest.mark.parametrize("lib", ["engine", "torch"])
def test_a_modules_frozen_parameters_are_described_once_an_iteration_with_their_value_then(lib):
    import gradviz
    nn = gt.nn if lib == "engine" else torch.nn
    layer = nn.Linear(3, 2)
    layer.weight.requires_grad_(False)
    x = (gt if lib == "engine" else torch).ones(4, 3)
    with gradviz.record(values="summaries") as rec:
        for _ in range(3):
            with (gt if lib == "engine" else torch).no_grad():
                layer.weight.mul_(2.0)  # changed between iterations: each iteration's value is its own
            layer(x).sum().backward()
            layer(x).sum().backward()  # without an optimizer, each backward pass is an iteration
    frozen = [e for e in rec.trace.events if isinstance(e, ev.TensorDescribed) and e.kind == "frozen"]
    w = np.asarray(layer.weight.detach().numpy() if lib == "torch" else layer.weight.numpy())
    assert len(frozen) == 6  # one an iteration: here, an iteration a backward pass
    assert [round(e.value.summary.max, 6) for e in frozen[-2:]] == [round(float(w.max()), 6)] * 2
    assert frozen[0].value.summary.max * 4 == pytest.approx(frozen[-1].value.summary.max)


def test_a_cell_run_again_edited_gets_the_lines_of_its_new_code():
    # A notebook runs a cell's code under one file name; run again after an edit, the same name
    # holds other code, its op on another line: each node gets the line its own code ran.
    import gradviz
    first = "def cell(a):\n    return a * 2.0\n"
    edited = "def cell(a):\n    b = a + 0.0\n    return b * 2.0\n"
    a = gt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        for text in (first, edited, first):
            scope = {}
            exec(compile(text, "<cell-7>", "exec"), scope)
            scope["cell"](a).sum().backward()
    muls = [e.source.line for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.op == "MulBackward0"]
    assert muls == [2, 3, 2]


def _import_file(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_code_in_two_files_is_each_files_own(tmp_path):
    # Code objects compare equal whatever their file: two copies of one module must still each
    # name their own file, and each file's line be told.
    import gradviz
    text = "def block(x):\n    return (x * 2.0).relu()\n"
    paths = [tmp_path / "enc.py", tmp_path / "dec.py"]
    for p in paths:
        p.write_text(text)
    enc, dec = (_import_file(str(p), p.stem + "_copy") for p in paths)
    a = gt.tensor(np.array([1.0, -2.0]), requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        dec.block(enc.block(a)).sum().backward()
    relus = [e.source for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.op == "ReluBackward0"]
    assert [(s.file, s.line) for s in relus] == [(str(paths[0]), 2), (str(paths[1]), 2)]
    told = {(e.file, e.line) for e in rec.trace.events if isinstance(e, ev.SourceText)}
    assert {(str(p), 2) for p in paths} <= told


def test_a_module_reloaded_after_an_edit_has_its_new_line_told(tmp_path):
    import os

    import gradviz
    path = tmp_path / "helper.py"
    path.write_text("def f(a):\n    return a * 2.0\n")
    helper = _import_file(str(path), "helper_reloaded")
    a = gt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        helper.f(a).sum().backward()
        path.write_text("def f(a):\n    return a.exp()  # edited\n")
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 5))  # (a new mtime: a real edit)
        helper = _import_file(str(path), "helper_reloaded")
        helper.f(a).sum().backward()
    texts = [e.text for e in rec.trace.events if isinstance(e, ev.SourceText) and e.file == str(path)]
    assert texts == ["    return a * 2.0", "    return a.exp()  # edited"]
    assert rec.trace.source_text(str(path), 2) == "    return a.exp()  # edited"


def test_a_module_that_overrides_named_parameters_is_asked_through_it():
    import gradviz

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(3, 3), requires_grad=False)
            self.extra = torch.nn.Parameter(torch.randn(3), requires_grad=False)
            self.w = torch.nn.Parameter(torch.randn(3))

        def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):  # hides the table
            return ((n, p) for n, p in super().named_parameters(prefix, recurse, remove_duplicate)
                    if n != prefix + ("." if prefix else "") + "table")

        def forward(self, x):
            return x * self.w

    h = Hidden()
    with gradviz.record(values="summaries") as rec:
        h(torch.randn(2, 3)).sum().backward()
    frozen = [e for e in rec.trace.events if isinstance(e, ev.TensorDescribed) and e.kind == "frozen"]
    assert [e.shape for e in frozen] == [(3,)]  # the extra one it shows, not the table it hides


def test_event_classes_with_what_a_slot_init_cannot_do_keep_the_dataclass_init():
    import dataclasses

    from gradviz.events import _slot_init

    def made(body):
        return dataclasses.dataclass(frozen=True, slots=True, eq=False)(type("E", (), body))

    plain = made({"__annotations__": {"a": int}})
    assert _slot_init(plain) is not plain.__init__
    for cls in (made({"__annotations__": {"a": int}, "__post_init__": lambda self: None}),
                made({"__annotations__": {"a": int, "b": int}, "b": dataclasses.field(default=0, init=False)}),
                made({"__annotations__": {"a": int, "b": int}, "b": dataclasses.field(default=0, kw_only=True)})):
        assert _slot_init(cls) is cls.__init__
