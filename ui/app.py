"""Starting the desktop app: on a program run live under the debugger, or on a recorded trace."""
import os
import sys
import time


def run(demo=None, script=None, args=(), trace_path=None, screenshot=None, break_on_backward=True,
        timeout=10.0, debugger=None, title=None, event_budget=1_000_000):
    """``debugger``: one already attached (``gradviz attach``). ``event_budget``: ``Trace``'s.

    ``screenshot``: save the window at the first pause, when the program ends, or after
    ``timeout`` seconds, whichever comes first, and return (the program is ended)."""
    from PySide6.QtWidgets import QApplication

    from gradviz.app.state import AppState
    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ranks = None  # the ranks of a job, when trace_path names them
    if trace_path is not None:
        from gradviz.trace.files import load_any
        from gradviz.trace.dot import DotFormatError
        from gradviz.trace.gvz import TraceFormatError
        from gradviz.trace.ranks import rank_files
        try:
            if os.path.isdir(trace_path) or rank_files(trace_path):  # the ranks of a job: all of them
                from gradviz.app.ranks import RankState
                from gradviz.trace.ranks import load_ranks
                ranks = RankState(load_ranks(trace_path))
                trace = ranks.trace
            else:
                trace = load_any(trace_path, event_budget=event_budget)
            state = AppState(trace=trace)
        except (OSError, TraceFormatError, DotFormatError) as exc:
            return _fail(app, f"Cannot open {trace_path}:\n{exc}", screenshot)
        title = f"gradviz — {trace_path}"
    elif debugger is not None:
        state = AppState(debugger=debugger)
        title = title or "gradviz"
    else:
        from gradviz.debug.debugger import Debugger, DebuggerError

        def launch(breakpoints=(), **switches):
            switches.setdefault("break_on_backward", break_on_backward)
            switches.setdefault("event_budget", event_budget)
            return Debugger.launch(script=script, args=args, demo=demo, breakpoints=breakpoints, **switches)
        try:
            state = AppState(launch=launch)
        except DebuggerError as exc:
            return _fail(app, str(exc), screenshot)
        title = f"gradviz — {demo or script}"
        from gradviz.trace.ranks import job_rank
        job = job_rank()
        if job is not None:  # gradviz run --nproc-per-node: this window debugs one rank of the job
            title += f" · rank {job.rank} of {job.world_size}"
    window = MainWindow(state, title)
    if ranks is not None:
        from .rank_view import add_rank_view
        add_rank_view(window, ranks)
    window.show()
    app.processEvents()
    window.view.fit()  # now that the view has its real size
    window.follow_current()  # and the paused node in sight, readable, if the program paused already
    try:
        if screenshot:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and (state.debugger is not None and state.pause is None
                                                   or state.laying_out):
                app.processEvents()
                window.poll()
                time.sleep(0.01)
            window.view.fit()
            window.follow_current()
            for _ in range(5):
                app.processEvents()
            if not window.grab().save(screenshot):
                print(f"gradviz: could not save the screenshot to {screenshot}", file=sys.stderr)
                return 1
            dbg = state.debugger
            pause = dbg.last_pause if dbg is not None else None
            if pause is not None and pause.reason == "exited" and pause.exit_code:
                # the program failed (its error is on the console): as ``gradviz record`` says it
                return 128 - pause.exit_code if pause.exit_code < 0 else pause.exit_code
            return 0
        return app.exec()
    finally:
        state.close()



def _fail(app, message, screenshot):
    from PySide6.QtWidgets import QMessageBox
    print(f"gradviz: {message}", file=sys.stderr)
    if screenshot is None:
        QMessageBox.critical(None, "gradviz", message)
    return 1
