"""The ``gradviz`` command.

    gradviz [--screenshot PNG]       the app, on the seed demo, ready to step (F10)
    gradviz run SCRIPT [ARGS...] | --demo NAME     a program live in the app
    gradviz run --nproc-per-node N [--debug-rank R] SCRIPT    one rank of a data-parallel job live
    gradviz open TRACE.gvz           a recording in the app (or a torchviz drawing, MODEL.dot)
    gradviz open RUN.gvz | FOLDER    every rank of a job recorded under torchrun (RUN.rank0.gvz, ...)
    gradviz seed                     the seed example in the terminal
    gradviz demos                    list the built-in demos
    gradviz record SCRIPT [ARGS...] -o TRACE.gvz     run a program under the recorder, no window
    gradviz record --demo NAME -o TRACE.gvz
    gradviz info TRACE.gvz [--json]  nodes, edges, passes with their backward order, tensors
    gradviz export TRACE.gvz -o OUT.dot|OUT.svg|OUT.png [--collapse SCOPE]
    gradviz serve [--listen HOST:PORT] SCRIPT [ARGS...] | --demo NAME   run it, wait for a window
    gradviz attach HOST:PORT [--secret S]     the app on a program gradviz serve runs (docs/remote.md)
    gradviz check [--pass N] SCRIPT [ARGS...] | --demo NAME    check every node's backward of a pass
"""
import argparse
import os
import sys


def _describe(node, names):
    label = type(node).__name__
    var = getattr(node, "variable", None)
    return f"{label}({names[id(var)]})" if var is not None and id(var) in names else label


def run_seed(out=None):
    import gradviz
    import gradviz.engine as torch
    from gradviz.trace.explain import explain_node, saved_attrs

    out = out or sys.stdout
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    gradviz.name(a, "a")  # gradviz names a program's variables, not its own
    gradviz.name(b, "b")
    with gradviz.record() as rec:  # the trace gives each step's values to its rule
        Q = 3 * a ** 3 - b ** 2
        names = {id(a): "a", id(b): "b"}
        print("Q = 3*a**3 - b**2 with a = [2., 3.], b = [6., 4.]", file=out)
        print(f"Q = {Q}", file=out)

        steps, seen, stack = [], set(), [Q.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            node.register_hook(lambda gi, go, node=node: steps.append((node, go, gi)))
            stack.extend(fn for fn, _ in node.next_functions)

        Q.backward(gradient=torch.tensor([1., 1.]))
    trace = rec.trace
    order = trace.passes[-1].order if trace.passes else []
    print("\nbackward pass, in the order the engine ran it (PyTorch's order), each step's local rule "
          "with its numbers:", file=out)
    for i, (node, grad_outputs, grad_inputs) in enumerate(steps, 1):
        go = ", ".join(str(g.tolist()) for g in grad_outputs if g is not None)
        gi = ", ".join(str(g.tolist()) if g is not None else "None" for g in grad_inputs)
        print(f"  {i}. {_describe(node, names):<22} grad_outputs: {go:<14} grad_inputs: {gi or '-'}", file=out)
        if i - 1 < len(order):
            for line in explain_node(trace, order[i - 1], attrs=saved_attrs(node)).text.splitlines():
                print(f"       {line}", file=out)
    print(f"\na.grad = {a.grad}   (9*a**2 = {(9 * a ** 2).detach()})", file=out)
    print(f"b.grad = {b.grad}   (-2*b = {(-2 * b).detach()})", file=out)
    return a, b


def _split_output(argv):
    """``record SCRIPT ARGS... -o OUT``: a trailing ``-o OUT`` belongs to gradviz, the rest to the
    script (``--`` before SCRIPT passes everything through untouched)."""
    if len(argv) >= 2 and argv[-2] in ("-o", "--output"):
        return argv[:-2], argv[-1]
    return argv, None


def _unwritable(path):
    """Why ``path`` cannot be written, in a few words, or None: checked before a program runs."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        return f"cannot write {path}: it is a directory"
    if not os.path.isdir(folder):
        return f"cannot write {path}: no such folder {folder}"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"cannot write {path}: permission denied"
    return None


def _have_torch():
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _check_demo(command, name):
    """None if demo ``name`` can run here, else the exit status after saying why in one line."""
    from gradviz import demos
    if name not in demos.DEMOS:
        print(f"gradviz {command}: unknown demo {name!r}; the demos are: {', '.join(demos.DEMOS)}",
              file=sys.stderr)
        return 2
    if name in demos.NEEDS_TORCH and not _have_torch():
        print(f"gradviz {command}: the {name} demo needs PyTorch: pip install torch", file=sys.stderr)
        return 2
    return None


_RECORD_OPTIONS = {"-o": True, "--output": True, "--values": True, "--demo": True, "--file-budget": True,
                   "--keep-values": True}


def _gradviz_options_after_script(argv):
    """(gradviz's options, the script and its other arguments) when ``-o`` and gradviz's other
    options were given after SCRIPT (``record SCRIPT ARGS -o X --values summaries``), else None."""
    ours, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if i > 0 and name in _RECORD_OPTIONS:
            if "=" in a or i + 1 >= len(argv):
                ours.append(a)
                i += 1
            else:
                ours += argv[i:i + 2]
                i += 2
            continue
        rest.append(a)
        i += 1
    return (ours, rest) if any(a.split("=", 1)[0] in ("-o", "--output") for a in ours) else None


def cmd_record(args):
    """Run the program as the debugger would, in a child process (``python -m gradviz.debug.session``),
    its event stream going to the file instead of a window."""
    import subprocess
    script_args, trailing_out = _split_output(args.args)
    output = args.output or trailing_out
    if not output:
        moved = _gradviz_options_after_script(script_args)
        if moved is not None:  # argparse handed them to the script
            ours, script = moved
            print("gradviz record: options after the script belong to the script; gradviz's options go before "
                  f"the script: gradviz record {' '.join(ours + script)}", file=sys.stderr)
        else:
            print("gradviz record: give the trace file with -o TRACE.gvz", file=sys.stderr)
        return 2
    if args.demo:
        refused = _check_demo("record", args.demo)
        if refused is not None:
            return refused
    elif not script_args:
        print("gradviz record: give a SCRIPT to run, or --demo NAME", file=sys.stderr)
        return 2
    elif not os.path.isfile(script_args[0]):
        print(f"gradviz record: no such script: {script_args[0]}", file=sys.stderr)
        return 2
    from gradviz.trace.ranks import recording_path
    output = recording_path(output)  # a rank of a torchrun job writes its own file: run.rank1.gvz
    problem = _unwritable(output)
    if problem:
        print(f"gradviz record: {problem}", file=sys.stderr)
        return 2
    from gradviz.trace.budget import parse_iterations, parse_size
    try:
        parse_size(args.file_budget)
        parse_iterations(args.keep_values)
    except ValueError as exc:
        print(f"gradviz record: {exc}", file=sys.stderr)
        return 2
    import tempfile
    from gradviz.debug.session import command
    file_opts = {"file_budget": args.file_budget, "keep_values": args.keep_values}
    if args.demo:
        cmd = command(args.values, output=output, demo=args.demo, args=script_args, parent=os.getpid(), **file_opts)
    else:
        cmd = command(args.values, output=output, script=script_args[0], args=script_args[1:], parent=os.getpid(),
                      **file_opts)
    with tempfile.TemporaryDirectory(prefix="gradviz-") as private:
        # The child dies with this process (--parent), whatever ends it.
        proc = subprocess.Popen(cmd, cwd=private)
        try:
            status = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the program too: let it end as it would
            try:
                status = proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            print("gradviz record: interrupted", file=sys.stderr)
            status = status if status > 0 else 130
    # Counted from the frames' headers: the trace is not loaded again (a long run's is large).
    from gradviz.trace.gvz import TraceFormatError, count_events
    notes = []
    try:
        counts = count_events(output, notes)
    except (OSError, TraceFormatError) as exc:
        print(f"gradviz record: no trace was written to {output}: {exc}", file=sys.stderr)
        return status or 1
    n = sum(counts.values())
    if status < 0:
        print(f"gradviz record: the program was killed by signal {-status}; the trace holds "
              f"{n} events up to then ({output})", file=sys.stderr)
        return 128 - status
    passes = counts.get('BackwardStarted', 0)
    print(f"gradviz: recorded {n} events ({counts.get('NodeCreated', 0)} autograd nodes, "
          f"{passes} backward pass{'' if passes == 1 else 'es'}) to {output}", file=sys.stderr)
    from gradviz.trace.notes import FileNotes
    file_notes = FileNotes()
    for note in notes:
        file_notes.take(note)
    for line in file_notes.lines():  # what the file budget's policy kept and dropped
        print(f"gradviz: {line}", file=sys.stderr)
    return status


def _load(path):
    from gradviz.trace.dot import DotFormatError
    from gradviz.trace.files import is_dot, load_any
    from gradviz.trace.gvz import TraceFormatError
    try:
        return load_any(path)
    except FileNotFoundError:
        print(f"gradviz: no such {'DOT' if is_dot(path) else 'trace'} file: {path}", file=sys.stderr)
    except IsADirectoryError:
        print(f"gradviz: {path} is a directory, not a {'DOT' if is_dot(path) else 'trace'} file", file=sys.stderr)
    except OSError as exc:
        print(f"gradviz: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
    except TraceFormatError as exc:
        print(f"gradviz: {path} is not a valid trace: {exc}", file=sys.stderr)
    except DotFormatError as exc:
        print(f"gradviz: {path}: {exc}", file=sys.stderr)
    return None


def cmd_info(args):
    from gradviz.trace import report
    if not args.json and _names_a_job(args.trace):
        return _job_info(args.trace)  # a data-parallel job's folder or recorded name: docs/distributed.md
    trace = _load(args.trace)
    if trace is None:
        return 1
    if args.json:
        print(report.info_json(trace))
        return 0
    from gradviz.app.job_info import rank_header
    print("\n".join(rank_header(trace, args.trace) + [report.info_text(trace)]))
    return 0


def _names_a_job(path):
    """A folder of rank files (``run.rank0.gvz``...), or a name (``run.gvz``) that is no file but has
    rank files beside it."""
    from gradviz.trace.gvz import TraceFormatError
    from gradviz.trace.ranks import rank_files
    if not os.path.isdir(path) and os.path.exists(path):
        return False
    try:
        return bool(rank_files(path))
    except TraceFormatError:  # a folder of several jobs: _job_info says so
        return True
    except OSError:
        return False


def _job_info(folder):
    from gradviz.app.job_info import job_text
    from gradviz.trace.gvz import TraceFormatError
    from gradviz.trace.ranks import load_ranks
    try:
        print(job_text(load_ranks(folder)))
    except (TraceFormatError, OSError) as exc:
        print(f"gradviz: {folder}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_diff(args):
    """What changed between two iterations of a recording, or two recordings: docs/diagnosing.md."""
    from gradviz.trace.diff import default_iterations, diff
    a = _load(args.a)
    b = _load(args.b) if args.b else None
    if a is None or (args.b and b is None):
        return 1
    try:
        i, j = args.iterations if args.iterations else default_iterations(a, b)
        d = diff(a, i, b, j, label_a=f"{os.path.basename(args.a)} iteration {i}",
                 label_b=f"{os.path.basename(args.b or args.a)} iteration {j}")
    except ValueError as exc:
        print(f"gradviz: {exc}", file=sys.stderr)
        return 1
    print("\n".join(d.lines()))
    return 0


def cmd_origin(args):
    """Where a NaN (or an exploding gradient) came from: docs/diagnosing.md."""
    from gradviz.trace.diagnose import DEFAULT_K, first_nonfinite, path_lines
    trace = _load(args.trace)
    if trace is None:
        return 1
    what = args.what if args.what is not None else first_nonfinite(trace)
    if what is None:
        print(f"gradviz: no NaN or Inf in {args.trace}; name a node or tensor to trace an explosion from",
              file=sys.stderr)
        return 1
    try:
        what = int(what) if isinstance(what, str) and what.isdigit() else what
        o = trace.explosion_origin(what, args.k or DEFAULT_K) if args.explosion else trace.nan_origin(what)
    except (KeyError, ValueError) as exc:
        print(f"gradviz: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    print(o.explanation)
    print(f"path, from the origin to {o.path[-1].key}:")
    print("\n".join(path_lines(trace, o)))
    return 0


def cmd_export(args):
    """DOT of the whole recorded graph, or a picture (SVG, PNG) of the latest iteration's graph
    as the app draws it; Qt is imported only for a picture, and needs no display."""
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".dot", ".svg", ".png"):
        print(f"gradviz export: cannot write {ext or 'a file without a suffix'}; "
              "use OUT.dot, OUT.svg or OUT.png", file=sys.stderr)
        return 2
    problem = _unwritable(args.output)
    if problem:
        print(f"gradviz export: {problem}", file=sys.stderr)
        return 2
    trace = _load(args.trace)
    if trace is None:
        return 1
    if ext == ".dot":
        from gradviz.trace.dot import to_dot
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(to_dot(trace.graph))
        except OSError as exc:
            print(f"gradviz export: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        n = trace.graph.number_of_nodes()
    else:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # this process never shows a window
        from gradviz.ui.export import render_graph
        try:
            n = render_graph(trace, args.output, collapsed=args.collapse or ())
        except OSError as exc:
            print(f"gradviz export: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # a scope to collapse that the graph does not have
            print(f"gradviz export: {exc}", file=sys.stderr)
            return 2
    print(f"gradviz: wrote {n} nodes to {args.output}", file=sys.stderr)
    return 0


def cmd_demos(args):
    from gradviz import demos
    listed = list(demos.describe())
    width = max(len(name) for name, _ in listed)
    for name, text in listed:
        print(f"{name:<{width}}  {text}")
    return 0


SCREENSHOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SCREENSHOT_AFTER_S = 10.0


def _app_args(p, top=False):
    # A subcommand's own defaults would hide the top-level option's value: only the top sets them.
    default = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--screenshot", metavar="PNG", help="save the window once loaded (or first paused, or the "
                   "program ended, or --screenshot-after passed) and exit", **default)
    p.add_argument("--screenshot-after", metavar="S", type=float,
                   help=f"with --screenshot: take it after S seconds at the latest (default {SCREENSHOT_AFTER_S:g})",
                   **({"default": SCREENSHOT_AFTER_S} if top else default))
    p.add_argument("--event-budget", metavar="N", type=_event_budget,
                   help="keep at most about N events in detail: past them the oldest whole iterations are "
                        "forgotten, to bound memory (default 1000000; none: never; see docs/performance.md)",
                   **({"default": EVENT_BUDGET} if top else default))


EVENT_BUDGET = 1_000_000  # gradviz.trace.model.EVENT_BUDGET (not imported: the CLI starts without numpy)


def _event_budget(text):
    if text.strip().lower() in ("none", "0"):
        return None
    try:
        n = int(text.replace("_", ""))
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of events >= 1, or none; got {text!r}")
    return n


def _no_display():
    """Why the app cannot open a window here, or None: a Linux machine with no display."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("gradviz: no display to open a window on (DISPLAY and WAYLAND_DISPLAY are not set); to run "
            "headless, save a picture with --screenshot PNG, or set QT_QPA_PLATFORM=offscreen")


def _check_screenshot(args):
    """None if the app's options are sound, else the exit status after saying why in one line."""
    if args.screenshot is None:
        problem = _no_display()
        if problem:
            print(problem, file=sys.stderr)
            return 2
        return None
    ext = os.path.splitext(args.screenshot)[1].lower()
    if ext not in SCREENSHOT_SUFFIXES:
        print(f"gradviz: cannot save a screenshot as {ext or 'a file without a suffix'}; use "
              f"{', '.join(SCREENSHOT_SUFFIXES)}", file=sys.stderr)
        return 2
    problem = _unwritable(args.screenshot)
    if problem:
        print(f"gradviz: {problem}", file=sys.stderr)
        return 2
    if not (args.screenshot_after > 0):
        print("gradviz: --screenshot-after takes a number of seconds above 0", file=sys.stderr)
        return 2
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a picture needs no display
    return None


def cmd_app(args):
    """The desktop app (Qt is imported only here, through gradviz.ui)."""
    if args.command == "run":
        script_args = list(args.args)
        if not args.demo and not script_args:
            print("gradviz run: give a SCRIPT to run, or --demo NAME", file=sys.stderr)
            return 2
        if args.demo:
            refused = _check_demo("run", args.demo)
            if refused is not None:
                return refused
        elif not os.path.isfile(script_args[0]):
            print(f"gradviz run: no such script: {script_args[0]}", file=sys.stderr)
            return 2
    refused = _check_screenshot(args)
    if refused is not None:
        return refused
    job = None
    if args.command == "run" and getattr(args, "nproc_per_node", 1) != 1:
        from gradviz.debug.job import start_job
        job = start_job(args, script_args)
        if isinstance(job, int):
            return job
    from gradviz.ui import app
    shot = dict(screenshot=args.screenshot, timeout=args.screenshot_after, event_budget=args.event_budget)
    if args.command == "open":
        return app.run(trace_path=args.trace, **shot)
    if args.command == "run":
        try:
            if args.demo:
                return app.run(demo=args.demo, args=script_args, **shot)
            return app.run(script=script_args[0], args=script_args[1:], **shot)
        finally:
            if job is not None:
                job.finish()
    return app.run(demo="seed", **shot)


def _check_program(command, demo, script_args):
    """None if the program to run is there, else the exit status after saying why in one line."""
    if demo:
        return _check_demo(command, demo)
    if not script_args:
        print(f"gradviz {command}: give a SCRIPT to run, or --demo NAME", file=sys.stderr)
        return 2
    if not os.path.isfile(script_args[0]):
        print(f"gradviz {command}: no such script: {script_args[0]}", file=sys.stderr)
        return 2
    return None


def cmd_serve(args):
    """The program under the debugger, relayed to a window that attaches (gradviz.debug.relay)."""
    import signal
    from gradviz.debug import remote
    from gradviz.debug.debugger import DebuggerError
    from gradviz.debug.relay import Relay, serve_command
    script_args = list(args.args)
    refused = _check_program("serve", args.demo, script_args)
    if refused is not None:
        return refused
    try:
        host, port = remote.parse_address(args.listen, default_host="127.0.0.1")
    except ValueError as exc:
        print(f"gradviz serve: --listen {exc}", file=sys.stderr)
        return 2
    problem = args.output and _unwritable(args.output)
    if problem:
        print(f"gradviz serve: {problem}", file=sys.stderr)
        return 2
    try:
        relay = Relay.start(script=None if args.demo else script_args[0], demo=args.demo,
                            args=script_args if args.demo else script_args[1:], values=args.values,
                            log_path=args.output)
    except DebuggerError as exc:
        print(f"gradviz serve: {exc}", file=sys.stderr)
        return 1
    stopped = []
    try:
        try:
            relay.listen(host, port)
        except OSError as exc:
            print(f"gradviz serve: cannot listen on {remote.format_address(host, port)}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
        relay.on_detach, relay.echo = args.on_detach, (sys.stdout, sys.stderr)
        if not remote.is_loopback(host):
            print(f"gradviz serve: warning: {relay.address} can be reached from other machines, and the stream is "
                  "not encrypted; on an untrusted network listen on 127.0.0.1 and use an SSH tunnel (docs/remote.md)",
                  file=sys.stderr)

        def on_signal(signum, frame):
            stopped.append(signum)
            relay.stop()
        signal.signal(signal.SIGTERM, on_signal)  # before the address is out: whoever read it may stop us
        serve_command(relay)
        try:
            code = relay.serve(linger=args.linger)
        except KeyboardInterrupt:
            stopped.append(signal.SIGINT)
            code = None
    finally:
        relay.close()
    if stopped:
        print("gradviz serve: stopped; the program was ended", file=sys.stderr)
        return 128 + stopped[0]
    if code is None:
        return 1
    return 128 - code if code < 0 else code


def cmd_attach(args):
    """The app on a program that gradviz serve runs: the handshake before any window opens."""
    from gradviz.debug import remote
    from gradviz.debug.debugger import Debugger, DebuggerError
    secret = args.secret or os.environ.get(remote.SECRET_ENV)
    if not secret and sys.stdin.isatty():
        import getpass
        secret = getpass.getpass("secret (printed by gradviz serve): ").strip()
    if not secret:
        print(f"gradviz attach: give the secret that gradviz serve printed: --secret S, or ${remote.SECRET_ENV}",
              file=sys.stderr)
        return 2
    refused = _check_screenshot(args)
    if refused is not None:
        return refused
    try:
        dbg = Debugger.attach(args.address, secret, stop_on_entry=False, break_on_backward=True,
                              event_budget=args.event_budget)
    except DebuggerError as exc:
        print(f"gradviz attach: {exc}", file=sys.stderr)
        return 1
    from gradviz.ui import app
    return app.run(debugger=dbg, title=f"gradviz — attached to {args.address}", screenshot=args.screenshot,
                   timeout=args.screenshot_after)


def cmd_check(args):
    """Check every node of a backward pass (gradviz.debug.check_report); exit status 1 if one fails."""
    if args.demo:
        refused = _check_demo("check", args.demo)
        if refused is not None:
            return refused
    elif not args.args:
        print("gradviz check: give a SCRIPT to run, or --demo NAME", file=sys.stderr)
        return 2
    elif not os.path.isfile(args.args[0]):
        print(f"gradviz check: no such script: {args.args[0]}", file=sys.stderr)
        return 2
    if args.pass_index < 0:
        print(f"gradviz check: --pass is a pass index, 0 or more, not {args.pass_index}", file=sys.stderr)
        return 2
    from gradviz.debug.check_report import run_check
    if args.demo:
        return run_check(demo=args.demo, args=args.args, pass_index=args.pass_index)
    return run_check(script=args.args[0], args=args.args[1:], pass_index=args.pass_index)


def build_parser():
    parser = argparse.ArgumentParser(prog="gradviz", description="See and step through autograd's backward pass.")
    parser.add_argument("--version", action="version", version=_version())
    _app_args(parser, top=True)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("seed", help="run the tutorial's seed example in the terminal, no window")
    p = sub.add_parser("run", help="run a program live in the app, paused before each backward node")
    p.add_argument("--demo", help="run a built-in demo instead of a script")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="run N ranks of a data-parallel job on this machine, as torchrun would: one "
                        "debugged in the window, the others recorded (see docs/distributed.md)")
    p.add_argument("--debug-rank", type=int, default=0, metavar="R", help="with --nproc-per-node: the rank to debug "
                   "(default 0)")
    p.add_argument("-o", "--output", metavar="RUN.gvz", help="with --nproc-per-node: where the other ranks' "
                   "traces go (RUN.rank1.gvz, ...; default: SCRIPT's name in the current folder)")
    _app_args(p)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    p = sub.add_parser("open", help="open a recorded trace (.gvz) in the app, or a torchviz drawing (.dot); "
                       "a job's ranks (RUN.gvz for RUN.rank0.gvz..., or their folder) together")
    p.add_argument("trace")
    _app_args(p)
    sub.add_parser("demos", help="list the built-in demos")
    p = sub.add_parser("record", help="run a program under the recorder and save its trace",
                       usage="gradviz record [--demo NAME] [-o TRACE.gvz] [SCRIPT [ARGS...]] [-o TRACE.gvz]")
    p.add_argument("--demo", help="record a built-in demo instead of a script")
    p.add_argument("-o", "--output", help="the trace file to write (.gvz)")
    p.add_argument("--values", choices=("full", "summaries"), default="full",
                   help="keep full arrays in the file (default) or summaries only")
    p.add_argument("--file-budget", default="512M", metavar="SIZE",
                   help="the trace file's budget (default 512M; 0 or none: unbounded): full values for the first "
                        "and last iterations, around an anomaly and --keep-values, summaries for the rest; the "
                        "oldest events go when even those outgrow it (docs/recording.md)")
    p.add_argument("--keep-values", default="", metavar="ITERATIONS",
                   help="iterations that keep full values too, e.g. 0,10,100-120")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    p = sub.add_parser("serve", help="run a program under the debugger and wait for a window (gradviz attach)",
                       usage="gradviz serve [--listen HOST:PORT] [--on-detach pause|continue] "
                             "(--demo NAME | SCRIPT [ARGS...])")
    p.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:0",
                   help="where windows attach (default 127.0.0.1 and a free port; another address only when given)")
    p.add_argument("--demo", help="serve a built-in demo instead of a script")
    p.add_argument("--on-detach", choices=("pause", "continue"), default="pause",
                   help="when the window's link drops: pause the program (default) or let it run")
    p.add_argument("--values", choices=("full", "summaries"), default="full")
    p.add_argument("-o", "--output", metavar="TRACE.gvz", help="also keep the stream as a trace file")
    p.add_argument("--linger", type=float, default=60.0, metavar="S",
                   help="once the program ended with no window attached, wait S seconds for one (default 60)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    p = sub.add_parser("attach", help="open the app on a program that gradviz serve runs, here or elsewhere")
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--secret", help="the secret gradviz serve printed (default: $GRADVIZ_SECRET, else asked)")
    _app_args(p)
    p = sub.add_parser("info", help="describe a trace file")
    p.add_argument("trace")
    p.add_argument("--json", action="store_true", help="print the stable JSON form")
    p = sub.add_parser("diff", help="what changed between two iterations, or two recordings: nodes, edges, norms")
    p.add_argument("a", metavar="A.gvz")
    p.add_argument("b", metavar="B.gvz", nargs="?", help="a second recording (default: compare two iterations of A)")
    p.add_argument("--iterations", nargs=2, type=int, metavar=("I", "J"),
                   help="iteration I of A against iteration J of B (default: A's last two; the last of each)")
    p = sub.add_parser("origin", help="trace a NaN or Inf (or an exploding gradient) to the node that made it")
    p.add_argument("trace")
    p.add_argument("what", nargs="?", metavar="NODE", help="a tensor's name, a graph key (n5, t3) or a node id "
                   "(default: the first leaf whose gradient holds a NaN or Inf)")
    p.add_argument("--explosion", action="store_true", help="the first node that grew the gradient more than K times")
    p.add_argument("-k", type=float, help="the growth per element that counts as an explosion (default 10)")
    p = sub.add_parser("export", help="write a trace's graph as Graphviz DOT, or draw it to SVG or PNG",
                       description="OUT.dot: the whole recorded graph as Graphviz DOT. OUT.svg, OUT.png: the "
                                   "latest iteration's graph as the app draws it (no window needed).")
    p.add_argument("trace")
    p.add_argument("-o", "--output", required=True, metavar="OUT.dot|OUT.svg|OUT.png",
                   help="the file to write; its suffix picks the format")
    p.add_argument("--collapse", action="append", metavar="SCOPE",
                   help="draw this module (e.g. layer1.0) as one box (SVG, PNG; repeatable)")
    p = sub.add_parser("check", help="check every node's backward in a backward pass against finite differences",
                       usage="gradviz check [--pass N] [--demo NAME | SCRIPT [ARGS...]]")
    p.add_argument("--demo", help="check a built-in demo instead of a script")
    p.add_argument("--pass", dest="pass_index", type=int, default=0, metavar="N",
                   help="the backward pass to check, numbered as gradviz info numbers them (default 0, the first)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script and its arguments")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command not in (None, "run", "open", "attach") and args.screenshot is not None:
        print(f"gradviz: --screenshot is for the app (gradviz, gradviz run, gradviz open), not gradviz "
              f"{args.command}", file=sys.stderr)
        return 2
    if args.command == "seed":
        run_seed()
        return 0
    if args.command in (None, "run", "open"):
        return cmd_app(args)
    return {"record": cmd_record, "info": cmd_info, "export": cmd_export, "demos": cmd_demos,
            "diff": cmd_diff, "origin": cmd_origin, "serve": cmd_serve, "attach": cmd_attach,
            "check": cmd_check}[args.command](args)


def _version():
    from gradviz import __version__
    return f"gradviz {__version__}"


def entry():
    """The console script: like ``main``, quiet when its output is piped into a pager that quits."""
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback
        print("gradviz: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(entry())
