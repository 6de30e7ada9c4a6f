"""Grad mode: whether operations record a graph (``no_grad``, ``enable_grad``, ``set_grad_enabled``)."""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def _set_enabled(mode):
    _state.enabled = bool(mode)


class _GradModeContext:
    """Usable as a context manager and as a decorator, like PyTorch's."""

    _mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set_enabled(self._mode)
        return self

    def __exit__(self, *exc):
        _set_enabled(self._prev)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    _mode = False


class enable_grad(_GradModeContext):
    _mode = True


class set_grad_enabled(_GradModeContext):
    def __init__(self, mode):
        self._mode = bool(mode)
        # PyTorch applies set_grad_enabled(mode) on construction, so a bare call works too.
        self._prev = is_grad_enabled()
        _set_enabled(self._mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set_enabled(self._prev)
        return False
