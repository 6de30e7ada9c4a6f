"""Turning a framework's raw graph callbacks into events. An adapter (gradviz's engine, later the
PyTorch adapter) tells the producer what happened in its own terms; the producer gives ids, finds
the user's source line, the module scope and the leaves' names, counts iterations and passes, and
sends events to its sink. Everything framework-specific goes through the adapter's few methods."""
from __future__ import annotations

import os
import sys
import weakref

from gradviz import events as ev
from gradviz.trace.sources import read_line
from gradviz.summary import PendingSummary

_GRADVIZ_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the gradviz package
_DEMOS_DIR = os.path.join(_GRADVIZ_DIR, "demos", "")


class _PerLeaf:
    """What the producer keeps about a leaf (tensor id -> value), for as long as that tensor lives:
    entries of tensors that died are let go from time to time, and an id's entry only answers for
    the tensor it was put with."""

    def __init__(self):
        self._entries = {}  # tensor id -> (value, weak reference to the tensor)
        self._purge_at = 64

    def __len__(self):
        return len(self._entries)

    def get(self, tid, tensor):
        entry = self._entries.get(tid)
        return entry[0] if entry is not None and entry[1]() is tensor else None

    def put(self, tid, tensor, value):
        if len(self._entries) >= self._purge_at:
            self._entries = {k: e for k, e in self._entries.items() if e[1]() is not None}
            self._purge_at = 2 * len(self._entries) + 64
        try:
            self._entries[tid] = (value, weakref.ref(tensor))
        except TypeError:  # not weak-referenceable: nothing kept
            pass


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _path_in_object(module, owner):
    """Where ``owner`` holds ``module`` in its attributes: ``attr``, ``attr[2]``, ``attr['k']``, or
    ``attr.sub`` inside a module it holds; None if nowhere."""
    try:
        attrs = vars(owner)
    except TypeError:
        return None
    return _path_in(module, attrs.items())[0]


def _path_in_frame(module, frame):
    """The user's name for ``module`` in ``frame`` (its locals, then its globals), and whether that
    is a variable holding it (rather than a place in a list, a dict or another module)."""
    if frame is None:
        return None, False
    for scope in (frame.f_locals, frame.f_globals):
        path, plain = _path_in(module, list(scope.items()))
        if path is not None:
            return path, plain
    return None, False


# Where the frameworks' Module.named_parameters live: a module class whose method comes from
# elsewhere overrides it, and its parameters are asked for through it.
_FRAMEWORK_MODULES = ("torch.nn.modules.module", "gradviz.engine.nn.module")

# Events held back for pending summaries are let go at least this often (a forward-only program,
# inference, has no pass end): the device's rows and the held events stay bounded.
FLUSH_EVERY = 4096

_LONGEST = 10_000  # lists and dicts longer than this are not searched (a data set, say)


def _path_in(module, items):
    """``module``'s place among (name, value) pairs: an element of a list, tuple or dict first (a
    loop's variable names each in turn, the list each for good), a part of a module in hand, the
    value itself, an attribute of an object in hand (``self.head`` of a trainer, say)."""
    direct = part = attr = None
    for k, v in items:
        if v is module:
            if k != "self" and direct is None:
                direct = k
            continue
        t = type(v)
        if t is list or t is tuple:
            if len(v) <= _LONGEST:
                for i, x in enumerate(v):
                    if x is module:
                        return f"{k}[{i}]", False
        elif t is dict:
            if len(v) <= _LONGEST:
                for key, x in v.items():
                    if x is module:
                        return f"{k}[{key!r}]", False
        elif part is None and not isinstance(v, type):
            try:
                walk = getattr(v, "named_modules", None)
                sub = next((n for n, m in walk() if m is module), None) if callable(walk) else None
            except Exception:  # not a module after all
                sub = None
            if sub:
                part = sub if k == "self" else f"{k}.{sub}"
            elif attr is None and k == "self" and not callable(walk):
                a = _path_in_object(module, v)
                if a is not None:
                    attr = f"self.{a}"
    if part is not None:
        return part, False
    if direct is not None:
        return direct, True
    return attr, False


class Producer:
    """Events go to ``sink`` in the order they happen, each with its values' summaries complete.
    A summary made later (on a GPU: ``Adapter.summarize_later``) holds its event back, and every
    event after it, in ``_held``, until ``flush`` resolves them: at the end of each backward pass,
    every ``FLUSH_EVERY`` events, when recording stops and before a debugger pauses."""

    keep_forward = False  # keep what each node's forward read, to run it again (a debugger's gradient check)
    # Something happens before a node's backward runs (a debugger pauses there): an adapter then
    # tells node_entered from a hook that runs first; else it may tell node_entered and node_exited
    # together once the node ran, with the same grad_outputs (one hook a node instead of two).
    acts_before_nodes = False

    def __init__(self, adapter, sink, keep_arrays=True):
        self.adapter = adapter
        self._deliver = sink
        self._held = []  # events waiting for pending summaries, in order
        self._pending = False  # a PendingSummary was made since the last flush
        self.keep_arrays = keep_arrays
        self._next_id = 0
        self.iteration = -1
        self._new_iteration = True
        self.optimizer_known = False  # iterations by optimizer steps (else by backward passes)
        self._in_step = 0  # optimizer steps under way (LBFGS runs forward and backward inside one)
        self.pass_index = -1
        self.step_index = -1
        self._described = {}  # tensor id -> iteration last described in
        self._accumulators = _PerLeaf()  # a leaf's tensor id -> the id of its AccumulateGrad node
        # id(memory owner) -> (weak reference to it, Value, snapshot): one summary per array within a
        # pass. Weak, so that recording never keeps a gradient alive longer than the program would:
        # held arrays make every later allocation fresh memory, which costs more than the summaries.
        self._values = {}
        self._module_stack = []
        self._sources = {}  # (file, code, line) -> Source (code objects compare equal across files)
        # (id(code), instruction offset) -> (code, Source): a frame's line is found by decoding
        # its code's line table, which costs more the further into the code (20 µs at line 2,000
        # of a flat script), each node made; an instruction's line never changes. The code is
        # held, so its id is not another's while the entry lives.
        self._sources_at = {}
        self._texts_told = {}  # (file, line) -> the text last told of that line (SourceText)
        self._module_names = {}
        self._plain_params = {}  # a module class -> whether its named_parameters is its framework's own
        self._param_names = {}  # id(parameter) -> (parameter, its name)
        self._param_by_name = {}  # a parameter's name -> the parameter
        self._user_code = (_DEMOS_DIR,)  # gradviz's demos are user programs
        self._rank = None  # the RankInfo last told
        cls = type(self)
        if cls.node_entered is not Producer.node_entered or cls.node_exited is not Producer.node_exited:
            self.node_ran = self._node_ran_apart  # (a subclass that acts on each: told through them)
        self.refresh_skip_dirs()

    def refresh_skip_dirs(self):
        """Frames in these folders are not the user's: gradviz's own, and the frameworks'."""
        self._skip = tuple(os.path.join(p, "") for p in (_GRADVIZ_DIR,) + tuple(self.adapter.source_dirs))
        self._skip_file = {}  # file name -> whether its frames are skipped (asked for every node made)

    # -- events out ----------------------------------------------------------------------------
    def sink(self, e):
        """Send ``e`` on now, or after the events held before it once their summaries are made."""
        if self._pending:
            self._held.append(e)
            if len(self._held) >= FLUSH_EVERY:
                self.flush()
        else:
            self._deliver(e)

    def flush(self):
        """Resolve every pending summary (one copy from each device) and send the held events on,
        in order. Cheap when nothing is pending."""
        if not self._pending:
            return
        self._pending = False
        self.adapter.flush()
        held, self._held = self._held, []
        for e in held:
            self._deliver(e)

    # -- ids -----------------------------------------------------------------------------------
    def _new_id(self):
        self._next_id += 1
        return self._next_id

    @property
    def adapter(self):
        return self._adapter

    @adapter.setter
    def adapter(self, adapter):
        # An object's id, or None: each adapter keeps its own, beside the objects (one adapter, one
        # producer). Bound here, where the adapter changes (PyTorch's attaching and detaching), and
        # not in a method: this runs for every tensor and node met.
        self._adapter = adapter
        self._lookup = adapter.get_tag
        # The adapter that answers for a value of each type (MultiAdapter: the engine's or
        # PyTorch's), resolved once per type: ``value`` runs for every gradient of a pass.
        self._value_owners = {}
        self._value_owner_of = getattr(adapter, "value_owner", None)
        self._node_types = {}  # type of graph node or tensor -> (tag getter, adapter, tag setter): _node_ops

    def _assign(self, obj):
        self._next_id += 1
        i = self._next_id
        self._adapter.set_tag(obj, i)
        return i

    def _value_adapter(self, x):
        """The adapter whose ``memory``, ``summarize_later`` and ``to_numpy`` take ``x``."""
        cls = type(x)
        owner_of = self._value_owner_of
        a = self._value_owners[cls] = self._adapter if owner_of is None else owner_of(cls)
        return a

    # -- values --------------------------------------------------------------------------------
    def value(self, x, copy=False):
        """The Value of an array (numpy, or the framework's own tensor). Within a pass, one summary
        serves every view of the same memory (a gradient handed from node to node, a weight and its
        transpose)."""
        if x is None:
            return None
        a = self._value_owners.get(type(x))
        if a is None:
            a = self._value_adapter(x)
        owner, owner_numel, numel, shape, version = a.memory(x)
        key = id(owner)
        hit = self._values.get(key)
        array = None
        if hit is not None and hit[0]() is owner and hit[3] == version and hit[1].summary.numel == numel:
            cached, snapshot = hit[1], hit[2]
            if cached.summary.shape == shape and (not copy or not self.keep_arrays or snapshot is not None):
                return cached
            summary = cached.summary if cached.summary.shape == shape else cached.summary.with_shape(shape)
            if snapshot is not None and self.keep_arrays:
                # The same view, onto the copy already taken of this memory: no second copy.
                array = a.view_onto(x, owner, snapshot)
        else:
            summary = a.summarize_later(x)
        if array is None and self.keep_arrays:
            array = a.to_numpy(x, copy)
        v = ev.Value(summary, array)
        if array is x:  # the program's own array, no copy: kept right if it is written later
            a.kept(v)
        if type(summary) is PendingSummary:
            summary.attach(v)
            self._pending = True
        if owner_numel == numel:
            # Copies too: a parameter described (copied) serves its transpose made next. The
            # cache is emptied at every pass and iteration, before values can change in place.
            snapshot = array if copy and self.keep_arrays and x is owner else None
            try:
                self._values[key] = (weakref.ref(owner), v, snapshot, version)
            except TypeError:  # a numpy scalar: nothing to share
                pass
        return v

    def memory_written(self, owner):
        """The program is about to write into ``owner``'s memory: a summary made of it before does
        not serve what is read of it next (a framework without version counters on its arrays,
        gradviz's engine, tells this)."""
        self._values.pop(id(owner), None)

    # -- where the user is ---------------------------------------------------------------------
    def _user_frame(self):
        f = sys._getframe(2)
        known = self._skip_file
        while f is not None:
            name = f.f_code.co_filename
            skipped = known.get(name)
            if skipped is None:
                skipped = known[name] = name.startswith(self._skip) and not name.startswith(self._user_code)
            if not skipped:
                break
            f = f.f_back
        return f

    def _source(self, frame):
        """The Source of ``frame``'s line; one object per line, reused each iteration."""
        if frame is None:
            return None
        code = frame.f_code
        at = (id(code), frame.f_lasti)
        hit = self._sources_at.get(at)
        if hit is not None and hit[0] is code:
            return hit[1]
        line = frame.f_lineno
        key = (code.co_filename, code, line)
        src = self._sources.get(key)
        if src is None:
            src = self._sources[key] = ev.Source(code.co_filename, line, code.co_name)
            self._tell_text(src)
        self._sources_at[at] = (code, src)
        return src

    def _tell_text(self, src):
        """The text of ``src``'s line, told once before the first event that names it: the trace
        then shows the code wherever it is opened, without the file."""
        where = (src.file, src.line)
        told = self._texts_told.get(where)
        # A line told already and met again in new code: its module was reloaded (a notebook's
        # autoreload), perhaps edited: read afresh, and told again if its text changed.
        text = read_line(src.file, src.line, fresh=told is not None)
        if text and text != told:
            self._texts_told[where] = text
            self.sink(ev.SourceText(src.file, src.line, text))

    def module_entered(self, module):
        if module not in self._module_names:
            self._name_modules(module)
        self._module_stack.append(module)
        # Frozen parameters make no graph nodes; describe them anyway, once an iteration. (A
        # module's own, from its ``_parameters`` where it has that dict, as PyTorch's modules and
        # the engine's do: named_parameters(recurse=False) costs eight times that, each call;
        # through named_parameters where a class of the program's overrides it.)
        own = getattr(module, "_parameters", None)
        cls = type(module)
        plain = self._plain_params.get(cls)
        if plain is None:
            plain = self._plain_params[cls] = getattr(getattr(cls, "named_parameters", None), "__module__", None) \
                in _FRAMEWORK_MODULES
        for p in (own.values() if plain and isinstance(own, dict) else
                  (q for _, q in module.named_parameters(recurse=False))):
            if p is not None and not p.requires_grad:
                self._start_iteration_if_due()
                self._tensor_id(p, None)

    def _name_modules(self, module):
        """Names for ``module``, met for the first time, its submodules and their parameters. A
        module called from within another is named under it. One the program calls itself (a
        root) is named by the user's variable that holds it (``lin1``, ``blocks[2]``, or
        ``model.encoder`` for a part of a module in hand), its parameters ``lin1.weight``,
        ``blocks[2].fc1.weight``; except a model held by a variable of its own, whose parameters
        keep PyTorch's names (``fc1.weight``) where no other parameter has them. No two
        parameters are given one name."""
        names = self._module_names
        stack = self._module_stack
        if stack:
            root = stack[0]
            self._name_tree(root, names[root])  # (submodules made since it was named)
            if module in names:
                return
            parent = stack[-1]
            base = _join(names.get(parent, ""), _path_in_object(module, parent) or type(module).__name__)
            self._name_tree(module, self._free_prefix(module, [base]))
            return
        path, plain = _path_in_frame(module, self._user_frame())
        candidates = [""] if plain and next(iter(module.children()), None) is not None else []
        self._name_tree(module, self._free_prefix(module, candidates + [path or type(module).__name__]))

    def _free_prefix(self, module, candidates):
        """The first of ``candidates`` (then the last numbered: ``lin#2``) under which none of
        ``module``'s parameters not yet named would take another parameter's name."""
        fresh = [(name, p) for name, p in module.named_parameters() if self._param_name(p) is None]
        taken = self._param_by_name
        candidates = list(candidates)
        last, k = candidates[-1], 1
        while True:
            for prefix in candidates:
                if all(taken.get(_join(prefix, name), p) is p for name, p in fresh):
                    return prefix
            k += 1
            candidates = [f"{last}#{k}"]

    def _name_tree(self, module, prefix):
        names = self._module_names
        for name, m in module.named_modules():
            names.setdefault(m, _join(prefix, name))
        for name, p in module.named_parameters():
            if self._param_name(p) is None:
                full = _join(prefix, name)
                self._param_names[id(p)] = (p, full)
                self._param_by_name.setdefault(full, p)

    def _param_name(self, p):
        named = self._param_names.get(id(p))
        return named[1] if named is not None and named[0] is p else None

    def module_exited(self, module):
        if self._module_stack:
            self._module_stack.pop()

    def _scope(self):
        return self._module_names.get(self._module_stack[-1], "") if self._module_stack else ""

    # -- forward -------------------------------------------------------------------------------
    def _start_iteration_if_due(self):
        if self._new_iteration:
            self._new_iteration = False
            self.iteration += 1
            self._values.clear()
            self.sink(ev.IterationStarted(self.iteration))

    def tensor_seen(self, tid, tensor):
        """Called with every tensor given an id; a debugger session keeps weak references."""

    def _tensor_id(self, tensor, frame):
        """The id of an input tensor, describing it first if it is a leaf not yet described in
        this iteration. Every iteration reads its leaves afresh: nothing a framework offers
        tells cheaply and surely that a tensor is unchanged (PyTorch's version counter misses
        fused optimizers' steps and writes through ``.data``, which sparse updates and EMA
        teachers use), and a stale value would be a lie in a debugger."""
        get, a, set_tag = self._node_types.get(type(tensor)) or self._node_ops(type(tensor))
        tid = get(tensor)
        if tid is None:
            self._next_id = tid = self._next_id + 1
            set_tag(tensor, tid)
            self.tensor_seen(tid, tensor)
        if not a.has_grad_fn(tensor) and self._described.get(tid) != self.iteration:
            self._described[tid] = self.iteration
            self.sink(self._describe(tensor, tid, frame))
        return tid

    def _describe(self, tensor, tid, frame):
        a = self.adapter
        shape, dtype, requires_grad = a.tensor_meta(tensor)
        named = self._param_names.get(id(tensor))
        name = named[1] if named is not None and named[0] is tensor else a.given_name(tensor)
        is_param = a.is_parameter(tensor)
        if name is None and frame is not None:
            name = next((k for k, v in frame.f_locals.items() if v is tensor), None)
        kind = ("parameter" if requires_grad else "frozen") if is_param else "leaf" if requires_grad else "input"
        return ev.TensorDescribed(tid, name, shape, dtype, requires_grad, kind,
                                  self.value(a.array(tensor), copy=True))

    def node_created(self, node, inputs, output):
        if self._new_iteration:
            self._start_iteration_if_due()
        # (a node and the tensor it made are one framework's: its adapter answers for both)
        _, a, set_tag = self._node_types.get(type(node)) or self._node_ops(type(node))
        frame = self._user_frame()
        tensor_id = self._tensor_id
        input_ids = tuple([tensor_id(t, frame) for t in inputs])
        source = self._source(frame)
        node_id = self._node_id
        next_ids = tuple([None if n is None else node_id(n, source) for n in a.next_nodes(node)])
        self._next_id = nid = self._next_id + 1
        set_tag(node, nid)
        out_id = self._assign(output)
        self.tensor_seen(out_id, output)
        shape, dtype, _ = a.tensor_meta(output)
        self.sink(ev.NodeCreated(nid, a.op_name(node), "grad_fn", self.iteration, input_ids, out_id, next_ids,
                                 shape, dtype, self._scope(), source, self._output_value(output, a)))

    def _output_value(self, output, a=None):
        """A forward output that is a view (a weight's transpose, say) is copied when kept: the
        memory it shows may change in place later (an optimizer step), and the record must not."""
        if a is None:
            a = self._adapter
        x = a.array(output)
        return self.value(x, copy=self.keep_arrays and a.is_view(x))

    def _node_ops(self, cls):
        """(the tag getter, the adapter, the tag setter) for graph nodes, and the tensors they take
        and make, of type ``cls``, resolved once per type."""
        a = self._adapter
        owner = getattr(a, "node_owner", None)
        ops = self._node_types[cls] = ((a.get_tag, a, a.set_tag) if owner is None else
                                       (a.tag_getter(cls), owner(cls), a.tag_setter(cls)))
        return ops

    def _node_id(self, node, source=None):
        """The id of a node met as a next node or in backward; nodes made before recording began,
        and AccumulateGrad nodes (made lazily, once per leaf), are announced on first sight, with
        ``source`` the line that first used them."""
        ops = self._node_types.get(type(node))
        if ops is None:
            ops = self._node_ops(type(node))
        nid = ops[0](node)
        return self._announce(node, source) if nid is None else nid

    def _announce(self, node, source):
        # Most nodes of a program of small ops are met here (those a framework's fused op makes
        # inside itself, which no mode sees): each node's next nodes are asked for once.
        types, node_ops = self._node_types, self._node_ops
        # Iterative post-order: announce a node only after the nodes it sends gradients to.
        stack, order = [(node, None)], []
        pending = set()
        while stack:
            n, nexts = stack.pop()
            ops = types.get(type(n)) or node_ops(type(n))
            if nexts is not None:  # its next nodes announced: its turn (met once: see pending)
                self._next_id = nid = self._next_id + 1
                ops[2](n, nid)
                order.append((n, ops[1], nexts, nid))
                continue
            if id(n) in pending or ops[0](n) is not None:
                continue
            pending.add(id(n))
            nexts = ops[1].next_nodes(n)
            stack.append((n, nexts))
            for m in nexts:
                if m is not None and (types.get(type(m)) or node_ops(type(m)))[0](m) is None:
                    stack.append((m, None))
        scope = None
        for n, a, nexts, nid in order:
            var = a.accumulate_variable(n)
            if var is not None:
                tid = self._tensor_id(var, None)
                known = self._accumulators.get(tid, var)
                if known is not None:
                    # PyTorch keeps a leaf's AccumulateGrad only while a graph holds it, and makes
                    # a new one for the next iteration's graph: the same node as far as the
                    # vocabulary goes (its id lives as long as the leaf), so no new announcement.
                    a.set_tag(n, known)
                    continue
                self._accumulators.put(tid, var, nid)
                self.sink(ev.NodeCreated(nid, a.op_name(n), "accumulate_grad", self.iteration, (tid,),
                                         tid, (), *self._adapter.tensor_meta(var)[:2], self._param_scope(var),
                                         source))
            else:
                if scope is None:
                    scope = self._scope()
                # (each next node has its id by now: it was announced before, or just above)
                self.sink(ev.NodeCreated(nid, a.op_name(n), "grad_fn", self.iteration, (), None,
                                         tuple([None if m is None else (types.get(type(m)) or node_ops(type(m)))[0](m)
                                                for m in nexts]),
                                         scope=scope, source=source))
        return (types.get(type(node)) or node_ops(type(node)))[0](node)

    def _param_scope(self, tensor):
        named = self._param_names.get(id(tensor))
        return named[1].rpartition(".")[0] if named is not None and named[0] is tensor else ""

    # -- backward ------------------------------------------------------------------------------
    def backward_started(self, roots, grads, planned=None):
        """``planned``: the nodes the pass will run, when fewer than the roots reach (None: all)."""
        self._start_iteration_if_due()
        self.pass_index += 1
        self._values.clear()
        root_ids = tuple(self._node_id(r) for r in roots)
        self.sink(ev.BackwardStarted(self.pass_index, self.iteration, root_ids, tuple(self.value(g) for g in grads)))
        if planned is not None:
            self.sink(ev.PassPlanned(self.pass_index, tuple(self._node_id(n) for n in planned)))

    def node_entered(self, node, grad_outputs):
        """Returns the gradients' Values (a hook that needs them later keeps these, not the
        tensors: PyTorch copies a gradient into ``.grad`` instead of taking it while anyone else
        holds it). Not a hook itself: a PyTorch pre-hook's return value replaces the gradients."""
        values = tuple(map(self.value, grad_outputs))
        self.sink(ev.NodeEntered(self.pass_index, self._node_id(node), values))
        return values

    def node_exited(self, node, grad_inputs):
        self.sink(ev.NodeExited(self.pass_index, self._node_id(node), tuple(map(self.value, grad_inputs))))

    def node_ran(self, node, grad_outputs, grad_inputs):
        """``node_entered`` and ``node_exited`` told together once the node ran (where nothing acts
        before a node runs: ``acts_before_nodes`` false), the same events in the same order, with
        one lookup of its id. A subclass that overrides either of the two gets them called."""
        value = self.value
        values = tuple(map(value, grad_outputs))
        nid = self._node_id(node)
        sink = self.sink
        sink(ev.NodeEntered(self.pass_index, nid, values))
        values = tuple(map(value, grad_inputs))
        sink(ev.NodeExited(self.pass_index, nid, values))

    def _node_ran_apart(self, node, grad_outputs, grad_inputs):
        self.node_entered(node, grad_outputs)
        self.node_exited(node, grad_inputs)

    def grad_accumulated(self, node, tensor, contribution, grad, fresh=False):
        """``contribution``: the gradient accumulated, or its Value when the caller has that.
        ``fresh``: ``.grad`` was None before, so it now holds exactly ``contribution``, and one
        Value serves both. (PyTorch's ``.grad`` may then be that very tensor, written in place
        later by the next accumulation or a clipping: the record stays right because a kept
        torch value is always a copy, ``TorchAdapter.to_numpy``, and the engine's ``.grad`` is a
        copy of the gradient it hands over; a kept engine array is copied before any write
        into it, ``EngineAdapter.kept``.)"""
        given = contribution if type(contribution) is ev.Value else self.value(contribution)
        self.sink(ev.GradAccumulated(self.pass_index, self._node_id(node), self._tensor_id(tensor, None),
                                     given, given if fresh else self.value(grad, copy=True)))

    def nodes_made_by_backward(self, nodes):
        """Graph nodes a backward pass made (``autograd.grad(create_graph=True)``'s gradients'
        graph), announced with the line that ran the pass."""
        source = self._source(self._user_frame())
        for n in nodes:
            self._node_id(n, source)

    def backward_finished(self):
        self._values.clear()
        if not self.optimizer_known and not self._in_step:
            self._new_iteration = True  # a program without an optimizer: an iteration a backward pass
        self.sink(ev.BackwardFinished(self.pass_index))
        self.flush()  # a pass's summaries fetched at its end: one wait on a device per pass

    # -- data-parallel ranks --------------------------------------------------------------------
    def rank_known(self, rank, world_size, local_rank, backend=""):
        """This process is ``rank`` of a job (told again when more is known, e.g. the backend)."""
        e = ev.RankInfo(int(rank), int(world_size), int(local_rank), backend or "")
        if self._rank is None or (self._rank.rank, self._rank.world_size, self._rank.local_rank,
                                  self._rank.backend) != (e.rank, e.world_size, e.local_rank, e.backend):
            self._rank = e
            self.sink(e)

    def bucket_reduced(self, bucket, params, after_node=None):
        """DDP launched the all-reduce of ``bucket`` (holding ``params``, tensors) after
        ``after_node`` (an AccumulateGrad node) ran, or at the pass's end (None)."""
        self.sink(ev.BucketReduced(self.pass_index, int(bucket), tuple(self._tensor_id(p, None) for p in params),
                                   None if after_node is None else self._node_id(after_node)))

    def grads_synchronized(self, pairs):
        """DDP's all-reduce left these ``(tensor, grad)``: each ``tensor.grad`` at the end of the pass."""
        self._values.clear()  # the all-reduce wrote the gradients' memory: no summary of before serves
        for tensor, grad in pairs:
            self.sink(ev.GradSynchronized(self.pass_index, self._tensor_id(tensor, None),
                                          self.value(grad, copy=True)))

    # An iteration is an optimizer step when the program has an optimizer (set ``optimizer_known``
    # as soon as it is known: an adapter that can tell before the first step does), else a
    # backward pass: LBFGS's closure, run many times inside one step, or a gradient penalty's
    # second backward pass, are one iteration with the step.
    def optimizer_step_started(self):
        """An optimizer's step begins (what it runs, LBFGS's closure, is a part of it)."""
        self.optimizer_known = True
        self._in_step += 1

    def optimizer_step(self, name, updates, lr=None):
        """``updates``: (tensor, L2 norm of its change) pairs."""
        self.optimizer_known = True
        self._in_step = max(0, self._in_step - 1)
        self.step_index += 1
        self._new_iteration = True
        ids = tuple(self._tensor_id(t, None) for t, _ in updates)
        self.sink(ev.OptimizerStep(self.step_index, name, ids, tuple(float(n) for _, n in updates), lr))
