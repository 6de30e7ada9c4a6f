"""``Debugger``: run a program in a child process and step through its backward passes.

    with gradviz.Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        p = dbg.wait_paused(timeout=10)     # a Pause: reason, node, op, grad_outputs, source ...
        dbg.step()                          # run this node, pause before the next
        dbg.resume(); dbg.interrupt(); dbg.terminate()
        dbg.trace                           # the live Trace so far

Headless and Qt-free: the app and the tests drive it alike. The child streams its events in the
trace-file format over a Unix socket (loopback TCP where there are none) after presenting a random
per-launch token; the parent answers with commands.
"""
from __future__ import annotations

import atexit
import codecs
import hmac
import json
import itertools
import os
import queue
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import typing
from dataclasses import dataclass, field

import numpy as np

from gradviz import events as ev
from gradviz.debug import protocol, remote
from gradviz.debug.breakpoints import Breakpoint
from gradviz.debug.check import MAX_EVALS, TIME_BUDGET, NodeCheck
from gradviz.trace.explain import explain_node, unbroadcast
from gradviz.trace.model import DEFAULT_BUDGET, EVENT_BUDGET, Trace
from gradviz.trace.gvz import StreamDecoder, TraceFormatError

_children: set[subprocess.Popen] = set()


def _kill_group(proc):
    """End ``proc`` and whatever it started: the child leads its own process group (session)."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()


@atexit.register
def _reap_children():
    for proc in list(_children):
        _kill_group(proc)
        proc.wait()
    _children.clear()


def live_children():
    """Child processes this process launched that are still running."""
    return [p for p in _children if p.poll() is None]


@dataclass
class Pause:
    """Where and why the program stopped. Arrays are full values, whatever the memory budget."""

    reason: str  # entry, step, breakpoint, anomaly, exception, interrupt, exited
    phase: str = "program"  # forward, backward, backward-done, program
    node: int | None = None
    op: str | None = None
    pass_index: int | None = None
    grad_outputs: list = field(default_factory=list)
    grad_inputs: list = field(default_factory=list)
    source: ev.Source | None = None
    scope: str = ""
    detail: str = ""
    traceback: str | None = None
    exit_code: int | None = None

    def __str__(self):
        where = f" at {self.op} (n{self.node})" if self.node is not None else ""
        src = f", made at {self.source.file}:{self.source.line}" if self.source else ""
        extra = f": {self.detail}" if self.detail else ""
        return f"paused ({self.reason}){where}{src}{extra}"


@dataclass
class Jacobian:
    """A node's Jacobians, one (output elements x input elements) block per input (None where it
    gives no gradient), the incoming v, and what its backward gives for v (its grad_inputs)."""

    node: int
    op: str
    v: list
    blocks: list
    grad_inputs: list

    def vjp(self, v=None):
        """v^T . J from the blocks, for ``v`` (default the incoming one), shaped as the inputs."""
        flat = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in (v if v is not None else self.v)])
        return [None if J is None else flat @ J for J in self.blocks]

    @property
    def matches(self):
        """v^T . J == grad_inputs, input by input."""
        return [None if J is None or g is None else bool(np.allclose(c, np.asarray(g, dtype=np.float64).ravel(),
                                                                         rtol=1e-4, atol=1e-6))
                for J, c, g in zip(self.blocks, self.vjp(), self.grad_inputs)]


class DebuggerError(RuntimeError):
    pass


_MAX_PENDING = 64  # connections being read at once during the launch handshake
_MAX_HELLO = 4096


def _hello_verdict(buf, token):
    """True: ``buf`` is a whole hello presenting ``token``; False: it is not, nor can it become
    one; None: it may still be one when more bytes come."""
    if len(buf) < 4:
        return None
    (n,) = struct.unpack_from("<I", buf)
    if n > _MAX_HELLO:
        return False
    if len(buf) < 4 + n:
        return None
    if len(buf) > 4 + n:
        return False  # the child waits for our answer: nothing may follow its hello
    try:
        hello = json.loads(buf[4:].decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    got = hello.get("token") if isinstance(hello, dict) else None
    if not isinstance(got, str):
        return False
    return hmac.compare_digest(got.encode("utf-8", "surrogatepass"), token.encode())


def _peer_is(conn, pid):
    """Whether the connection comes from process ``pid``, where the platform tells (SO_PEERCRED on
    a Unix socket, Linux); True where it cannot tell (the token is the check there)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or not sys.platform.startswith("linux") or conn.family != getattr(socket, "AF_UNIX", None):
        return True
    try:
        peer, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    except OSError:
        return False
    return peer == pid


class Debugger:
    def __init__(self, values="full", budget_bytes=DEFAULT_BUDGET, event_budget=EVENT_BUDGET):
        self.trace = Trace(budget_bytes, event_budget=event_budget)
        self.values = values
        self.lock = threading.RLock()
        self.breakpoints = {}  # id -> Breakpoint
        self.break_on_backward = False
        self.break_on_forward = False
        self.output = []  # (stream, text) in arrival order
        self.state = "starting"  # running, paused, exited
        self.last_pause = None
        self.program_error = None
        self._pauses: queue.Queue[Pause] = queue.Queue()
        self._fetches = {}
        self._checks: dict[int, list] = {}  # request -> the NodeChecks that answered it so far
        self._checks_done: set[int] = set()
        self.checks: dict[int, NodeCheck] = {}  # node id -> its latest check
        self._fetch_cond = threading.Condition()
        self._ids = itertools.count(1)
        self._conn: socket.socket | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp = None
        self._threads = []
        self._decoder: StreamDecoder | None = None
        self._link: typing.Any = None  # an attached program's RelayLink (gradviz.debug.remote)

    # -- launching ---------------------------------------------------------------------------------
    @classmethod
    def launch(cls, script=None, args=(), demo=None, *, values="full", budget_bytes=DEFAULT_BUDGET,
               event_budget=EVENT_BUDGET, stop_on_entry=False, break_on_backward=False, break_on_forward=False,
               breakpoints=(), cwd=None, start_timeout=30.0):
        """Start ``script`` (with ``args``) or a built-in ``demo`` in a child process. Breakpoints
        given here are in place before the program's first line runs."""
        if (script is None) == (demo is None):
            raise ValueError("give either script=PATH or demo=NAME")
        dbg = cls(values=values, budget_bytes=budget_bytes, event_budget=event_budget)
        dbg.break_on_backward, dbg.break_on_forward = bool(break_on_backward), bool(break_on_forward)
        for spec in breakpoints:  # Breakpoints, add_breakpoint-style dicts, or op names
            dbg._new_breakpoint(spec if isinstance(spec, (Breakpoint, dict)) else {"op": spec})
        try:
            dbg._start(script, list(args), demo, cwd, start_timeout,
                       dict(stop_on_entry=stop_on_entry, break_on_backward=break_on_backward,
                            break_on_forward=break_on_forward,
                            breakpoints=[bp.to_wire() for bp in dbg.breakpoints.values()]))
        except BaseException:
            dbg.close()
            raise
        return dbg

    @classmethod
    def attach(cls, address, secret=None, *, stop_on_entry=True, break_on_backward=None, break_on_forward=None,
               breakpoints=(), budget_bytes=DEFAULT_BUDGET, event_budget=EVENT_BUDGET, timeout=10.0,
               reconnect_timeout=30.0):
        """Attach to a program that ``gradviz serve`` runs, here or on another machine:
        ``address`` is the ``"HOST:PORT"`` it printed, ``secret`` the secret it printed (default:
        the ``GRADVIZ_SECRET`` environment variable). The same API as ``launch`` follows. The
        program waits at its entry until a window lets it go: with ``stop_on_entry=False`` this
        one does, once the switches and breakpoints given here are in place. A dropped link is
        made again for up to ``reconnect_timeout`` seconds, resuming where the stream broke off;
        ``close()`` detaches (``terminate()`` ends the program)."""
        secret = secret if secret is not None else os.environ.get(remote.SECRET_ENV)
        if not secret:
            raise DebuggerError("attaching needs the secret that gradviz serve printed "
                                f"(secret=, or ${remote.SECRET_ENV})")
        dbg = cls(budget_bytes=budget_bytes, event_budget=event_budget)
        try:
            dbg._link = remote.RelayLink(address, secret, timeout=timeout, reconnect_timeout=reconnect_timeout,
                                         on_resync=dbg._resync)
        except (OSError, ValueError) as exc:  # refused, unreachable, not a relay, a bad address
            raise DebuggerError(str(exc)) from None
        config = dbg._link.config
        dbg.break_on_backward = bool(config.get("break_on_backward"))
        dbg.break_on_forward = bool(config.get("break_on_forward"))
        for wire in config.get("breakpoints", ()):  # what the program has, whoever set it
            bp = Breakpoint.from_wire(wire)
            dbg.breakpoints[bp.id] = bp
        dbg._ids = itertools.count(int(config.get("next_id", 1)))
        dbg.state = "running"
        dbg._spawn(dbg._read_stream)
        try:
            if break_on_backward is not None or break_on_forward is not None:
                dbg.configure(break_on_backward=break_on_backward, break_on_forward=break_on_forward)
            for spec in breakpoints:
                dbg.add(spec if isinstance(spec, (Breakpoint, dict)) else {"op": spec})  # as launch takes them
            if not stop_on_entry and dbg._link.at_entry:
                pause = dbg.wait_paused(timeout)
                if pause.reason == "entry":
                    dbg.resume()
        except BaseException:
            dbg.close()
            raise
        return dbg

    @property
    def link_status(self) -> str:
        """An attached program's link, in a few words ("" for a launched one)."""
        link = self._link
        if link is None:
            return ""
        if link.down and self.state != "exited":
            return f"link to {link.address} lost: attaching again"
        return f"attached to {link.address}"

    def _resync(self, current):
        """After a dropped link was made again: ``current`` is the pause the program waits in
        (already received), or None when it runs (or its pause is still on the way)."""
        with self.lock:
            if current is not None:
                if self.state != "paused":
                    self._handle(current)
            elif self.state == "paused":
                self.state = "running"

    def _start(self, script, args, demo, cwd, start_timeout, config):
        self._tmp = tempfile.mkdtemp(prefix="gradviz-")
        server, address = protocol.listen(self._tmp)
        token = secrets.token_hex(32)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{protocol.TOKEN_ENV: token})
        from gradviz.debug.session import command
        # The child dies with this process (PR_SET_PDEATHSIG fires when the thread that started it
        # ends, so only from the main thread; the socket's end stops it otherwise).
        parent = os.getpid() if threading.current_thread() is threading.main_thread() else None
        cmd = command(self.values, connect=address, demo=demo, script=script, args=args, cwd=cwd, parent=parent)
        # Its own process group: terminate() ends the program's own subprocesses with it.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=self._tmp,
                                     start_new_session=hasattr(os, "killpg"))
        _children.add(self.proc)
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            self._spawn(self._read_output, name, pipe)
        try:
            self._conn = self._accept(server, token, start_timeout)
        finally:
            server.close()
        if self._conn is None:
            timed_out = self.proc.poll() is None
            _kill_group(self.proc)
            self.proc.wait()
            self._finish_output()
            err = "".join(t for s, t in self.output if s == "stderr").strip()
            what = (f"the program did not connect within {start_timeout:g} s" if timed_out else
                    f"the program failed to start (exit status {self.proc.returncode})")
            raise DebuggerError(what + (f":\n{err}" if err else ""))
        protocol.send_message(self._conn, {"cmd": "configure", **config})
        self.state = "running"
        self._spawn(self._read_stream)

    def _accept(self, server: socket.socket, token: str, timeout: float) -> socket.socket | None:
        """The child's connection, once it has presented ``token`` (and, where the platform says,
        comes from the child's pid); None if the child ended or the deadline passed. Every
        connection is read at once, without blocking: a slow, silent or malformed one never holds
        up the real child, and is refused quietly. The deadline holds over the whole handshake."""
        deadline = time.monotonic() + timeout
        proc = self.proc
        assert proc is not None, "the child is started before its connection is awaited"
        server.setblocking(False)
        pending: dict[socket.socket, bytes] = {}  # connection -> bytes received so far
        sel = selectors.DefaultSelector()
        sel.register(server, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return None
                for key, _ in sel.select(timeout=min(0.1, max(deadline - time.monotonic(), 0))):
                    if key.fileobj is server:
                        try:
                            conn, _ = server.accept()
                        except OSError:
                            continue
                        if len(pending) >= _MAX_PENDING:  # a flood: refuse, keep the others
                            conn.close()
                            continue
                        conn.setblocking(False)
                        pending[conn] = b""
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    conn = typing.cast(socket.socket, key.fileobj)
                    try:
                        data = conn.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    buf = pending[conn] + data
                    verdict = _hello_verdict(buf, token) if data else False
                    if verdict is None:  # not all of it yet
                        pending[conn] = buf
                        continue
                    sel.unregister(conn)
                    del pending[conn]
                    if verdict and _peer_is(conn, proc.pid):
                        conn.setblocking(True)
                        conn.settimeout(None)
                        return conn
                    conn.close()  # not our child: refused
            return None
        finally:
            sel.close()
            for conn in pending:
                conn.close()

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True, name=f"gradviz-{target.__name__}")
        t.start()
        self._threads.append(t)

    # -- what the child sends ------------------------------------------------------------------------
    def _read_output(self, name, pipe):
        # Incremental: a character whose UTF-8 bytes are split across two reads is decoded whole.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for raw in itertools.chain(iter(lambda: pipe.read1(1 << 16), b""), [None]):
            text = decoder.decode(b"", final=True) if raw is None else decoder.decode(raw)
            if text:
                self._on_output(name, text)
        pipe.close()

    def _on_output(self, name, text):
        with self.lock:
            self.output.append((name, text))
            self.trace.apply(ev.ProgramOutput(name, text))

    def _finish_output(self):
        for t in self._threads:
            if t.name.endswith("_read_output"):
                t.join(timeout=2)

    def _read_stream(self):
        detail = ""
        try:
            for e in self._events():
                self._handle(e)
        except TraceFormatError as exc:
            try:
                for e in getattr(exc, "events", ()):  # the good events decoded before the bad frame
                    self._handle(e)
            except Exception:  # noqa: BLE001 (the corrupt frame is the news)
                pass
            detail = f"the program's event stream was corrupt: {exc}"
            self._kill()
        except OSError:
            pass
        except Exception as exc:  # noqa: BLE001 (an event the trace cannot take: as load() says it)
            detail = f"the program's events do not form a consistent trace: {exc!r}"
            self._kill()
        code, why = self._ended()
        detail = detail or why
        with self.lock:
            self.state = "exited"
        self._post(Pause("exited", exit_code=code, detail=detail or (self.program_error or ""),
                         traceback=self.program_error))
        with self._fetch_cond:
            self._fetch_cond.notify_all()

    # The transport: the events, how the program is ended, how it ended. A launched program's
    # are its socket and its process; an attached one's, the relay's link (Debugger.attach).
    def _events(self):
        if self._link is not None:
            yield from self._link.events()
            return
        conn = self._conn
        assert conn is not None, "read once the child has connected"
        self._decoder = dec = StreamDecoder()
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            yield from dec.feed(data)

    def _kill(self):
        if self._link is not None:
            self._link.close()
        elif self.proc is not None:
            _kill_group(self.proc)

    def _ended(self) -> tuple[int | None, str]:
        """The program's exit status and, where the status does not say it all, why it ended."""
        if self._link is not None:
            return self._link.end
        proc = self.proc
        assert proc is not None, "a launched program has a process"
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = proc.wait()
        self._finish_output()
        if self._decoder is not None and self._decoder.pending_bytes():
            return code, "the program died in the middle of an event; the trace keeps everything before it"
        return code, f"killed by signal {-code}" if code < 0 else ""

    def _handle(self, e):
        t = type(e)
        if t is ev.Paused:
            with self.lock:
                node = self.trace.nodes.get(e.node) if e.node is not None else None
                pause = Pause(e.reason, e.phase, e.node, node.op if node else None, e.pass_index,
                              [None if v is None else v.array for v in e.grad_outputs],
                              [None if v is None else v.array for v in e.grad_inputs],
                              node.source if node else None, node.scope if node else "", e.detail, e.traceback)
                self.state = "paused"
            self._post(pause)
        elif t is ev.NodeChecked:
            with self._fetch_cond:
                if e.node is None and not e.result:
                    self._checks_done.add(e.request)
                else:
                    try:
                        check = NodeCheck.from_wire(json.loads(e.result))
                    except ValueError as exc:
                        check = NodeCheck(e.node, "", None, reason=f"unreadable check result: {exc}")
                    self._checks.setdefault(e.request, []).append(check)
                    if check.node is not None:
                        self.checks[check.node] = check
                self._fetch_cond.notify_all()
        elif t is ev.TensorValue:
            with self._fetch_cond:
                self._fetches[e.request] = e
                self._fetch_cond.notify_all()
        else:
            with self.lock:
                if t is ev.ProgramExited:
                    self.program_error = e.error
                elif t is ev.ProgramOutput and self._link is not None:  # no pipes: the relay read them
                    self.output.append((e.stream, e.text))
                self.trace.apply(e)

    def _post(self, pause):
        self.last_pause = pause
        self._pauses.put(pause)

    # -- controlling -------------------------------------------------------------------------------
    def wait_paused(self, timeout=10.0):
        """The next pause (an ``exited`` pause once the program has ended)."""
        if self.state == "exited" and self._pauses.empty():
            return self.last_pause
        try:
            return self._pauses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the program did not pause within {timeout} s (it is {self.state})") from None

    def poll_pause(self):
        """The next pause if one has come, else None: for a GUI's timer, which must not block."""
        try:
            return self._pauses.get_nowait()
        except queue.Empty:
            return None

    def _send(self, msg):
        if self.state == "exited" or (self._conn is None and self._link is None):
            raise DebuggerError("the program has exited")
        try:
            if self._link is not None:
                self._link.send(msg)
            else:
                protocol.send_message(self._conn, msg)
        except OSError as exc:
            raise DebuggerError(f"the program is gone: {exc}" if self._link is None else str(exc)) from None

    def _require_paused(self, what):
        if self.state != "paused":
            raise DebuggerError(f"cannot {what}: the program is {self.state}, not paused")

    def step(self):
        """Run the current node and pause before the next one (of the same pass direction)."""
        self._go("step")

    def resume(self):
        self._go("resume")

    def _go(self, cmd):
        with self.lock:  # a pause that comes back before the command is sent finds it sent
            self._require_paused(cmd)
            self.state = "running"
            try:
                self._send({"cmd": cmd})
            except DebuggerError:
                if self._link is not None and self.state == "running":
                    self.state = "paused"  # the link is being made again: the program waits there still
                raise

    def interrupt(self):
        """Pause at the next graph operation the program makes or runs; a program that makes none
        for a moment (a loop or a sleep without autograd) pauses where it is, in its Python code
        (a ``program`` pause without a node; on platforms without ``signal.pthread_kill``, only
        at a graph operation)."""
        self._send({"cmd": "interrupt"})

    def terminate(self, timeout=1.0):
        """End the program, whatever it is doing, within ``timeout`` seconds, and every process it
        started (its process group)."""
        if self._link is not None:  # attached: the relay ends it, and the stream then ends
            if self.state != "exited":
                try:
                    self._link.send({"cmd": "terminate"})
                except OSError:
                    pass
                deadline = time.monotonic() + max(timeout, 0.1) + 2.0
                while self.state != "exited" and time.monotonic() < deadline:
                    time.sleep(0.02)
            return
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                if self._conn is not None:
                    protocol.send_message(self._conn, {"cmd": "terminate"})
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc)  # what the program started, which outlives it otherwise
        self.proc.wait()

    def configure(self, break_on_backward=None, break_on_forward=None):
        """Switch stepping on or off: pause before every backward node, or as every op is made."""
        if break_on_backward is not None:
            self.break_on_backward = bool(break_on_backward)
        if break_on_forward is not None:
            self.break_on_forward = bool(break_on_forward)
        self._send({"cmd": "configure", "break_on_backward": self.break_on_backward,
                    "break_on_forward": self.break_on_forward})

    # -- breakpoints -------------------------------------------------------------------------------
    def _new_breakpoint(self, spec):
        """Number ``spec`` (a Breakpoint, or a dict of add_breakpoint's arguments) and keep it."""
        bp = (spec if isinstance(spec, Breakpoint) else Breakpoint.of(dict(spec))).with_id(next(self._ids))
        self.breakpoints[bp.id] = bp
        return bp

    def add(self, bp):
        """Add Breakpoint ``bp`` (its id is ignored: the program numbers it). Returns its id."""
        bp = self._new_breakpoint(bp)
        if self.state != "starting":
            self._send({"cmd": "add_breakpoint", "spec": bp.to_wire()})
        return bp.id

    def add_breakpoint(self, op=None, node=None, tensor=None, anomaly=False, grad_norm_above=None, source=None,
                       peer=None):
        """Pause before a backward node named ``op`` or with id ``node``, or made at ``source``
        (``"file:line"``, or ``"name.py:line"``: a line breakpoint, which holds in every iteration,
        where a node id is one iteration's); before "this node in every iteration": ``peer`` is
        ``{"op", "scope", "source": "file:line", "rank"}``, the rank-th node of that op made at that
        line in that module scope in each iteration (what F9 on a graph node sets: a model's
        ``loss = loss_fn(model(x), y)`` line makes all its nodes); when ``tensor`` (a name or
        id) gets its gradient accumulated; at the first node whose output or gradient holds NaN or
        Inf (``anomaly``); or before a node whose incoming gradient's norm is above
        ``grad_norm_above``. Returns the breakpoint's id."""
        return self.add(Breakpoint.of(dict(op=op, node=node, tensor=tensor, anomaly=anomaly,
                                           grad_norm_above=grad_norm_above, source=source, peer=peer)))

    def remove_breakpoint(self, bp_id=None, **spec):
        """Remove a breakpoint by id, or by the same arguments it was added with."""
        if bp_id is None:
            want = {k: v for k, v in spec.items() if v not in (None, False)}
            bp_id = next((i for i, bp in self.breakpoints.items() if bp.condition() == want), None)
        if bp_id not in self.breakpoints:
            raise KeyError(f"no such breakpoint: {bp_id if bp_id is not None else spec}")
        del self.breakpoints[bp_id]
        self._send({"cmd": "remove_breakpoint", "id": bp_id})

    # -- values ------------------------------------------------------------------------------------
    def saved_tensors(self, timeout=30.0):
        """The tensors the node paused at saved for its backward (what it is about to read), as
        [(name, full array)]: PyTorch's ``_saved_<name>`` names; ``saved 0``... in the engine."""
        out: list[tuple[str, object]] = []
        while True:
            try:
                answer = self._fetch({"what": "saved", "index": len(out)}, timeout)
            except KeyError as exc:
                if "has no saved tensor" in str(exc):
                    return out
                raise
            out.append((answer.name, answer.value.array))

    def explain(self, node=None, pass_index=None):
        """The local rule each grad_input of ``node`` (an id; default the paused node) follows, and
        the same rule with its values substituted, computed and checked against the recorded
        grad_inputs: an ``Explanation`` (``.text``; ``.terms``, one ``Term`` per grad_input with
        ``rule``, ``substituted``, ``computed``, ``recorded``, ``matches``)."""
        pause = self.last_pause
        paused_here = node is None or (pause is not None and node == pause.node)
        if node is None:
            if pause is None or pause.node is None:
                raise DebuggerError("not paused at a node: pass node=")
            node = pause.node
        saved: list = []
        if paused_here and self.state == "paused" and pause is not None and pause.phase == "backward":
            try:
                saved = self.saved_tensors()
            except KeyError:  # freed, or nothing saved: the rule reads the trace's values
                saved = []
        with self.lock:
            return explain_node(self.trace, node, pass_index, saved)

    def vjp(self, v, timeout=30.0):
        """The paused node's backward run once more in the child on ``v`` (one array per
        grad_output): v^T . J, one array per grad_input (None where it gives none). Only that
        node runs again; the program and the pass in progress are not touched."""
        wire = [np.asarray(x, dtype=np.float64).ravel().tolist() for x in v]
        out: list = []
        while True:
            try:
                answer = self._fetch({"what": "vjp", "v": wire, "index": len(out)}, timeout)
            except KeyError as exc:
                if "has no grad_input" in str(exc):
                    return out
                if "is None" in str(exc):
                    out.append(None)
                    continue
                raise
            out.append(self._fit(answer.value.array, len(out)))

    def _fit(self, grad, i):
        """A grad_input as the pass would pass it on: summed to the shape of what it flows into,
        the node its edge i leads to (PyTorch's engine does that after a grad_fn returns, which
        calling the grad_fn skips). Edge i is not always forward input i: F.embedding's one edge
        is its weight, its second input."""
        pause = self.last_pause
        node = self.trace.nodes.get(pause.node) if pause is not None and pause.node is not None else None
        if node is None or grad is None:
            return grad
        nexts = node.next_nodes
        nxt = self.trace.nodes.get(nexts[i]) if i < len(nexts) and nexts[i] is not None else None
        shape: tuple | None
        if nxt is not None:
            shape = tuple(nxt.output_shape)
        elif i < len(node.inputs):
            t, maker = self.trace.tensors.get(node.inputs[i]), self.trace.maker(node.inputs[i])
            shape = tuple(t.shape) if t is not None else tuple(maker.output_shape) if maker is not None else None
        else:
            return grad
        if shape is None or grad.shape == shape:
            return grad
        try:
            return unbroadcast(grad, shape)[0].reshape(shape)
        except ValueError:
            return grad

    def jacobian(self, node=None, max_elements=64, timeout=30.0):
        """The paused node's Jacobian for each differentiable input, one VJP per output element
        (v a unit vector), and the check: the incoming v^T . J equals its grad_inputs. A
        ``Jacobian``; for a node whose inputs or output exceed ``max_elements``, a DebuggerError."""
        pause = self.last_pause
        if pause is None or pause.node is None or pause.phase != "backward" or self.state != "paused":
            raise DebuggerError("the Jacobian needs the program paused before a backward node")
        if node is not None and node != pause.node:
            raise DebuggerError("the Jacobian is of the paused node (its backward runs once per output element)")
        v = [np.asarray(g, dtype=np.float64) for g in pause.grad_outputs]
        n_out = sum(g.size for g in v)
        if n_out > max_elements:
            raise DebuggerError(f"its output has {n_out} elements, more than {max_elements}")
        rows = []
        for k in range(n_out):
            unit = np.zeros(n_out)
            unit[k] = 1.0
            parts, start = [], 0
            for g in v:
                parts.append(unit[start:start + g.size].reshape(g.shape))
                start += g.size
            rows.append(self.vjp(parts, timeout))
        blocks: list[np.ndarray | None] = []
        for i in range(len(rows[0]) if rows else 0):
            if rows[0][i] is None:
                blocks.append(None)
                continue
            if rows[0][i].size > max_elements:
                raise DebuggerError(f"its input {i} has {rows[0][i].size} elements, more than {max_elements}")
            blocks.append(np.stack([np.asarray(r[i], dtype=np.float64).ravel() for r in rows]))
        return Jacobian(pause.node, pause.op or "", v, blocks, self.vjp(v, timeout))

    # -- gradient checks (gradviz.debug.check) -----------------------------------------------------
    def check_node(self, node=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, max_evals=MAX_EVALS, seed=0,
                   time_budget=TIME_BUDGET, timeout=60.0):
        """Check the paused node's backward: its vector-Jacobian product for the grad_outputs it
        received against central finite differences of its forward, run again in float64 in the
        child on the inputs it saw (see docs/checking.md). A ``NodeCheck``: ``ok`` None with a
        ``reason`` when it cannot be checked."""
        request = self.start_check_node(node, eps, atol, rtol, max_evals=max_evals, seed=seed,
                                        time_budget=time_budget)
        deadline = time.monotonic() + timeout
        with self._fetch_cond:
            while not self._checks.get(request):
                left = deadline - time.monotonic()
                if left <= 0 or self.state == "exited":
                    raise DebuggerError("no answer to the check" if left <= 0 else "the program has exited")
                self._fetch_cond.wait(left)
            return self._checks.pop(request)[0]

    def start_check_node(self, node=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, max_evals=MAX_EVALS, seed=0,
                         time_budget=TIME_BUDGET):
        """``check_node`` without waiting (for a GUI): returns the request; ``checks_of(request)``
        holds its one NodeCheck once the child has answered."""
        pause = self.last_pause
        if self.state != "paused" or pause is None or pause.phase != "backward" or pause.node is None:
            raise DebuggerError("a node is checked while the program is paused before it in backward")
        if node is not None and node != pause.node:
            raise DebuggerError(f"check_node checks the paused node (n{pause.node}), not n{node}: before a node "
                                "runs is when its inputs and saved tensors are there (check_pass checks them all)")
        request = next(self._ids)
        self._send({"cmd": "check", "request": request,
                    **_check_options(eps, atol, rtol, max_evals, seed, time_budget)})
        return request

    def start_check_pass(self, pass_index=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, max_evals=MAX_EVALS, seed=0,
                         time_budget=TIME_BUDGET):
        """Let the program run on, checking every node of backward pass ``pass_index`` (default: the
        pass paused in, else the next one) as it comes, before it runs, pausing nowhere else; it
        pauses (reason ``checked``) when that pass ends. Returns the request: ``checks_of(request)``
        holds the results so far (the progress), in the order the nodes ran."""
        self._require_paused("check a pass")
        request = next(self._ids)
        self._checks[request] = []
        self.state = "running"
        self._send({"cmd": "check_pass", "request": request, "pass_index": pass_index,
                    **_check_options(eps, atol, rtol, max_evals, seed, time_budget)})
        return request

    def checks_of(self, request):
        """The NodeChecks a check_pass request has made so far, and whether it is done (for a
        ``start_check_node`` request: its one NodeCheck once answered)."""
        with self._fetch_cond:
            return list(self._checks.get(request, [])), request in self._checks_done

    def check_pass(self, pass_index=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, max_evals=MAX_EVALS, seed=0,
                   time_budget=TIME_BUDGET, timeout=600.0):
        """``start_check_pass`` and wait for its pause: the NodeChecks of every node of the pass, in
        the order they ran. Raises DebuggerError if the program ends first (what was checked is in
        ``checks_of``)."""
        request = self.start_check_pass(pass_index, eps, atol, rtol, max_evals=max_evals, seed=seed,
                                        time_budget=time_budget)
        deadline = time.monotonic() + timeout
        while True:
            pause = self.wait_paused(max(0.0, deadline - time.monotonic()))
            if pause.reason in ("checked", "exited", "exception"):
                break
        checks, done = self.checks_of(request)
        if not done:
            raise DebuggerError(f"the program ended before the pass was checked ({len(checks)} nodes checked)")
        return checks

    def fetch(self, tensor=None, grad=None, grad_output=None, grad_input=None, timeout=30.0):
        """The full current value, while paused, of a live tensor (by name or id), a tensor's
        ``.grad``, or the current node's ``grad_output``/``grad_input`` number i."""
        if tensor is not None:
            msg = {"what": "tensor", **_tensor_ref(tensor)}
        elif grad is not None:
            msg = {"what": "grad", **_tensor_ref(grad)}
        elif grad_output is not None:
            msg = {"what": "grad_output", "index": int(grad_output)}
        elif grad_input is not None:
            msg = {"what": "grad_input", "index": int(grad_input)}
        else:
            raise ValueError("fetch takes one of tensor=, grad=, grad_output=, grad_input=")
        return self._fetch(msg, timeout).value.array

    def _fetch(self, msg, timeout):
        self._require_paused("fetch values")
        request = next(self._ids)
        self._send({"cmd": "fetch", "request": request, **msg})
        deadline = time.monotonic() + timeout
        with self._fetch_cond:
            while request not in self._fetches:
                left = deadline - time.monotonic()
                if left <= 0 or self.state == "exited":
                    raise DebuggerError("no answer to the fetch" if left <= 0 else "the program has exited")
                self._fetch_cond.wait(left)
            answer = self._fetches.pop(request)
        if answer.error:
            raise KeyError(answer.error)
        return answer

    # -- ending ------------------------------------------------------------------------------------
    def close(self):
        """End the program (a launched one); an attached one is left to the relay: detached."""
        if self._link is not None:
            self._link.close()
        else:
            self.terminate()
        if self.proc is not None:
            self.proc.wait()
            _children.discard(self.proc)
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _check_options(eps, atol, rtol, max_evals, seed, time_budget=TIME_BUDGET):
    return {"eps": float(eps), "atol": float(atol), "rtol": float(rtol), "max_evals": int(max_evals),
            "seed": int(seed), "time_budget": float(time_budget)}


def _tensor_ref(x):
    if isinstance(x, int):
        return {"id": x}
    if isinstance(x, str) and x[:1] == "t" and x[1:].isdigit():
        return {"id": int(x[1:])}
    return {"name": str(x)}
