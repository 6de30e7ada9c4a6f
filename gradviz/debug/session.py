"""``python -m gradviz.debug.session``: the child side of gradviz. Runs the user's program under the
recorder and streams its events, in the trace-file format, to the parent (``--connect``, with the
debugger: it pauses where the parent's breakpoints say and obeys its commands) or to a file
(``--output``, for ``gradviz record``).

While paused, the program's main thread waits inside the engine's hook (before a backward node
runs, or just after a forward node was made), so what a pause shows is exactly what the engine is
about to use. A reader thread takes the parent's commands; ``terminate`` ends the process from that
thread even when the program spins without touching the engine.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import runpy
import signal
import sys
import threading
import time
import traceback
import weakref

import numpy as np

from gradviz import events as ev
from gradviz.debug import protocol
from gradviz.debug.check import check_node_in_session
from gradviz.debug.breakpoints import Breakpoint
from gradviz.adapters.engine import EngineAdapter
from gradviz.recording.attach import attach
from gradviz.recording.producer import Producer
from gradviz.trace.model import peer_signature
from gradviz.trace.budget import DEFAULT_FILE_BUDGET, BudgetedTraceWriter, ValuePolicy, parse_iterations, parse_size
from gradviz.trace.gvz import TraceWriter

EXIT_GRACE_S = 5.0  # after the program ended, how long its exit may take once the parent is gone
INTERRUPT_GRACE_S = 0.25  # an interrupt waits this long for a graph operation, then pauses the program anywhere
_NUDGE = getattr(signal, "SIGUSR2", None) if hasattr(signal, "pthread_kill") else None
_GRADVIZ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


class SessionProducer(Producer):
    """A producer that tells the session where the program is, with the raw arrays in hand."""

    def __init__(self, session, adapter, keep_arrays):
        super().__init__(adapter, session.write, keep_arrays)
        self.session = session
        self.live = weakref.WeakValueDictionary()
        self.names = {}
        self.keep_forward = session.sock is not None  # under the debugger: nodes can be checked
        # under the debugger: it may pause before each node (`gradviz record` has no one to pause for)
        self.acts_before_nodes = session.sock is not None

    def sink(self, e):
        self.session.observe(e)  # (now: breakpoints need it; written once its summaries are made)
        super().sink(e)

    def tensor_seen(self, tid, tensor):
        try:
            self.live[tid] = tensor
        except TypeError:  # not weak-referenceable: it cannot be fetched later
            pass

    def _describe(self, tensor, tid, frame):
        e = super()._describe(tensor, tid, frame)
        if e.name:
            self.names[tid] = e.name
        return e

    def node_created(self, node, inputs, output):
        super().node_created(node, inputs, output)
        self.session.after_forward(self._lookup(node), self.adapter.array(output))

    def node_entered(self, node, grad_outputs):
        values = super().node_entered(node, grad_outputs)
        self.session.current_node_obj = node  # for its saved tensors, while paused there
        self.session.before_backward(self._lookup(node), self.adapter.op_name(node), grad_outputs)
        return values

    def node_exited(self, node, grad_inputs):
        super().node_exited(node, grad_inputs)
        if self.keep_forward:  # checked before it ran, if at all: its activations may go now
            self.adapter.release_forward(node)
        self.session.after_backward(self._lookup(node), grad_inputs)

    def backward_finished(self):
        super().backward_finished()
        self.session.current_node = None
        self.session.current_node_obj = None
        self.session.pass_finished(self.pass_index)

    def grad_accumulated(self, node, tensor, contribution, grad, fresh=False):
        super().grad_accumulated(node, tensor, contribution, grad, fresh)
        self.session.after_accumulate(self._lookup(node), self._lookup(tensor), grad)


def _full(adapter, values):
    """Values with their full arrays, whatever the recording keeps: what a pause shows."""
    return tuple(None if x is None else ev.Value(adapter.summarize(x), adapter.to_numpy(x, False)) for x in values)


OUTPUT_LIMIT = 1 << 20  # characters of the program's output a recording keeps (gradviz record)
OUTPUT_CUT = "\n[gradviz: the rest of the program's output is not kept in the recording]\n"


class _RecordedOutput:
    """The program's stdout or stderr under ``gradviz record``: written through as ever, and kept
    in the recording as ``ProgramOutput`` events (under the debugger the parent reads the pipes)."""

    def __init__(self, name, stream, session):
        self._name, self._stream, self._session = name, stream, session

    def write(self, s):
        n = self._stream.write(s)
        self._session.record_output(self._name, s)
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):  # flush, encoding, fileno, isatty, buffer...: the stream's own
        return getattr(self._stream, name)


class Session:
    def __init__(self, stream, keep_arrays=True, sock=None, writer=None):
        self.writer = writer if writer is not None else TraceWriter(stream)
        self.sock = sock
        self.keep_arrays = keep_arrays
        self.commands = queue.Queue()
        self.breakpoints = {}  # id -> Breakpoint
        self.break_on_backward = False
        self.break_on_forward = False
        self.step_target = None  # None, "any", "forward" or "backward"
        self.interrupted = threading.Event()
        self.finished = threading.Event()  # ProgramExited is sent: the process ends as the program's would
        self.exit_status = 0
        self.last_event = None
        self.current_node = None
        self.current_node_obj = None
        self.current = {}  # what the pause in progress can hand out: grad_outputs, grad_inputs
        self._anomaly_seen = set()
        self._sources = {}  # node id -> "file:line" of the forward code that made it
        self._peer_of = {}  # node id -> ((op, scope, "file:line"), rank among such nodes in its iteration)
        self._peer_counts, self._peer_iteration = {}, None
        self.producer = None
        self._pausing = False
        self._nudge_handler = None  # installed while the program runs (see nudge_later)
        self._output_left = OUTPUT_LIMIT
        self.checking = None  # a check_pass command in progress: {"request", "pass_index", options}

    def record_output(self, name, text):
        """Keep a piece of the program's output (``gradviz record``), within OUTPUT_LIMIT."""
        if not text or self._output_left <= 0 or type(self.last_event) is ev.ProgramExited:
            return
        piece = text[:self._output_left]
        self._output_left -= len(piece)
        try:
            self.emit(ev.ProgramOutput(name, piece))
            if self._output_left <= 0:
                self.emit(ev.ProgramOutput("stderr", OUTPUT_CUT))
        except (OSError, ValueError):  # the recording is closed
            self._output_left = 0

    # -- the stream ------------------------------------------------------------------------------
    def emit(self, e):
        """Observe ``e`` now and write it after any events the producer holds for their summaries."""
        if self.producer is not None:
            self.producer.sink(e)
        else:
            self.observe(e)
            self.write(e)

    def write(self, e):
        self.writer.write(e)

    def observe(self, e):
        self.last_event = e
        if type(e) is ev.NodeCreated and e.kind == "grad_fn":
            # A line breakpoint stops at the ops the line made; AccumulateGrad belongs to its leaf.
            sig = peer_signature(e)  # (op, scope, "file:line")
            if sig[2]:
                self._sources[e.id] = sig[2]
            # "This node in every iteration": its op, scope and line, and its rank among those.
            if e.iteration != self._peer_iteration:
                self._peer_counts, self._peer_iteration = {}, e.iteration
            rank = self._peer_counts.get(sig, 0)
            self._peer_counts[sig] = rank + 1
            self._peer_of[e.id] = (sig, rank)

    # -- commands --------------------------------------------------------------------------------
    def configure(self, cfg):
        self.break_on_backward = bool(cfg.get("break_on_backward", self.break_on_backward))
        self.break_on_forward = bool(cfg.get("break_on_forward", self.break_on_forward))
        for wire in cfg.get("breakpoints", ()):
            self._add_breakpoint(wire)

    def _add_breakpoint(self, wire):
        bp = Breakpoint.from_wire(wire)
        self.breakpoints[bp.id] = bp

    def read_commands(self):
        """The reader thread: immediate commands act at once, the rest wait for the paused program."""
        while True:
            try:
                cmd = protocol.recv_message(self.sock)
            except (EOFError, OSError, protocol.ProtocolError):
                if self.finished.is_set():
                    # The program is over and exiting on its own (its atexit handlers running):
                    # give that a moment, then still never outlive the parent.
                    time.sleep(EXIT_GRACE_S)
                    os._exit(self.exit_status)
                os._exit(1)  # the parent is gone: never outlive it
            c = cmd.get("cmd")
            if c == "terminate":
                os._exit(143)
            elif c == "interrupt":
                self.interrupted.set()
                self.nudge_later()
            elif c == "add_breakpoint":
                self._add_breakpoint(cmd["spec"])
            elif c == "remove_breakpoint":
                self.breakpoints.pop(cmd.get("id"), None)
            elif c == "configure":
                self.configure(cmd)
            else:
                self.commands.put(cmd)

    # -- interrupting a program that makes no graph operations ---------------------------------------
    def install_nudge(self):
        """In the main thread, before the program runs: the signal an interrupt sends when no graph
        operation came to pause at (a program in a long loop or sleep without autograd)."""
        if _NUDGE is None or self.sock is None:
            return

        def on_nudge(signum, frame):
            if not self.interrupted.is_set() or self._pausing or self.finished.is_set():
                return
            if frame is not None and frame.f_code.co_filename.startswith(_GRADVIZ_DIR):
                return  # inside gradviz (the recorder, the engine): a graph operation is near; tried again
            where = f" in {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""
            self.pause("interrupt", "program", detail=f"interrupted{where}, between autograd operations")
        try:
            signal.signal(_NUDGE, on_nudge)
        except (ValueError, OSError):
            return
        self._nudge_handler = on_nudge

    def nudge_later(self):
        """From the command thread: while the interrupt is not taken at a graph operation, nudge the
        main thread to pause where it is (a Python-level pause; a C call is left when it returns)."""
        if self._nudge_handler is None:
            return

        def nudge():
            while not self.finished.is_set():
                time.sleep(INTERRUPT_GRACE_S)
                if not self.interrupted.is_set():
                    return
                if self._pausing or signal.getsignal(_NUDGE) is not self._nudge_handler:
                    continue  # the program took the signal for itself: wait for a graph operation
                try:
                    signal.pthread_kill(threading.main_thread().ident, _NUDGE)
                except (OSError, ValueError):
                    return
        threading.Thread(target=nudge, name="gradviz-interrupt", daemon=True).start()

    # -- pausing ---------------------------------------------------------------------------------
    def pause(self, reason, phase, node=None, grad_outputs=(), grad_inputs=(), detail="", tb=None):
        if self.sock is None:
            return
        if self.producer is not None:
            self.producer.flush()  # the parent sees every event before the pause, complete
        self.step_target = None
        self.interrupted.clear()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        pass_index = self.producer.pass_index if self.producer and phase.startswith("backward") else None
        adapter = self.producer.adapter if self.producer else None
        self.current = {"grad_output": list(grad_outputs), "grad_input": list(grad_inputs)}
        self._pausing = True
        try:
            self.emit(ev.Paused(reason, phase, node, pass_index, _full(adapter, grad_outputs),
                                _full(adapter, grad_inputs), detail, tb))
            while True:
                cmd = self.commands.get()
                c = cmd.get("cmd")
                if c == "resume":
                    return
                if c == "step":
                    self.step_target = {"forward": "forward", "backward": "backward",
                                        "backward-done": "backward"}.get(phase, "any")
                    return
                if c == "fetch":
                    self.emit(self.fetch(cmd))
                if c == "check":
                    self.emit(self.check(cmd.get("request", 0), cmd))
                if c == "check_pass":
                    self.checking = cmd
                    if phase == "backward" and self.current_node_obj is not None:
                        self.emit(self.check(cmd.get("request", 0), cmd))
                    return
        finally:
            # Let go of the pause's tensors: a gradient still held here would make PyTorch copy
            # it into .grad later instead of taking it, and keep its memory alive.
            self.current = {}
            self._pausing = False

    def fetch(self, cmd):
        request = cmd.get("request", 0)
        adapter = self.producer.adapter
        try:
            what = cmd.get("what")
            if what in ("grad_output", "grad_input"):
                arrays = self.current.get(what, [])
                i = cmd.get("index", 0)
                if not isinstance(i, int) or not 0 <= i < len(arrays) or arrays[i] is None:
                    raise KeyError(f"the current node has no {what} {i}")
                x = arrays[i]
            elif what == "saved":
                node = self.current_node_obj
                if node is None:
                    raise KeyError("not paused in a backward node")
                items = adapter.saved(node)
                i = cmd.get("index", 0)
                if not isinstance(i, int) or not 0 <= i < len(items):
                    raise KeyError(f"the current node has no saved tensor {i} (it saved {len(items)})")
                name, x = items[i]
                return ev.TensorValue(request, ev.Value(adapter.summarize(x), adapter.to_numpy(x, True)), name=name)
            elif what == "vjp":  # the paused node's backward once more, on the v given
                node, like = self.current_node_obj, self.current.get("grad_output", [])
                if node is None or not like:
                    raise KeyError("not paused before a backward node")
                v = cmd.get("v")
                if not isinstance(v, list) or len(v) != len(like):
                    raise KeyError(f"v: one list of numbers per grad_output ({len(like)})")
                out = adapter.vjp(node, like, [np.asarray(vj, dtype=np.float64) for vj in v])
                i = cmd.get("index", 0)
                if not isinstance(i, int) or not 0 <= i < len(out):
                    raise KeyError(f"the node has no grad_input {i}")
                if out[i] is None:
                    raise KeyError(f"grad_input {i} is None")
                x = out[i]
            elif what in ("tensor", "grad"):
                tensor = self._find_tensor(cmd.get("id"), cmd.get("name"))
                if what == "grad":
                    if tensor.grad is None:
                        raise KeyError("that tensor has no .grad yet")
                    tensor = tensor.grad
                x = adapter.array(tensor)
            else:
                raise KeyError(f"cannot fetch {what!r}")
            return ev.TensorValue(request, ev.Value(adapter.summarize(x), adapter.to_numpy(x, True)))
        except Exception as exc:  # answered, never fatal to the program
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else f"{type(exc).__name__}: {exc}"
            return ev.TensorValue(request, None, str(msg))

    def check(self, request, cmd):
        """The paused node's gradient check (``gradviz.debug.check``), as a ``NodeChecked`` event."""
        node, like = self.current_node_obj, self.current.get("grad_output", [])
        if node is None:
            return ev.NodeChecked(request, None, json.dumps({"op": "", "ok": None,
                                                             "reason": "not paused before a backward node"}))
        result = check_node_in_session(self.producer.adapter, node, self.current_node, like, cmd)
        return ev.NodeChecked(request, self.current_node, json.dumps(result.to_wire()))

    def pass_finished(self, pass_index):
        """A pass ended: a check_pass of it is done, and pauses here."""
        cmd = self.checking
        if cmd is None or cmd.get("pass_index") not in (None, pass_index):
            return
        self.checking = None
        self.emit(ev.NodeChecked(cmd.get("request", 0), None, ""))
        self.pause("checked", "program", detail=f"every node of backward pass {pass_index} checked")

    def _find_tensor(self, tid, name):
        live = self.producer.live
        if tid is not None:
            t = live.get(tid)
            if t is None:
                raise KeyError(f"tensor t{tid} is no longer alive")
            return t
        for i, n in self.producer.names.items():
            if n == name and live.get(i) is not None:
                return live[i]
        raise KeyError(f"no live tensor named {name!r}")

    def _anomaly_once(self, key):
        if key in self._anomaly_seen:
            return False
        self._anomaly_seen.add(key)
        return True

    def _anomaly_on(self):
        return any(bp.anomaly for bp in self.breakpoints.values())

    # -- the hooks -------------------------------------------------------------------------------
    def _anomaly_check(self):
        """Whether anomaly breakpoints are on; if so, pending summaries are made now (one wait on
        a device): the check reads them."""
        if not self._anomaly_on():
            return False
        self.producer.flush()
        return True

    def after_forward(self, node, output):
        e = self.last_event
        if self.checking is not None:  # check_pass: no pause until the pass is checked
            return None
        if self._anomaly_check() and e.value is not None and not e.value.summary.finite \
                and self._anomaly_once(("forward", self.producer.iteration)):
            return self.pause("anomaly", "forward", node, detail=f"{e.op} made a value holding NaN or Inf")
        if self.interrupted.is_set():
            return self.pause("interrupt", "forward", node)
        if self.break_on_forward or self.step_target in ("any", "forward"):
            return self.pause("step", "forward", node)

    def before_backward(self, node, op, grad_outputs):
        self.current_node = node
        e = self.last_event
        if self.checking is not None:  # check_pass: check every node as it comes, pause at none
            if self.checking.get("pass_index") in (None, self.producer.pass_index):
                self.current = {"grad_output": list(grad_outputs), "grad_input": []}
                try:
                    self.emit(self.check(self.checking.get("request", 0), self.checking))
                finally:
                    self.current = {}
            return None
        if self.interrupted.is_set():
            return self.pause("interrupt", "backward", node, grad_outputs)
        source, peer = self._sources.get(node), self._peer_of.get(node)
        bps = list(self.breakpoints.values())
        norms = ()
        if any(bp.grad_norm_above is not None for bp in bps):
            self.producer.flush()  # (the norms of the pending summaries, made now)
            norms = [v.summary.norm for v in e.grad_outputs if v is not None]
        for bp in bps:
            if bp.matches_node(node, op, source, peer, norms):
                return self.pause("breakpoint", "backward", node, grad_outputs, detail=bp.node_detail())
        if self.break_on_backward or self.step_target in ("any", "backward"):
            return self.pause("step", "backward", node, grad_outputs)

    def after_backward(self, node, grad_inputs):
        e = self.last_event
        if self.checking is not None:
            return None
        if self._anomaly_check() and any(v is not None and not v.summary.finite for v in e.grad_inputs) \
                and self._anomaly_once(("backward", self.producer.pass_index)):
            return self.pause("anomaly", "backward-done", node, grad_inputs=grad_inputs,
                              detail="its gradient holds NaN or Inf")

    def after_accumulate(self, node, tensor, grad):
        if self.checking is not None:
            return None
        name = self.producer.names.get(tensor)
        for bp in list(self.breakpoints.values()):
            if bp.matches_tensor(tensor, name):
                return self.pause("breakpoint", "backward-done", node, grad_inputs=(grad,),
                                  detail=f"breakpoint {bp.id}: gradient accumulated into {name or tensor}")


def command(values="full", *, connect=None, output=None, demo=None, script=None, args=(), cwd=None,
            parent=None, file_budget=None, keep_values=None):
    """The command line that starts a session child. The child is started from a private folder
    (``python -m`` puts the working folder first on sys.path, and a gradviz checkout there would
    shadow the installed package); it moves to ``cwd`` (default: ours) before the program runs.
    With ``parent`` (the starting process's pid, from the thread that lives as long as it), the
    child dies with that process."""
    cwd = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    cmd = [sys.executable, "-m", "gradviz.debug.session", "--values", values, "--cwd", cwd]
    if parent is not None:
        cmd += ["--parent", str(int(parent))]
    if connect:
        cmd += ["--connect", connect]
    if output:
        cmd += ["--output", os.path.join(cwd, os.fspath(output))]
        if file_budget is not None:
            cmd += ["--file-budget", str(file_budget)]
        if keep_values:
            cmd += ["--keep-values", str(keep_values)]
    if demo:
        cmd += ["--demo", demo, "--", *map(str, args)]
    else:
        cmd += ["--", os.path.join(cwd, os.fspath(script)), *map(str, args)]
    return cmd


def _program_path(args):
    if args.demo:
        from gradviz import demos
        return demos.demo_path(args.demo), list(args.program)
    if not args.program:
        raise FileNotFoundError("no program given")
    return args.program[0], args.program[1:]



def _user_traceback(tb):
    """The traceback from the user's first frame on: gradviz's and runpy's frames that ran the
    script are left out; all of them when the error is in them (a SyntaxError: its message points
    at the script's line)."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")  # the gradviz package
    start = tb
    while start is not None:
        name = start.tb_frame.f_code.co_filename
        if not (name.startswith(here) or name in ("<frozen runpy>", runpy.__file__)):
            return start
        start = start.tb_next
    return None

def die_with_parent(parent):
    """Never outlive process ``parent``: the kernel kills this process when it dies (Linux's
    PR_SET_PDEATHSIG, which holds even inside a long C call), and a watcher thread checks elsewhere.
    Returns at once; exits if the parent is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before that was in place
        os._exit(1)

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, name="gradviz-parent-watch", daemon=True).start()


def file_writer(path, file_budget=None, keep_values=""):
    """The writer of ``gradviz record``'s trace file: within ``file_budget`` ('512M', 'none'; None:
    the default) by the value policy (gradviz.trace.budget). Raises ValueError for a bad option."""
    budget = DEFAULT_FILE_BUDGET if file_budget is None else parse_size(file_budget)
    return BudgetedTraceWriter(path, ValuePolicy(file_budget=budget, keep=parse_iterations(keep_values or "")))


def _end_stream(stream, writer):
    if writer is not None:  # a trace file: the last iterations' arrays and the end note go in
        writer.close()
    else:
        stream.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gradviz.debug.session")
    parser.add_argument("--connect", help="the parent's address (the token comes in the environment)")
    parser.add_argument("--output", help="write the stream to this trace file instead")
    parser.add_argument("--values", choices=("full", "summaries"), default="full")
    parser.add_argument("--file-budget", help="the trace file's budget (--output): 512M, none, ...")
    parser.add_argument("--keep-values", default="", help="iterations that keep full values: 0,10,100-120")
    parser.add_argument("--demo")
    parser.add_argument("--cwd", help="the folder the program runs in")
    parser.add_argument("--parent", type=int, help="end when the process with this pid ends")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    if args.program and args.program[0] == "--":
        args.program = args.program[1:]
    if args.cwd:
        os.chdir(args.cwd)

    sock = writer = None
    cfg = {}
    if args.connect:
        sock = protocol.connect(args.connect)
        protocol.send_message(sock, {"token": os.environ.pop(protocol.TOKEN_ENV, ""), "pid": os.getpid()})
        cfg = protocol.recv_message(sock)
        stream = sock.makefile("wb", buffering=1 << 16)
    elif args.output:
        try:
            writer = file_writer(args.output, args.file_budget, args.keep_values)
        except ValueError as exc:
            parser.error(str(exc))
        stream = writer  # flushed frame by frame; closed at the end, when the last iterations' arrays go in
    else:
        parser.error("give --connect ADDRESS or --output FILE")

    session = Session(stream, keep_arrays=args.values == "full", sock=sock, writer=writer)
    session.configure(cfg)
    if sock is None:  # gradviz record: the program's output goes into the recording too
        sys.stdout = _RecordedOutput("stdout", sys.stdout, session)
        sys.stderr = _RecordedOutput("stderr", sys.stderr, session)
    if sock is not None:
        threading.Thread(target=session.read_commands, name="gradviz-commands", daemon=True).start()

    status, error = 0, None
    try:
        path, argv_rest = _program_path(args)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such script: {path}")
    except (FileNotFoundError, ValueError) as exc:
        status, error = 2, f"gradviz: {exc}"
        if sock is None:  # under a debugger, ProgramExited carries it (shown once, not twice)
            print(error, file=sys.stderr)
        session.emit(ev.ProgramExited(status, error))
        _end_stream(stream, writer)
        return status

    session.producer = SessionProducer(session, EngineAdapter(), keep_arrays=args.values == "full")
    sys.argv = [path] + argv_rest
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    if cfg.get("stop_on_entry"):
        session.pause("entry", "program")
    attachment = attach(session.producer)
    session.install_nudge()
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        status = int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the program's failure: show it, pause on it, keep everything
        attachment.stop()
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C: said in one line, as the exit status says it
            error, status = "KeyboardInterrupt\n", 130
        else:
            error = "".join(traceback.format_exception(type(exc), exc, _user_traceback(exc.__traceback__)))
            status = 1
        if sock is None:  # under a debugger, the exception's pause and ProgramExited carry it
            sys.stderr.write(error)
        failed = getattr(exc, "gradviz_node", None)  # set by the executor: the node it was running
        node = session.producer._lookup(failed) if failed is not None else session.current_node
        session.pause("exception", "program", node, detail=f"{type(exc).__name__}: {exc}", tb=error)
    finally:
        attachment.stop()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    session.emit(ev.ProgramExited(status, error))
    _end_stream(stream, writer)
    session.exit_status = status
    session.finished.set()
    return status


if __name__ == "__main__":
    # A normal exit, as the program would have had without gradviz: its atexit handlers run (files
    # it left open are flushed, multiprocessing cleans up) and its own threads are waited for; the
    # command reader is a daemon thread and does not hold the exit.
    sys.exit(main())
