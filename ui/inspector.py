"""``Inspector``: the selected node or tensor (or the paused node): what it is, where the user's
code made it and that line's text, its forward inputs and output, and the gradients of its last
backward pass (a node's grad_outputs and grad_inputs, a tensor's .grad), each as a summary and,
when small, as a table of values."""
import html

import numpy as np
from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QInputDialog, QTextBrowser

from gradviz.events import Value as _Value
from gradviz.app.graphmodel import MODULE_PREFIX
from gradviz.app.labels import short_op
from gradviz.summary import summarize
from gradviz.trace.explain import explain_node
from gradviz.trace.model import node_key, tensor_key
from gradviz.trace.sources import read_line

TABLE_MAX = 64  # elements: up to this many, values are shown as a table


def source_line(file, line):
    """The text of ``file``'s line ``line`` read from that file, or "" (only a regular file of a
    sane size is read: ``gradviz.trace.sources``)."""
    return read_line(file, line).strip()


def _fmt(x):
    return f"{x:.5g}" if isinstance(x, float) else str(x)


def _esc(x):
    return html.escape(str(x))


def dtype_name(dtype):
    """PyTorch's name for a dtype string such as '<f4' (float32)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def value_html(value, title):
    """One Value: its shape and statistics, NaN and Inf counts in red, and its elements as a table
    when there are at most ``TABLE_MAX`` of them and they were kept."""
    if value is None:
        return f"<p style='margin:2px 0'><b>{_esc(title)}</b> <span style='color:#777'>none</span></p>"
    s = value.summary
    if s.finite:
        stats = ", ".join(f"{k} {_fmt(getattr(s, k))}" for k in ("min", "max", "mean", "std", "norm"))
        bad = ""
    else:  # the norm as numpy gives it; the other statistics are of the finite values
        finite = s.numel - s.nan - s.inf
        rest = (", ".join(f"{k} {_fmt(getattr(s, k))}" for k in ("min", "max", "mean", "std", "norm"))
                if finite else "none")
        stats = f"norm {_fmt(s.l2)}; of the {finite} finite values: {rest}"
        bad = f" <span style='color:#c00'>{s.nan} NaN, {s.inf} Inf</span>"
    sampled = " <span style='color:#777'>(mean, std from a sample)</span>" if s.sampled else ""
    out = [f"<p style='margin:4px 0 0 0'><b>{_esc(title)}</b> {_esc(tuple(s.shape))} {_esc(dtype_name(s.dtype))}<br>"
           f"<span style='color:#333'>{stats}</span>{bad}{sampled}</p>"]
    a = value.array
    if a is not None and 0 < a.size <= TABLE_MAX:
        rows = np.asarray(a, dtype=complex if np.iscomplexobj(a) else float)  # complex: shown as such
        rows = rows.reshape(1, -1) if rows.ndim < 2 else rows.reshape(-1, rows.shape[-1])
        cells = "".join("<tr>" + "".join(
            f"<td align='right' style='padding:0 6px; white-space:nowrap;"
            f"{'color:#c00' if not np.isfinite(v) else ''}'>{v:.4g}</td>"
            for v in row) + "</tr>" for row in rows)
        out.append(f"<table style='font-family:monospace; background:#f6f6f6' cellspacing=0>{cells}</table>")
    return "".join(out)


def rule_html(trace, nid, pass_index, saved=()):
    """The local rule each grad_input follows, and the same rule with this node's numbers."""
    try:
        e = explain_node(trace, nid, pass_index, saved or ())
    except Exception as exc:  # a rule that cannot read these values must not blank the inspector
        return f"<p style='color:#777'>rule: cannot explain this node ({_esc(type(exc).__name__)})</p>"
    head = "<h4 style='margin:8px 0 0 0'>the local rule, with its numbers</h4>"
    if not e.known:
        return head + f"<p style='color:#777; margin:2px 0'>{_esc(e.text)}</p>"
    rows = []
    for t in e.terms:
        if t.substituted:  # the rule, then its numbers
            line = f"<code style='background:#eef6ee'>{_esc(t.substituted)}</code>"
        else:
            line = f"<code>{_esc(t.rule if t.rule.startswith(t.name) else f'{t.name} = {t.rule}')}</code>"
        if t.broadcast:
            line += f"<br><span style='color:#555'>{_esc(t.broadcast)}</span>"
        if t.matches is True:
            line += " <span style='color:#080'>= recorded grad_input ✓</span>"
        elif t.matches is False:
            line += " <span style='color:#c00'>differs from the recorded grad_input</span>"
        rows.append(f"<p style='margin:2px 0'>{line}</p>")
    return head + "".join(rows)


_G = {"float_kind": lambda x: f"{x:g}"}
JACOBIAN_MAX = 16  # elements of each input and of the output: the Jacobian is shown up to this


def _heat(J):
    """A Jacobian as a table whose cells are shaded by value (blue negative, red positive)."""
    top = float(np.abs(J).max()) or 1.0
    rows = []
    for row in J:
        cells = []
        for x in row:
            shade = int(255 - 150 * min(abs(x) / top, 1.0))
            rgb = (255, shade, shade) if x > 0 else (shade, shade, 255)
            cells.append(f"<td align='right' style='padding:0 6px; background:#{bytes(rgb).hex()}'>{x:.4g}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table style='font-family:monospace' cellspacing=1>{''.join(rows)}</table>"


TRY_V = "gradviz:try-v"  # the link that asks for another v
CHECK, CHECK_PASS = "gradviz:check", "gradviz:check-pass"  # the gradient check's links
_CHECK_COLOURS = {"fail": "#c0392b", "ok": "#2a8a3a", "unchecked": "#777", "none": "#555", "checking": "#a0522d"}


def check_html(view):
    """A node's gradient check (``gradviz.app.checks.CheckView``): its verdict and errors, where
    its hand-written backward is, and the links that run a check."""
    colour = _CHECK_COLOURS.get(view.verdict, "#555")
    out = [f"<p style='margin:6px 0 0 0'><b style='color:{colour}'>{_esc(view.headline)}</b>"]
    for line in view.lines:
        out.append(f"<br><span style='color:{colour if view.verdict == 'fail' else '#333'}'>{_esc(line)}</span>")
    if view.backward_source:
        file, _, line = view.backward_source.rpartition(":")
        text = source_line(file, int(line)) if line.isdigit() else ""
        out.append(f"<br><b>its backward</b> {_esc(view.backward_source)}"
                   + (f"<br><code style='background:#f3f3f3'>{_esc(text)}</code>" if text else ""))
    if view.can_check:
        out.append(f"<br><a href='{CHECK}'>Check this node's backward</a> (Ctrl+K) · "
                   f"<a href='{CHECK_PASS}'>Check every node of this pass</a> (Ctrl+Shift+K)")
    elif view.verdict != "checking" and view.live:
        out.append("<br><span style='color:#999'>Check this node's backward: when paused before it "
                   "(a breakpoint on it, or Step)</span>")
    out.append("</p>")
    return "".join(out)


def parse_v(text, jac):
    """The v typed as numbers (commas or spaces between them), shaped as the node's incoming
    gradients; ValueError naming what is wrong."""
    try:
        flat = np.array([float(x) for x in text.replace(",", " ").replace("[", " ").replace("]", " ").split()])
    except ValueError:
        raise ValueError(f"not numbers: {text!r}") from None
    sizes = [int(np.size(x)) for x in jac.v]
    if flat.size != sum(sizes):
        raise ValueError(f"v has {sum(sizes)} elements (as the incoming gradient), not {flat.size}")
    parts, at = [], 0
    for x, n in zip(jac.v, sizes):
        parts.append(flat[at:at + n].reshape(np.shape(x)))
        at += n
    return parts


def typed_html(jac, typed):
    """A v the user typed: v^T . J from the Jacobian beside what the node's backward, run once
    more in the program on that v, gave."""
    v, ran = typed
    flat = np.array2string(np.concatenate([np.ravel(x) for x in v]), separator=', ', formatter=_G)
    out = [f"<p style='margin:6px 0 0 0'><b>your v</b> <code>= {_esc(flat)}</code></p>"]
    for i, (J, c) in enumerate(zip(jac.blocks, jac.vjp(v))):
        if J is None:
            continue
        got = ran[i] if i < len(ran) else None
        same = got is not None and np.allclose(np.ravel(got), c, rtol=1e-4, atol=1e-6)
        mark = ("<span style='color:#080'>✓</span>" if same else "<span style='color:#c00'>differs</span>")
        backward = "-" if got is None else _esc(np.array2string(np.ravel(got), separator=', ', formatter=_G))
        out.append(f"<p style='margin:2px 0'><code>v^T . J = {_esc(np.array2string(c, separator=', ', formatter=_G))}"
                   f"</code> for input {i}; the node's backward run again on it: <code>{backward}</code> {mark}</p>")
    return "".join(out)


def jacobian_html(jac, typed=None):
    """Each input's Jacobian as a heatmap, the incoming v beside it, and v^T . J checked against
    the node's grad_inputs; ``typed``: (v, what the node's backward gave on it) for a v the user
    typed, and a link to type one."""
    v = np.concatenate([np.ravel(x) for x in jac.v])
    out = ["<h4 style='margin:8px 0 0 0'>the Jacobian behind the VJP</h4>",
           f"<p style='margin:2px 0'><code>v = {_esc(np.array2string(v, separator=', ', formatter=_G))}</code> "
           "<span style='color:#555'>(the incoming gradient; one row of J per element of it)</span></p>"]
    for i, (J, c, ok) in enumerate(zip(jac.blocks, jac.vjp(), jac.matches)):
        if J is None:
            continue
        mark = ("<span style='color:#080'>= grad_input ✓</span>" if ok else
                "<span style='color:#c00'>differs from grad_input</span>")
        out.append(f"<p style='margin:4px 0 0 0'><b>J for input {i}</b> ({J.shape[0]} x {J.shape[1]})</p>"
                   + _heat(J) + f"<p style='margin:2px 0'><code>v^T . J = "
                   f"{_esc(np.array2string(c, separator=', ', formatter=_G))}"
                   f"</code> {mark}</p>")
    if typed is not None:
        out.append(typed_html(jac, typed))
    out.append(f"<p style='margin:2px 0'><a href='{TRY_V}'>Try another v…</a> "
               "<span style='color:#555'>(runs this node's backward once more, nothing else)</span></p>")
    return "".join(out)


class Inspector(QTextBrowser):
    checkAsked = Signal(str)  # "node" or "pass": a check link was clicked

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setMinimumWidth(320)
        self._key = None
        self._typed = None  # (pause, v, what the node's backward gave on it): a v the user typed
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._link)

    def _link(self, url: QUrl):
        if url.toString() in (CHECK, CHECK_PASS):
            self.checkAsked.emit("node" if url.toString() == CHECK else "pass")
            return
        if url.toString() == TRY_V:
            text, ok = QInputDialog.getText(self, "gradviz", "v (one number per element of the incoming gradient):")
            if ok:
                self.try_v(text)

    def try_v(self, text):
        """Run the paused node's backward once more on the v in ``text`` and show v^T . J beside
        it; returns an error message, or None."""
        jac = self._jacobian()
        if jac is None:
            return "not paused before a small backward node"
        try:
            v = parse_v(text, jac)
            ran = self.state.debugger.vjp(v, timeout=5.0)
        except Exception as exc:  # noqa: BLE001 (a bad v, or the program gone: said, not raised)
            self._typed = None
            self.setToolTip(f"v not used: {exc}")
            return str(exc)
        self._typed = (self.state.pause, v, ran)
        self.show_key(self._key)
        return None

    def show_key(self, key):
        self._key = key
        st = self.state
        trace = st.trace
        if key is not None and key.startswith(MODULE_PREFIX):
            self.setHtml(self._box(key))
            return
        if key is None or key not in trace.graph:
            self.setHtml("<p style='color:#777'>Click a node to inspect it.</p>")
            return
        d = trace.graph.nodes[key]
        title = st.labels.get(key, key).replace("\n", " ")
        rows = [("kind", d.get("kind", "")), ("scope", d.get("scope") or "(top level)")]
        if d.get("dtype"):
            rows += [("shape", str(tuple(d.get("shape", ())))), ("dtype", dtype_name(d["dtype"]))]
        else:  # made where no hook saw its output: inside a fused op (lstm_cell), or before recording
            rows.append(("output", "not seen (made inside another op, or before recording began)"))
        parts = [f"<h3 style='margin:2px'>{_esc(title)}</h3>",
                 "<table cellspacing=2>" + "".join(f"<tr><td style='color:#666'>{k}</td><td>{_esc(v)}</td></tr>"
                                                   for k, v in rows) + "</table>"]
        src = d.get("source", "")
        if src:
            file, _, rest = src.rpartition(":")
            line = rest.split(" ", 1)[0]
            text = self._source_text(trace, file, int(line)) if line.isdigit() else ""
            parts.append(f"<p style='margin:4px 0'><b>made at</b> {_esc(src)}<br>"
                         f"<code style='background:#f3f3f3; white-space:pre-wrap'>{_esc(text)}</code></p>")
        checks = getattr(st, "checks", None)  # (a recording has no program to check in: no section)
        if key.startswith("n") and checks is not None and st.debugger is not None and d.get("kind") == "grad_fn":
            parts.append(check_html(checks.view(key)))
        if key.startswith("n"):
            parts += self._node(trace, int(key[1:]))
        else:
            parts += self._tensor(trace, int(key[1:]))
        self.setHtml("".join(parts))

    @staticmethod
    def _source_text(trace, file, line):
        """The line's text as the trace carries it; read from the file only for a trace without it
        (one recorded before traces carried their source text)."""
        text = trace.source_text(file, line)
        return text.strip() if text is not None else source_line(file, line)

    def _box(self, key):
        """A collapsed module: its scope and what it holds."""
        drawing = self.state.graph_model.drawing()
        members = drawing.members.get(key, ())
        kinds = {}
        for k in members:
            kind = self.state.graph.nodes[k].get("kind", "") if k in self.state.graph else ""
            kinds[kind] = kinds.get(kind, 0) + 1
        scope = key[len(MODULE_PREFIX):]
        rows = "".join(f"<tr><td style='color:#666'>{_esc(k)}</td><td>{n}</td></tr>" for k, n in sorted(kinds.items()))
        return (f"<h3 style='margin:2px'>module {_esc(scope)}</h3>"
                f"<p>{len(members)} nodes, collapsed into one box.</p><table cellspacing=2>{rows}</table>"
                "<p style='color:#777'>Double-click the box (or right-click, Expand) to see and inspect its nodes.</p>")

    def _name(self, trace, tid):
        t = trace.tensors.get(tid)
        return (t.name if t is not None and t.name else None) or tensor_key(tid)

    def _node(self, trace, nid):
        node = trace.nodes.get(nid)
        if node is None:
            return []
        parts = []
        if node.kind == "grad_fn":
            parts.append("<h4 style='margin:8px 0 0 0'>forward</h4>")
            for i, tid in enumerate(node.inputs):
                t = trace.tensors.get(tid)
                src = trace.maker(tid)
                value = t.value if t is not None else src.value if src is not None else None
                named = t is not None and t.name
                what = self._name(trace, tid) if named or src is None else f"output of {short_op(src.op)}"
                parts.append(value_html(value, f"input {i}: {what}"))
            parts.append(value_html(node.value, "output"))
        saved = []
        if node_key(nid) == self.state.current:
            saved = self.state.saved_tensors()
            if saved:
                parts.append("<h4 style='margin:8px 0 0 0'>saved tensors (what its backward reads)</h4>")
                for name, array in saved:
                    parts.append(value_html(_Value(summarize(array), array), name))
        ran = trace.last_run(nid)
        if ran is None:
            arrived = self._arrived(trace, nid)
            if arrived:  # the pass under way has sent it gradients: what it will sum and use
                parts.append("<h4 style='margin:8px 0 0 0'>not run yet; gradients arrived so far</h4>")
                for src, v in arrived:
                    parts.append(value_html(v, f"from {src}"))
            else:
                parts.append("<p style='color:#777'>Not run in backward yet.</p>")
            return parts
        parts.insert(0, rule_html(trace, nid, ran.index, saved))  # first: the why of the numbers below
        if node_key(nid) == self.state.current and node.kind == "grad_fn":
            jac = self._jacobian()
            if jac is not None:
                typed = self._typed[1:] if self._typed is not None and self._typed[0] is self.state.pause else None
                parts.insert(1, jacobian_html(jac, typed))
        parts.append(f"<h4 style='margin:8px 0 0 0'>backward pass {ran.index}</h4>")
        for i, v in enumerate(ran.grad_outputs[nid]):
            parts.append(value_html(v, f"grad_output {i}"))
        nexts = node.next_nodes
        for i, v in enumerate(ran.grad_inputs.get(nid, ())):
            to = trace.nodes.get(nexts[i]) if i < len(nexts) and nexts[i] is not None else None
            dest = f" → {short_op(to.op)} ({node_key(to.id)})" if to is not None else ""
            parts.append(value_html(v, f"grad_input {i}{dest}"))
        if node.kind == "accumulate_grad" and node.output in ran.accumulated:
            contribution, grad = ran.accumulated[node.output]
            parts.append(value_html(grad, f"{self._name(trace, node.output)}.grad after the pass"))
        return parts

    def _jacobian(self):
        """The paused node's Jacobian, computed once per pause in the child (a VJP per output
        element), or None: not paused before a small backward node."""
        p, dbg = self.state.pause, getattr(self.state, "debugger", None)
        if p is None or dbg is None or dbg.state != "paused" or p.phase != "backward" or p.node is None \
                or getattr(self.state, "time", None) is not None:
            return None
        cached = getattr(self, "_jac", None)
        if cached is None or cached[0] is not p:
            try:
                jac = dbg.jacobian(max_elements=JACOBIAN_MAX, timeout=5.0)
            except Exception:  # too large, or a node whose backward cannot be run again
                jac = None
            self._jac = cached = (p, jac)
        return cached[1]

    @staticmethod
    def _arrived(trace, nid):
        """[(sender, Value)]: what the latest backward pass has sent node ``nid`` so far."""
        if not trace.passes:
            return []
        out = []
        for src, grad_inputs in list(trace.passes[-1].grad_inputs.items()):
            sender = trace.nodes.get(src)
            if sender is None:
                continue
            for i, nxt in enumerate(sender.next_nodes):
                if nxt == nid and i < len(grad_inputs) and grad_inputs[i] is not None:
                    out.append((f"{short_op(sender.op)} ({node_key(src)})", grad_inputs[i]))
        return out

    def _tensor(self, trace, tid):
        t = trace.tensors.get(tid)
        parts = ["<h4 style='margin:8px 0 0 0'>value</h4>", value_html(t.value if t is not None else None, "value")]
        ran = trace.last_accumulated(tid)
        if ran is not None:
            contribution, grad = ran.accumulated[tid]
            parts.append(f"<h4 style='margin:8px 0 0 0'>.grad (backward pass {ran.index})</h4>")
            parts.append(value_html(contribution, "this pass's contribution"))
            parts.append(value_html(grad, ".grad"))
        else:
            parts.append("<p style='color:#777'>No gradient accumulated yet.</p>")
        return parts
