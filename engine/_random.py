"""The engine's random number generator (one per process, seeded by ``manual_seed``)."""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    return _generator
