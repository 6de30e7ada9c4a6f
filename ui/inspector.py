"""``Inspector``: the selected node or tensor (or the paused node): what it is, where the user's
code made it, and its gradient as a summary and, when small, as values."""
import html
import linecache

import numpy as np
from PySide6.QtWidgets import QTextBrowser


def _fmt(x):
    return f"{x:.5g}" if isinstance(x, float) else str(x)


class Inspector(QTextBrowser):
    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setMinimumWidth(300)

    def show_key(self, key):
        st = self.state
        if key is None or key not in st.trace.graph:
            self.setHtml("<p style='color:#777'>Click a node to inspect it.</p>")
            return
        d = st.trace.graph.nodes[key]
        rows = [("kind", d.get("kind", "")), ("scope", d.get("scope") or "(top level)"),
                ("shape", str(tuple(d.get("shape", ())))), ("dtype", d.get("dtype", ""))]
        title = st.labels.get(key, key).replace("\n", " ")
        parts = [f"<h3 style='margin:2px'>{html.escape(title)}</h3>",
                 "<table cellspacing=2>" + "".join(f"<tr><td style='color:#666'>{k}</td><td>{html.escape(str(v))}</td></tr>"
                                                   for k, v in rows) + "</table>"]
        src = d.get("source", "")
        if src:
            file, _, rest = src.rpartition(":")
            line = rest.split(" ", 1)[0]
            text = linecache.getline(file, int(line)).strip() if line.isdigit() else ""
            parts.append(f"<p style='margin:4px 0'><b>made at</b> {html.escape(src)}<br>"
                         f"<code style='background:#f3f3f3'>{html.escape(text)}</code></p>")
        value = st.selected_value() if st.selected == key or st.selected is None else None
        if value is not None:
            s = value.summary
            parts.append("<p style='margin:4px 0'><b>gradient</b> " + ", ".join(
                f"{k} {_fmt(getattr(s, k))}" for k in ("min", "max", "mean", "norm")) +
                (f", <span style='color:#c00'>{s.nan} NaN, {s.inf} Inf</span>" if not s.finite else "") + "</p>")
            if value.array is not None and value.array.size <= 64:
                vals = np.asarray(value.array).ravel()
                parts.append("<p style='font-family:monospace'>" + html.escape(np.array2string(
                    vals, precision=4, separator=", ")) + "</p>")
        self.setHtml("".join(parts))
