"""Finite-difference check of the engine's gradients, as ``torch.autograd.gradcheck`` does it: the
full Jacobian, column by column numerically and row by row analytically."""
import numpy as np

from . import grad_mode
from .backward import grad as autograd_grad


class GradcheckError(RuntimeError):
    pass


def _outputs(func, inputs):
    out = func(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(func, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Compare the analytic gradients of ``func`` with central finite differences, in float64, one
    input element at a time (like ``torch.autograd.gradcheck``)."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = [t for t in inputs if getattr(t, "requires_grad", False)]
    for t in diff:
        if t._np.dtype != np.float64:
            raise ValueError(f"gradcheck expects float64 inputs that require grad, got {t.dtype!r}")
    outputs = _outputs(func, inputs)
    for k, out in enumerate(outputs):
        if not out.requires_grad:
            continue
        n_out = out._np.size
        # Numerical Jacobian: d out / d input, perturbing one input element at a time.
        numerical = []
        with grad_mode.no_grad():
            for t in diff:
                jac = np.zeros((t._np.size, n_out))
                flat = t._np.reshape(-1)
                for i in range(flat.size):
                    orig = flat[i]
                    flat[i] = orig + eps
                    plus = _outputs(func, inputs)[k]._np.reshape(-1).astype(np.float64)
                    flat[i] = orig - eps
                    minus = _outputs(func, inputs)[k]._np.reshape(-1).astype(np.float64)
                    flat[i] = orig
                    jac[i] = (plus - minus) / (2 * eps)
                numerical.append(jac)
        # Analytical Jacobian, one output element (a one-hot grad_output) at a time.
        analytical = [np.zeros((t._np.size, n_out)) for t in diff]
        for j in range(n_out):
            outs = _outputs(func, inputs)
            g = np.zeros(out._np.size)
            g[j] = 1.0
            grads = autograd_grad(outs[k], diff, grad_outputs=out._result(g.reshape(out._np.shape)),
                                  allow_unused=True)
            for a, gr in zip(analytical, grads):
                if gr is not None:
                    a[:, j] = gr._np.reshape(-1)
        for idx, (num, ana) in enumerate(zip(numerical, analytical)):
            if not np.allclose(num, ana, rtol=rtol, atol=atol):
                if raise_exception:
                    raise GradcheckError(
                        f"Jacobian mismatch for output {k} with respect to input {idx},\n"
                        f"numerical:{num}\nanalytical:{ana}\n")
                return False
    return True
