"""``MainWindow``: the graph, the debugger's controls, the inspector, the gradient plots, the
breakpoints and the program's console. It renders an ``AppState`` (core) and forwards the user's
commands to it; events from the program are taken in batches by a 30 ms timer, so the window never
waits on the program, and a large graph is laid out off the GUI thread."""
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QColor, QKeySequence, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (QDockWidget, QLabel, QLineEdit, QListWidget, QListWidgetItem, QMainWindow,
                               QPlainTextEdit, QSplitter, QToolBar, QVBoxLayout, QWidget)

from gradviz.app.follow import legible_scale

from .grad_plot import GradPlot
from .graph_view import GraphView
from .inspector import Inspector
from .minimap import Minimap
from .timeline import TimelineBar

POLL_MS = 30
CONSOLE_LINES = 20000
STREAM_COLOURS = {"stdout": "#202020", "stderr": "#b00020", "exception": "#b00020"}


class MainWindow(QMainWindow):
    def __init__(self, state, title="gradviz"):
        super().__init__()
        self.state = state
        self.setWindowTitle(title)
        self.resize(1280, 800)
        self.view = GraphView(state)
        self.timeline_bar = TimelineBar(state.timeline)
        self.timeline_bar.positionChanged.connect(self.travel)
        centre = QWidget()
        column = QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.view, 1)
        self.minimap = Minimap(self.view)  # over the graph's bottom-right corner
        column.addWidget(self.timeline_bar)  # the whole width under the graph: time travel
        self.setCentralWidget(centre)
        self.inspector = Inspector(state)
        self.plot = GradPlot()
        side = QSplitter(Qt.Vertical)
        side.addWidget(self.inspector)
        side.addWidget(self.plot)
        side.setSizes([360, 300])
        self._dock("Inspector", side, Qt.RightDockWidgetArea)
        self.breakpoint_list = QListWidget()
        self.breakpoint_list.setToolTip("Breakpoints: F9 on a node adds one; Delete removes the selected one")
        self.breakpoint_list.installEventFilter(self)
        self.console = QPlainTextEdit()
        self.console.setReadOnly(True)
        self.console.setMaximumBlockCount(CONSOLE_LINES)
        self.console.setPlaceholderText("The program's output appears here.")
        bp_dock = self._dock("Breakpoints", self.breakpoint_list, Qt.BottomDockWidgetArea)
        console_dock = self._dock("Console", self.console, Qt.BottomDockWidgetArea)
        self.splitDockWidget(bp_dock, console_dock, Qt.Horizontal)
        self.resizeDocks([bp_dock, console_dock], [280, 900], Qt.Horizontal)
        self.resizeDocks([console_dock], [150], Qt.Vertical)
        self.status = QLabel()
        self.statusBar().addWidget(self.status, 1)
        self.diagnosis_line = QLabel()  # a traced NaN's origin (gradviz.app.diagnosis), over the graph
        self.diagnosis_line.setStyleSheet("color: #b03a2e; font-weight: bold; padding: 2px 4px;")
        self.diagnosis_line.setWordWrap(True)
        self.diagnosis_line.hide()
        column.insertWidget(0, self.diagnosis_line)
        self.view.diagnosed.connect(self.show_diagnosis)
        self.diff_window = None
        self._console_len = 0
        self._auto_flow = False  # the flow tab was chosen for the user (nothing selected), not by them
        self._actions()
        self.view.model.auto_focus = True  # see GraphModel.update_focus
        self.view.nodeClicked.connect(self.select)
        self.inspector.checkAsked.connect(lambda what: self.check_node() if what == "node" else self.check_pass())
        self.view.checkAsked.connect(lambda key: self.check_node())
        # A box expanded under the selection: the selection goes with it (select() checks it).
        self.view.collapsedChanged.connect(lambda: self.select(self.state.selected))
        self.view.lineBreakpointAsked.connect(lambda key: self.toggle_breakpoint(key, line=True))
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.poll)
        self.timer.start(POLL_MS)
        self.poll()
        if state.layout is not None and not self.view.items_by_key:  # a state laid out before the window
            self._show({"graph"})

    def _dock(self, title, widget, area):
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _actions(self):
        bar = QToolBar("Debug", self)
        bar.setMovable(False)
        self.addToolBar(bar)
        self.actions_by_name = {}
        st = self.state
        live = st.debugger is not None
        for name, key, slot, tip in (
                ("Continue", "F5", st.resume, "Run until the next breakpoint"),
                ("Step", "F10", st.step, "Run the highlighted node and pause before the next one"),
                ("Pause", "F6", st.interrupt, "Pause the running program at its next graph operation"),
                ("Stop", "Shift+F5", st.stop, "End the program"),
                ("Restart", "Ctrl+Shift+F5", self.restart, "Start the program again, keeping the breakpoints"),
                ("Breakpoint", "F9", self.toggle_breakpoint, "Toggle a breakpoint on the selected node"),
                ("Fit", "F", self.view.user_fit, "Fit the graph in the window (stops following)")):
            act = self._action(name, key, tip, lambda checked=False, slot=slot, name=name: (
                name == "Fit" or self.go_live(), slot(), self.poll()))
            act.setEnabled(live or name == "Fit")
            bar.addAction(act)
        bar.addSeparator()
        for name, tip, slot in (
                ("Every node", "Pause before every backward node (Continue turns this off)",
                 st.set_break_on_backward),
                ("Anomaly", "Pause where a NaN or Inf first appears, in forward or backward", st.set_anomaly),
                ("Forward", "Pause as each forward op is made, to watch the graph grow", st.set_break_on_forward)):
            act = self._action(name, None, tip, lambda checked, slot=slot: (slot(checked), self._show_breakpoints(),
                                                                               self.poll()))
            act.setCheckable(True)
            act.setEnabled(live)
            bar.addAction(act)
        act = self._action("Follow", None, "Bring the paused node into view, readable, at each pause "
                           "(a pan or zoom turns this off)", self.set_following)
        act.setCheckable(True)
        bar.addAction(act)
        bar.addSeparator()
        bar.addAction(self._action("NaN origin", None, "Trace the NaN or Inf at the selected node to the node that "
                                   "made it, and draw the way it went (also in a node's context menu)",
                                   lambda checked=False: self.trace_origin("nan")))
        bar.addAction(self._action("Diff…", None, "What changed between two iterations: nodes only in one, "
                                   "and the ratio of gradient norms", lambda checked=False: self.open_diff()))
        bar.addSeparator()
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Find node (Ctrl+F)")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.setMaximumWidth(220)
        self.search_box.returnPressed.connect(self.find)
        bar.addWidget(self.search_box)
        self.search_count = QLabel()
        bar.addWidget(self.search_count)
        self._action("Find", QKeySequence(QKeySequence.Find).toString(), "Search nodes by name, op or module",
                     lambda checked=False: (self.search_box.setFocus(), self.search_box.selectAll()))
        # The gradient check: shortcuts here, links in the inspector (the toolbar is full)
        self._action("Check", "Ctrl+K", "Check the paused node's backward against finite differences of its forward",
                     lambda checked=False: self.check_node())
        self._action("Check pass", "Ctrl+Shift+K",
                     "Check every node of this backward pass as it runs; failing nodes turn red",
                     lambda checked=False: self.check_pass())
        self._action("Next match", "F3", "The next node found", lambda checked=False: self.next_match(1))
        self._action("Previous match", "Shift+F3", "The previous node found", lambda checked=False: self.next_match(-1))
        self._sync_switches()

    def check_node(self):
        """Check: the paused node's gradient check (gradviz.app.checks), asked of the child without
        waiting: the status line says "checking ..." and poll shows the result when it comes."""
        self.go_live()
        self.state.checks.start_check_current()
        self._show({"checks"})

    def check_pass(self):
        """Check every node of this pass: the program runs on; results come in through poll."""
        self.go_live()
        self.state.checks.check_pass()
        self.poll()

    def _sync_switches(self):
        st = self.state
        dbg = st.debugger
        if dbg is not None:  # what the program can take now; Restart and Fit always
            alive = dbg.state != "exited"
            # After the program raised, nothing is left to run: only Stop and Restart.
            raised = dbg.last_pause is not None and dbg.last_pause.reason == "exception"
            can_go = dbg.state == "paused" and not raised
            for name, on in (("Continue", can_go), ("Step", can_go), ("Check", st.checks.can_check()),
                             ("Check pass", can_go and st.checks.request is None),
                             ("Pause", dbg.state == "running"), ("Stop", alive),
                             ("Breakpoint", alive), ("Restart", st.can_restart)):
                act = self.actions_by_name[name]
                if act.isEnabled() != on:
                    act.setEnabled(on)
        for name, on in (("Every node", st.break_on_backward), ("Anomaly", st.anomaly_on),
                         ("Forward", st.break_on_forward), ("Follow", st.follow.following)):
            act = self.actions_by_name[name]
            if act.isChecked() != on:
                act.blockSignals(True)
                act.setChecked(on)
                act.blockSignals(False)

    def _action(self, name, key, tip, slot):
        act = QAction(f"{name} ({key})" if key else name, self)
        if key:
            act.setShortcut(QKeySequence(key))
            act.setShortcutContext(Qt.ApplicationShortcut)
        act.setToolTip(f"{tip} ({key})" if key else tip)
        act.triggered.connect(slot)
        self.addAction(act)
        self.actions_by_name[name] = act
        return act

    # -- following the state ------------------------------------------------------------------------
    def poll(self):
        changed = self.state.poll()
        if self.view.model.take_ready():  # a collapsed large graph, laid out off this thread
            self.view.rebuild()
            self.minimap.invalidate()
        self._show(changed)
        if len(self.state.timeline) != self.timeline_bar.slider.maximum() or "pause" in changed:
            with self.state.lock:
                self.timeline_bar.refresh(self.state.timeline)

    def travel(self, k):
        """The timeline moved: show the moment after k events (None: live)."""
        self._show(self.state.set_time(k))

    def go_live(self):
        if self.state.time is not None:
            self.timeline_bar.set_position(None)

    def _show(self, changed):
        st = self.state
        if changed:
            self._prefetch()
        # The debugger's reader thread writes the trace while the program runs: read it under its
        # lock (a moment in the past is a view of the same trace).
        with st.lock:
            # The first view of a large graph: its modules as boxes, the paused node's opened.
            refocused = bool(changed & {"graph", "pause"}) and self.view.model.update_focus()
            rebuilt = False
            if "graph" in changed or refocused:
                if "graph" in changed:
                    self.view.rebuild()
                else:
                    self.view.redraw()
                rebuilt = not self.view.model.laying_out  # (else the old drawing stays until then)
                if not self.view.user_moved and st.current is None:
                    self.first_view()
            if changed:
                if not rebuilt:  # a rebuild colours what it draws
                    self.view.refresh()
                # The paused node in sight, readable (show_node zooms a fit too small to read);
                # a graph drawn anew (laid out after the pause came) is followed again.
                key = st.follow.on_pause(st.current) if "pause" in changed else \
                    st.follow.current if "graph" in changed and st.follow.following else None
                if key is not None:
                    self.view.show_node(key)
                self.minimap.invalidate()
                self._show_selection()
            text = st.status_text()
        self._show_console()
        self._sync_switches()
        if st.laying_out or self.view.model.laying_out:
            text += " · laying out the graph…"
        if st.layout_error:
            text += f" · the layout failed ({st.layout_error})"
        self.status.setText(text)

    def set_following(self, on):
        """The Follow switch: on, the view goes to the paused node at once."""
        key = self.state.follow.set_following(on)
        if key is not None:
            with self.state.lock:
                self.view.show_node(key)

    def follow_current(self):
        """Bring the paused node into view if following (after the window's own fit, say); with
        none paused, the graph's first view."""
        st = self.state
        st.follow.current = st.current
        if st.current is None and not self.view.user_moved:
            with st.lock:
                self.first_view()
        self.set_following(st.follow.following)

    def first_view(self):
        """Where a graph is seen when no node is paused: whole, if that reads (a small graph, or a
        large one drawn as its modules' boxes); else its top, where backward starts, legibly (a
        4,000-node chain fit in the window is a hairline)."""
        view = self.view
        if len(view.items_by_key) < 60 or view.modules is not None:
            view.fit()
            return
        view.fit()
        if view.transform().m11() < legible_scale():
            roots = view.model.roots()
            if roots:
                view.show_node(roots[0])

    def _prefetch(self):
        """Ask the program for what the paused node saved, before taking the trace's lock (the
        answer comes through the thread that holds it while writing); cached per pause."""
        st = self.state
        if st.current is not None and (st.selected or st.current) == st.current:
            st.saved_tensors()

    def _show_console(self):
        lines = self.state.console()
        if len(lines) < self._console_len:
            self.console.clear()
            self._console_len = 0
        if len(lines) == self._console_len:
            return
        # One insert per run of the same stream (a chatty program sends thousands of chunks a
        # poll), and of a long backlog only what the console keeps (its last CONSOLE_LINES lines).
        runs, budget = [], CONSOLE_LINES
        for stream, text in reversed(lines[self._console_len:]):
            if stream == "exception" and not text.endswith("\n"):
                text += "\n"
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(text)
            else:
                runs.append((stream, [text]))
            budget -= text.count("\n")
            if budget < 0:
                break
        cursor = self.console.textCursor()
        cursor.movePosition(QTextCursor.End)
        for stream, texts in reversed(runs):
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(STREAM_COLOURS.get(stream, "#202020")))
            cursor.insertText("".join(reversed(texts)), fmt)
        self._console_len = len(lines)
        self.console.setTextCursor(cursor)
        self.console.ensureCursorVisible()

    def _show_breakpoints(self):
        self.breakpoint_list.clear()
        for bid, label in self.state.breakpoint_rows():
            item = QListWidgetItem(f"● {label}")
            item.setData(Qt.UserRole, bid)
            item.setForeground(QColor("#b00020"))
            self.breakpoint_list.addItem(item)

    def select(self, key):
        st = self.state
        st.select(key)
        self._prefetch()
        with st.lock:
            self.view.refresh()
            self._show_selection()
        self.minimap.invalidate()

    def _show_selection(self):
        """The inspector and the plots, for the selection (else the paused node); under the lock."""
        st = self.state
        key = st.selected or st.current
        self.inspector.show_key(key)
        label = st.labels.get(key, "").replace("\n", " ") if key else ""
        self.plot.show_value(st.selected_value(), f"gradient at {label}" if label else "")
        self.plot.show_tensor(st.trace, key)
        self.plot.show_flow(st.trace)
        if key is None and self.plot.flow_shown:
            self.plot.setCurrentWidget(self.plot.pages["Gradient flow"])  # nothing selected: the overview
        elif key is not None and self.plot.currentWidget() is self.plot.pages["Gradient flow"] and self._auto_flow:
            self.plot.setCurrentWidget(self.plot.pages["Values"])
        self._auto_flow = key is None

    # -- search ----------------------------------------------------------------------------------------
    def find(self):
        text = self.search_box.text().strip()
        model = self.view.model
        if text and text == model.query and model.matches:
            self.view.next_match(1)
        else:
            self.view.find(text)
        self._searched()

    def next_match(self, step):
        if self.view.model.matches:
            self.view.next_match(step)
        self._searched()

    def _searched(self):
        if self.view.model.matches:  # the view went to a match, where the user asked: no following
            self.view.follow.on_user_moved()
        self.minimap.invalidate()
        self._show_matches()

    def _show_matches(self):
        model = self.view.model
        if not model.query:
            self.search_count.setText("")
        elif not model.matches:
            self.search_count.setText(" no match ")
        else:
            self.search_count.setText(f" {model.match_index + 1} of {len(model.matches)} ")

    # -- commands -------------------------------------------------------------------------------------
    # -- diagnosis (gradviz.app.diagnosis, ui/diff_view.py) -------------------------------------------
    def trace_origin(self, what="nan", key=None):
        """Trace the NaN (or explosion) at ``key`` (default: the selection, else the paused node)."""
        key = key or self.state.selected or self.state.current
        if key is None:
            return self.show_diagnosis("Select a node holding a NaN or Inf to trace it to its origin")
        self.view._diagnose(lambda: self.state.diagnosis.trace_origin(key, what))

    def show_diagnosis(self, text):
        self.diagnosis_line.setText(text)
        self.diagnosis_line.setVisible(bool(text))

    def open_diff(self):
        from .diff_view import DiffWindow
        try:
            with self.state.lock:
                self.diff_window = DiffWindow(self.state.trace)
        except ValueError as exc:
            return self.show_diagnosis(f"No diff: {exc}")
        self.diff_window.show()
        return self.diff_window

    def toggle_breakpoint(self, key=None, line=False):
        self.state.toggle_breakpoint(key, line=line)
        self.statusBar().showMessage(self.state.message, 5000)
        self._show_breakpoints()

    def restart(self):
        from gradviz.debug.debugger import DebuggerError
        try:
            restarted = self.state.restart()
        except DebuggerError as exc:  # the program no longer starts (its file gone, say)
            self.statusBar().showMessage(f"Restart failed: {str(exc).splitlines()[0]}", 10000)
            self.console.appendPlainText(f"Restart failed: {exc}")
            return
        if restarted:
            self.timeline_bar.set_position(None)
            self.timeline_bar.refresh(self.state.timeline)
            self._console_len = 0
            self.console.clear()
            self.view.rebuild()
            self.minimap.invalidate()
            self._show_breakpoints()

    def eventFilter(self, obj, event):
        if obj is self.breakpoint_list and event.type() == event.Type.KeyPress and \
                event.key() in (Qt.Key_Delete, Qt.Key_Backspace):
            item = self.breakpoint_list.currentItem()
            if item is not None:
                bid = item.data(Qt.UserRole)
                if bid == self.state.anomaly:
                    self.state.set_anomaly(False)
                    self.actions_by_name["Anomaly"].setChecked(False)
                else:
                    self.state.remove_breakpoint(bid)
                self._show_breakpoints()
            return True
        return super().eventFilter(obj, event)

    def closeEvent(self, event):
        self.timer.stop()
        self.state.stop()
        super().closeEvent(event)
