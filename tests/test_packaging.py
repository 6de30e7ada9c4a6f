"""Packaging rules: one import package, the core and the engine free of Qt, torch never imported
unless asked for."""
import importlib.util
import subprocess
import sys


def test_core_and_engine_import_neither_qt_nor_torch():
    code = ("import sys, gradviz, gradviz.engine, gradviz.engine.nn, gradviz.engine.models, gradviz.cli;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'torch'));"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_subpackages_live_under_gradviz_only():
    assert importlib.util.find_spec("gradviz.engine") is not None
    assert importlib.util.find_spec("gradviz.ui") is not None
    # Nothing generic lands at the top level of site-packages.
    assert importlib.util.find_spec("engine") is None
    assert importlib.util.find_spec("ui") is None


def test_recording_the_engine_never_imports_torch():
    code = ("import sys, gradviz, gradviz.engine as t\n"
            "with gradviz.record() as rec:\n"
            "    x = t.ones(2, requires_grad=True)\n"
            "    (x * 2).sum().backward()\n"
            "assert len(rec.trace.passes) == 1\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
