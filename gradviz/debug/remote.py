"""Remote attach: the wire between ``gradviz serve`` (the relay, ``gradviz.debug.relay``) and a
window (``Debugger.attach``), and the window's end of it, ``RelayLink``. See docs/remote.md.

Wire version 1. Both directions start with a handshake of length-prefixed JSON messages
(``u32 length`` + UTF-8 JSON object, at most ``MAX_HELLO`` bytes each):

    relay  -> window   {"gradviz": "relay", "version": 1, "nonce": N1}
    window -> relay    {"version": 1, "nonce": N2, "mac": HMAC(secret, "attach" N1 N2), "have": K}
    relay  -> window   {"ok": true, "mac": HMAC(secret, "relay" N2 N1), "events": E, "paused_at": P,
                        "config": {...}}  or  {"ok": false, "error": "..."} and the end

HMAC is HMAC-SHA256 over the labelled nonces, compared in constant time: the secret never
crosses the wire and a recorded answer is worth nothing against a fresh nonce; each side proves
it holds the secret. ``K`` is how many events the window already has: the relay sends the stream
from event K on (the events are numbered from 0 in the order the program sent them), ``E`` is
how many there are now (those before E are history: of their pauses only the current one, event
``P``, is a pause to show).

Then the relay sends chunks, the window sends commands (``gradviz.debug.protocol``'s messages):

    chunk   b"GVWB"  u8 kind  u8 codec  u32 payload length  u32 raw length  u32 CRC-32 of raw
            kind "E": raw is a piece of the .gvz stream (gradviz.trace.gvz): the file header, then
                      whole event frames; the chunks of one connection concatenated are a .gvz file
            kind "C": raw is a JSON object: {"ended": true, "exit_code": ..., "detail": ...}
            codec 0: payload is raw; 1: payload is zlib(raw), used where it pays
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import struct
import threading
import time
import zlib

from gradviz import events as ev
from gradviz.debug import protocol
from gradviz.trace.gvz import StreamDecoder, TraceFormatError

WIRE_VERSION = 1
SECRET_ENV = "GRADVIZ_SECRET"
MAX_HELLO = 4096  # bytes of one handshake message
HANDSHAKE_TIMEOUT = 10.0  # seconds for the whole handshake, each connection its own
CHUNK_MAGIC = b"GVWB"
_CHUNK = struct.Struct("<4sBBIII")
EVENTS, CONTROL = ord("E"), ord("C")
RAW, ZLIB = 0, 1
MAX_CHUNK = 1 << 30  # raw bytes in one chunk: a claim beyond is a corrupt stream
COMPRESS_MIN = 512  # raw bytes below which a chunk is sent as it is
SAMPLE = 8192  # bytes of a larger chunk tried first (see _pays)
_LEN = struct.Struct("<I")


class AttachError(ConnectionError):
    """The relay could not be reached, refused the secret, or is not a gradviz relay."""


# -- addresses and secrets -------------------------------------------------------------------------
def parse_address(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6; ``":PORT"`` or ``"PORT"`` with a default host)."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise ValueError(f"{text!r} is not an address: expected HOST:PORT")
        host = default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not an address: expected HOST:PORT with a port from 0 to 65535")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_secret() -> str:
    return secrets.token_urlsafe(18)


def mac(secret: str, label: str, first: str, second: str) -> str:
    msg = f"gradviz-{label}\0{first}\0{second}".encode()
    return hmac.new(secret.encode("utf-8", "surrogatepass"), msg, hashlib.sha256).hexdigest()


def verify(secret: str, label: str, first: str, second: str, got) -> bool:
    return isinstance(got, str) and hmac.compare_digest(mac(secret, label, first, second).encode(),
                                                        got.encode("utf-8", "surrogatepass"))


# -- handshake messages ----------------------------------------------------------------------------
def message(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def parse_hello(buf: bytes, exact=True):
    """A whole handshake message in ``buf``: its object; None: more bytes may make one; False:
    it is not one, nor can it become one (too long, not JSON, not an object, bytes after it)."""
    if len(buf) < 4:
        return None
    (n,) = _LEN.unpack_from(buf)
    if n > MAX_HELLO:
        return False
    if len(buf) < 4 + n:
        return None
    if exact and len(buf) > 4 + n:
        return False  # nothing may follow: the other side waits for our answer
    try:
        obj = json.loads(buf[4:4 + n].decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return obj if isinstance(obj, dict) else False


def _recv_hello(sock: socket.socket, deadline: float) -> dict:
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AttachError("the relay did not finish the handshake in time")
        sock.settimeout(left)
        data = sock.recv(4 - len(buf) if len(buf) < 4 else 4 + _LEN.unpack_from(buf)[0] - len(buf))
        if not data:
            raise AttachError("the relay closed the connection during the handshake")
        buf += data
        got = parse_hello(buf)
        if got is False:
            raise AttachError("not a gradviz relay (its handshake is malformed)")
        if got is not None:
            return got


def handshake(sock: socket.socket, secret: str, have: int, timeout: float) -> dict:
    """The window's side: prove the secret, check the relay's proof; the relay's welcome."""
    deadline = time.monotonic() + timeout
    hello = _recv_hello(sock, deadline)
    if hello.get("gradviz") != "relay" or not isinstance(hello.get("nonce"), str):
        raise AttachError("not a gradviz relay")
    if hello.get("version") != WIRE_VERSION:
        raise AttachError(f"the relay speaks wire version {hello.get('version')}, this gradviz {WIRE_VERSION}: "
                          "use the same gradviz on both machines")
    mine = secrets.token_hex(16)
    sock.sendall(message({"version": WIRE_VERSION, "nonce": mine, "mac": mac(secret, "attach", hello["nonce"], mine),
                          "have": have}))
    welcome = _recv_hello(sock, deadline)
    if not welcome.get("ok"):
        raise AttachError(str(welcome.get("error") or "the relay refused the attach"))
    if not verify(secret, "relay", mine, hello["nonce"], welcome.get("mac")):
        raise AttachError("the relay could not prove it knows the secret")
    return welcome


# -- chunks ----------------------------------------------------------------------------------------
def encode_chunk(kind: int, raw: bytes, compress=True) -> bytes:
    payload, codec = raw, RAW
    if compress and len(raw) >= COMPRESS_MIN and _pays(raw):
        packed = zlib.compress(raw, 1)
        if len(packed) < len(raw) * 0.9:
            payload, codec = packed, ZLIB
    return _CHUNK.pack(CHUNK_MAGIC, kind, codec, len(payload), len(raw), zlib.crc32(raw)) + payload


def _pays(raw: bytes) -> bool:
    """Whether zlib is worth its time on ``raw``, judged on a sample from its middle: the JSON of
    events and summaries shrinks 5-6x; the float arrays of full values hardly at all (8% on
    resnet18's, for 40x the CPU time: bench/bench_remote.py)."""
    if len(raw) <= 2 * SAMPLE:
        return True
    mid = len(raw) // 2
    sample = raw[mid - SAMPLE // 2:mid + SAMPLE // 2]
    return len(zlib.compress(sample, 1)) < 0.8 * len(sample)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(min(n - len(buf), 1 << 20))
        if not data:
            raise EOFError("the relay closed the connection")
        buf += data
    return bytes(buf)


def read_chunk(sock: socket.socket) -> tuple[int, bytes]:
    """The next chunk's kind and raw bytes; TraceFormatError for a corrupt one."""
    magic, kind, codec, size, raw_size, crc = _CHUNK.unpack(_recv_exact(sock, _CHUNK.size))
    if magic != CHUNK_MAGIC or kind not in (EVENTS, CONTROL) or codec not in (RAW, ZLIB):
        raise TraceFormatError("the relay's stream is corrupt (a bad chunk header)")
    if raw_size > MAX_CHUNK or size > MAX_CHUNK or (codec == RAW and size != raw_size):
        raise TraceFormatError(f"the relay's stream is corrupt (a chunk claims {raw_size} bytes)")
    payload = _recv_exact(sock, size)
    if codec == ZLIB:
        z = zlib.decompressobj()
        try:
            raw = z.decompress(payload, raw_size)  # never more than it claims: no zlib bomb
        except zlib.error:
            raise TraceFormatError("the relay's stream is corrupt (bad compressed data)") from None
        if len(raw) != raw_size or z.unconsumed_tail:
            raise TraceFormatError("the relay's stream is corrupt (a chunk's size is wrong)")
    else:
        raw = payload
    if zlib.crc32(raw) != crc:
        raise TraceFormatError("the relay's stream is corrupt (a chunk's checksum does not match)")
    return kind, raw


# -- the window's end --------------------------------------------------------------------------------
class RelayLink:
    """A window's link to a relay: the program's events, numbered, with no loss and no repeat
    across dropped connections (each new connection says how many it has), and its commands."""

    def __init__(self, address, secret, timeout=10.0, reconnect_timeout=30.0, on_resync=None):
        self.host, self.port = parse_address(address, default_host="127.0.0.1")  # "5678": a tunnel's end
        self.address = format_address(self.host, self.port)
        self._secret, self._timeout, self._reconnect_timeout = secret, timeout, reconnect_timeout
        self._on_resync = on_resync
        self.seen = 0  # events received, in order: the next one's number
        self.end: tuple[int | None, str] = (None, "")
        self.reconnects = 0
        self.down = False  # the connection dropped and is being made again
        self._closing = False
        self._send_lock = threading.Lock()
        self._last_pause: tuple[int, ev.Paused] | None = None
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        except OSError as exc:
            raise AttachError(f"cannot reach a gradviz relay at {self.address}: {exc.strerror or exc}") from None
        try:
            welcome = handshake(sock, self._secret, self.seen, self._timeout)
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, AttachError):
                raise AttachError(f"{self.address}: {exc}") from None
            if isinstance(exc, OSError):
                raise AttachError(f"{self.address}: the handshake failed: {exc}") from None
            raise
        self._live_from = _count(welcome.get("events"))
        self._paused_at = welcome.get("paused_at") if isinstance(welcome.get("paused_at"), int) else None
        self.config = welcome.get("config") if isinstance(welcome.get("config"), dict) else {}
        self.paused_reason = welcome.get("paused_reason") if self._paused_at is not None else None
        self.at_entry = welcome.get("at_entry") is True  # at its entry pause, or on its way there
        return sock

    def _reconnect(self, why) -> bool:
        deadline, wait = time.monotonic() + self._reconnect_timeout, 0.1
        while not self._closing:
            try:
                self._sock = self._connect()
                self.reconnects += 1
                return True
            except AttachError as exc:
                if "secret" in str(exc) or time.monotonic() + wait > deadline:
                    self.end = (None, f"the link to the relay at {self.address} was lost ({why}); "
                                      f"attaching again failed: {exc}")
                    return False
            time.sleep(wait)
            wait = min(wait * 2, 2.0)
        return False

    def events(self):
        """The program's events from the relay, until it ends (``end`` then says how)."""
        while True:
            sock, dec = self._sock, StreamDecoder()
            try:
                while True:
                    kind, raw = read_chunk(sock)
                    if kind == CONTROL:
                        msg = _control(raw)
                        if msg.get("ended"):
                            code = msg.get("exit_code")
                            self.end = (code if isinstance(code, int) else None, str(msg.get("detail") or ""))
                            self.close()
                            return
                        continue
                    for e in dec.feed(raw):
                        seq = self.seen
                        self.seen += 1
                        if type(e) is ev.Paused:
                            self._last_pause = (seq, e)
                            if seq < self._live_from and seq != self._paused_at:
                                continue  # a pause of the past, already resumed
                        yield e
            except (OSError, EOFError, ValueError) as exc:
                if isinstance(exc, TraceFormatError):
                    raise
                if self._closing:
                    if self.end == (None, ""):
                        self.end = (None, "detached from the relay")
                    return
                self.down = True
                if not self._reconnect(exc):
                    return
                self.down = False
                if self._on_resync is not None:
                    last = self._last_pause
                    pending = self._paused_at is not None and self._paused_at >= self.seen
                    current = last[1] if last is not None and last[0] == self._paused_at else None
                    self._on_resync(None if pending else current)

    def send(self, msg):
        with self._send_lock:
            try:
                protocol.send_message(self._sock, msg)
            except OSError as exc:
                raise ConnectionError(f"the link to the relay at {self.address} is down ({exc}); "
                                      "it is being made again") from None

    def drop(self):
        """Break the connection as a bad network would (it is made again): for tests and tools."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _control(raw: bytes) -> dict:
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        msg = None
    if not isinstance(msg, dict):
        raise TraceFormatError("the relay's stream is corrupt (a control chunk is not a JSON object)")
    return msg


def _count(x) -> int:
    return x if isinstance(x, int) and x >= 0 else 0
