"""The ``gradviz`` command. Until the desktop app lands, ``gradviz`` with no arguments runs the
tutorial's seed example in the terminal: the graph, the backward pass step by step, the gradients."""
import argparse
import sys


def _describe(node, names):
    label = type(node).__name__
    var = getattr(node, "variable", None)
    return f"{label}({names[id(var)]})" if var is not None and id(var) in names else label


def run_seed(out=None):
    import gradviz.engine as torch

    out = out or sys.stdout

    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
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
    print("\nbackward pass, in the order the engine ran it (PyTorch's order):", file=out)
    for i, (node, grad_outputs, grad_inputs) in enumerate(steps, 1):
        go = ", ".join(str(g.tolist()) for g in grad_outputs if g is not None)
        gi = ", ".join(str(g.tolist()) if g is not None else "None" for g in grad_inputs)
        print(f"  {i}. {_describe(node, names):<22} grad_outputs: {go:<14} grad_inputs: {gi or '-'}", file=out)
    print(f"\na.grad = {a.grad}   (9*a**2 = {(9 * a ** 2).detach()})", file=out)
    print(f"b.grad = {b.grad}   (-2*b = {(-2 * b).detach()})", file=out)
    return a, b


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gradviz", description="See and step through autograd's backward pass.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("seed", help="run the tutorial's seed example in the terminal")
    args = parser.parse_args(argv)
    if args.command in (None, "seed"):
        run_seed()
    return 0


def _version():
    from gradviz import __version__
    return f"gradviz {__version__}"


if __name__ == "__main__":
    sys.exit(main())
