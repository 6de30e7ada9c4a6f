"""``gradviz check``: run a program under the debugger to a backward pass, check every node of it
(``Debugger.check_pass``) and print one line per node and a summary."""
from __future__ import annotations

import os
import sys

from gradviz.debug.check import NodeCheck
from gradviz.debug.debugger import Debugger, DebuggerError

ACCUMULATE = ("AccumulateGrad", "torch::autograd::AccumulateGrad")


def node_line(check: NodeCheck, source=None) -> str:
    """One node's line: id, op, where forward made it, and its verdict."""
    where = f"  {os.path.basename(source.file)}:{source.line}" if source is not None else ""
    verdict = "ok  " if check.ok else "FAIL" if check.ok is False else "--  "
    text = check.summary().split(": ", 1)[1] if check.ok is not None else check.summary()
    if check.backward_source and check.ok is False:
        text += f"; its backward is at {check.backward_source}"
    return f"{verdict} n{check.node} {check.op}{where}: {text}"


def run_check(script=None, args=(), demo=None, pass_index=0, out=None, err=None, start_timeout=60.0,
              timeout=600.0) -> int:
    """Check every node of backward pass ``pass_index`` of the program; 0 if all checked nodes
    pass, 1 if any fails, 2 if the pass never came."""
    out, err = out or sys.stdout, err or sys.stderr
    with Debugger.launch(script=script, args=args, demo=demo, stop_on_entry=True, values="summaries",
                         start_timeout=start_timeout) as dbg:
        first = dbg.wait_paused(timeout=start_timeout)
        if first.reason == "exited":
            print(f"gradviz check: the program ended before it started: {first.detail or dbg.program_error}",
                  file=err)
            return 2
        try:
            checks = dbg.check_pass(pass_index, timeout=timeout)
        except DebuggerError as exc:
            print(f"gradviz check: no backward pass {pass_index} was checked: {exc}", file=err)
            if dbg.program_error:
                print(dbg.program_error.rstrip(), file=err)
            return 2
        with dbg.lock:
            sources = {c.node: dbg.trace.nodes[c.node].source for c in checks if c.node in dbg.trace.nodes}
    shown = [c for c in checks if c.op not in ACCUMULATE]
    for c in shown:
        print(node_line(c, sources.get(c.node)), file=out)
    ok = sum(c.ok is True for c in shown)
    failed = [c for c in shown if c.ok is False]
    unchecked = sum(c.ok is None for c in shown)
    leaves = len(checks) - len(shown)
    print(f"backward pass {pass_index}: {len(shown)} nodes: {ok} ok, {len(failed)} FAIL, {unchecked} not "
          f"checkable" + (f" (and {leaves} AccumulateGrad nodes, nothing to check)" if leaves else ""), file=out)
    for c in failed:
        print(f"FAIL: {c}", file=out)
    return 1 if failed else 0
