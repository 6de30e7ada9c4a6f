"""Remote attach on a slow link: what batching and compressing the event stream save.

The stream is a recorded resnet18 training step (gradviz.engine's resnet18, every layer trained,
batch 2x3x64x64, one forward, backward and SGD step), recorded twice: with full values (the
default) and with summaries only (``--values summaries``).

(1) Per stream, the bytes on the wire and the CPU time to pack and unpack them, sent
    (a) one chunk per event, uncompressed; (b) batched in chunks of up to 256 KiB, uncompressed;
    (c) batched and zlib-compressed where that pays (what the relay does);
    and the time that would take on links of 10 and 100 Mbit/s (bytes / rate + CPU).
(2) End to end: ``gradviz serve`` (in this process) relays the recorded program to
    ``Debugger.attach`` through a proxy that holds the link to RATE Mbit/s, with and without
    compression: seconds from the attach to the program's end reaching the window.
(3) The relay's own cost: the same over loopback, unthrottled, against ``Debugger.launch`` of the
    same program (seconds from the start of the backward pass's program to its end in the window;
    pairs alternated, the median of 3).

Run: python bench/bench_remote.py [--rate MBIT]
"""
import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib

from gradviz.debug import remote
from gradviz.debug.debugger import Debugger
from gradviz.debug.relay import BATCH_BYTES, Relay
from gradviz.trace.gvz import encode_event, file_header, read_events

PROGRAM = textwrap.dedent("""
    import gradviz.engine as torch
    from gradviz.engine import nn, optim
    from gradviz.engine.models import resnet18
    torch.manual_seed(0)
    model = resnet18(weights=None)
    opt = optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([3, 1])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    print(f"loss {loss.item():.4f}")
""")


def _record(folder, values):
    script = os.path.join(folder, "train.py")
    with open(script, "w") as f:
        f.write(PROGRAM)
    out = os.path.join(folder, f"resnet18-{values}.gvz")
    subprocess.run([sys.executable, "-m", "gradviz", "record", "--values", values, script, "-o", out],
                   check=True, capture_output=True, cwd=folder)
    return script, out


def _batches(frames):
    batch, size = [], 0
    for f in frames:
        if batch and size + len(f) > BATCH_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(f)
        size += len(f)
    if batch:
        yield b"".join(batch)


def _wire(pieces, compress):
    t0 = time.perf_counter()
    chunks = [remote.encode_chunk(remote.EVENTS, p, compress) for p in pieces]
    pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in chunks:
        if c[5] == remote.ZLIB:
            zlib.decompress(c[remote._CHUNK.size:])
    unpack = time.perf_counter() - t0
    return sum(map(len, chunks)), pack + unpack


def offline(path):
    frames = [file_header()] + [encode_event(e) for e in read_events(path)]
    print(f"\n{os.path.basename(path)}: {len(frames) - 1} events, {sum(map(len, frames)) / 1e6:.1f} MB as a .gvz file")
    print(f"  {'sent as':<36}{'MB on the wire':>15}{'CPU s':>8}{'at 10 Mbit/s':>14}{'at 100 Mbit/s':>15}")
    rows = [("(a) one chunk per event, raw", frames, False), ("(b) batched, raw", list(_batches(frames)), False),
            ("(c) batched, zlib where it pays", list(_batches(frames)), True)]
    for name, pieces, compress in rows:
        size, cpu = _wire(pieces, compress)
        slow, fast = size * 8 / 10e6 + cpu, size * 8 / 100e6 + cpu
        print(f"  {name:<36}{size / 1e6:>15.2f}{cpu:>8.2f}{slow:>13.1f}s{fast:>14.1f}s")


class _Throttle:
    """A TCP proxy that passes the relay's bytes to the window at ``rate`` bytes a second."""

    def __init__(self, upstream, rate):
        self.upstream, self.rate = upstream, rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(remote.parse_address(self.upstream))
            threading.Thread(target=self._pump, args=(down, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, self.rate), daemon=True).start()

    @staticmethod
    def _pump(src, dst, rate):
        start, sent = time.monotonic(), 0
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                sent += len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def end_to_end(script, values, rate_mbit, compress):
    relay = Relay.start(script=script, values=values)
    relay.compress = compress
    try:
        relay.listen()
        threading.Thread(target=relay.serve, kwargs={"linger": 0}, daemon=True).start()
        proxy = _Throttle(relay.address, rate_mbit * 1e6 / 8) if rate_mbit else None
        while relay.pause_reason != "entry":  # the program ready at its entry: only the link is timed
            time.sleep(0.01)
        t0 = time.perf_counter()
        with Debugger.attach(proxy.address if proxy else relay.address, secret=relay.secret,
                             stop_on_entry=False) as dbg:
            while dbg.state != "exited":
                time.sleep(0.005)
            took = time.perf_counter() - t0
            n = len(dbg.trace.events)
        if proxy:
            proxy.server.close()
        return took, n
    finally:
        relay.close()


def launched(script, values):
    with Debugger.launch(script=script, values=values, stop_on_entry=True) as dbg:
        dbg.wait_paused(60)
        t0 = time.perf_counter()
        dbg.resume()
        while dbg.state != "exited":
            time.sleep(0.005)
        return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0, help="the link's rate in Mbit/s (default 50)")
    args = parser.parse_args()
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        for values in ("full", "summaries"):
            script, path = _record(folder, values)
            offline(path)
        print(f"\nend to end through a {args.rate:g} Mbit/s link (the program runs while the window receives):")
        for values in ("full", "summaries"):
            times = {c: end_to_end(script, values, args.rate, c) for c in (False, True)}
            (raw, n), (packed, _) = times[False], times[True]
            print(f"  values={values:<10} {n} events: raw {raw:.1f} s, compressed {packed:.1f} s "
                  f"(ratio {raw / packed:.2f}x)")
        print("\nthe relay's own cost, over loopback (median of 3 alternated pairs):")
        for values in ("full", "summaries"):
            local, relayed = [], []
            for _ in range(3):
                local.append(launched(script, values))
                relayed.append(end_to_end(script, values, 0, True)[0])
            a, b = statistics.median(local), statistics.median(relayed)
            print(f"  values={values:<10} Debugger.launch {a:.1f} s, serve + attach {b:.1f} s (ratio {b / a:.2f}x)")


if __name__ == "__main__":
    main()
