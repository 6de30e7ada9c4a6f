"""Recording a program of many small ops: an LSTMCell pair unrolled 100 steps, as in PyTorch's
time_sequence_prediction example (LSTMCell(1, 51), LSTMCell(51, 51), Linear(51, 1), a batch of 7:
357-value hidden states, ~3,300 graph nodes a pass), one training step (forward, MSE, backward,
SGD) plain versus recorded with summaries (and with full values), side by side in one run
(bench/_paired.py). Target: recorded at most 3x plain with summaries (goal 1.5x).

The same in gradviz's engine (``--engine``). PyTorch's intra-op threads and gradviz's Python work
share the cores: ``--threads 1`` sets ``torch.set_num_threads(1)`` (as OMP_NUM_THREADS=1 does);
measure both ways.

``--record-file``: the recorded side runs as ``gradviz record -o FILE`` runs the program in its child
process (gradviz/debug/session.py): every event goes through the session's sink, is encoded and
written to a trace file (the default file budget and value policy, full values as the command's
default; ``--values summaries`` as ``--values summaries``), with no in-memory Trace. The file is a
temporary one, removed at the end.

Run: python bench/bench_small_ops.py [--pairs N] [--threads N] [--engine] [--steps 100]
     [--record-file [--values full|summaries]]
"""
import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paired import paired, summary  # noqa: E402


def sequence_step(lib, steps=100, batch=7, hidden=51, seed=0):
    """One training step of time_sequence_prediction's model, in ``lib`` (torch or gradviz.engine)."""
    lib.manual_seed(seed)
    nn = lib.nn

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, xs):
            h = c = h2 = c2 = lib.zeros(batch, hidden)
            outputs = []
            for x in xs:
                h, c = self.lstm1(x, (h, c))
                h2, c2 = self.lstm2(h, (h2, c2))
                outputs.append(self.linear(h2))
            return outputs

    model = Sequence()
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    xs = [lib.randn(batch, 1) for _ in range(steps)]
    target = lib.randn(batch, 1)

    def step():
        opt.zero_grad()
        outputs = model(xs)
        loss = nn.functional.mse_loss(outputs[-1], target)
        for out in outputs[:-1]:
            loss = loss + nn.functional.mse_loss(out, target) * 0.01
        loss.backward()
        opt.step()
    return step


class FileRecording:
    """What ``gradviz record -o FILE`` runs in its child, as ``bench/_paired.py`` drives a recorder:
    the session, its producer and the budgeted trace-file writer (gradviz.debug.session.main)."""

    def __init__(self, path, values="full"):
        self.path, self.values = path, values
        self._attachment = None

    def start(self):
        from gradviz.adapters.engine import EngineAdapter
        from gradviz.debug.session import Session, SessionProducer, file_writer
        from gradviz.recording.attach import attach
        self.writer = file_writer(self.path)
        keep = self.values == "full"
        self.session = Session(self.writer, keep_arrays=keep, writer=self.writer)
        self.session.producer = SessionProducer(self.session, EngineAdapter(), keep_arrays=keep)
        self._attachment = attach(self.session.producer)
        return self

    def stop(self):
        self._attachment.stop()
        self.writer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--engine", action="store_true", help="gradviz's engine instead of PyTorch")
    parser.add_argument("--full", action="store_true", help="also record full values")
    parser.add_argument("--record-file", action="store_true",
                        help="record as `gradviz record -o FILE` does in its child: encoded and written to a file")
    parser.add_argument("--values", choices=("full", "summaries"), default="full",
                        help="with --record-file: the values written (gradviz record's --values)")
    args = parser.parse_args()
    import gradviz
    if args.engine:
        import gradviz.engine as lib
        what = "engine"
    else:
        import torch as lib
        if args.threads:
            lib.set_num_threads(args.threads)
        what = f"torch {lib.__version__}, {lib.get_num_threads()} threads"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, {what}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    step = sequence_step(lib, steps=args.steps)
    step()
    print(f"{'LSTMCell x' + str(args.steps):<22} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'middle half':>13} "
          f"{'target':>7} {'':4} {'all steps':>9}")
    modes = [("summaries", "summaries", 3.0)] + ([("full values", "full", None)] if args.full else [])
    if args.record_file:
        modes = [(f"record -o, {args.values}", args.values, None)]
    for name, values, target in modes:
        if args.record_file:
            import tempfile
            with tempfile.TemporaryDirectory(prefix="gradviz-bench-") as folder:
                rec = FileRecording(os.path.join(folder, "run.gvz"), values)
                p, r, ratio, (lo, hi), total = summary(*paired(step, rec, args.warmup, args.pairs))
                size = os.path.getsize(rec.path)
        else:
            p, r, ratio, (lo, hi), total = summary(*paired(step, gradviz.record(values=values), args.warmup,
                                                           args.pairs))
        verdict = "" if target is None else "ok" if ratio <= target else "MISS"
        print(f"{name:<22} {p * 1e3:>9.1f} {r * 1e3:>12.1f} {ratio:>6.2f} {lo:>6.2f}-{hi:<6.2f} "
              f"{'<= ' + str(target) if target else '':>7} {verdict:4} {total:>9.2f}")
        if args.record_file:
            print(f"(the trace file: {size / 2**20:.1f} MiB after {args.warmup + args.pairs} recorded steps)")


if __name__ == "__main__":
    main()
