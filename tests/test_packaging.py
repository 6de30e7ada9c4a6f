"""Packaging rules: one import package, the core and the engine free of Qt, torch never imported
unless asked for."""
import importlib.util
import subprocess
import sys

import pytest


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


def test_every_package_folder_is_listed_in_pyproject():
    """A folder left out of [tool.setuptools] works in the editable install and is missing from
    the real one: list every folder that has an __init__.py."""
    import os
    import tomllib
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    dirs = tool["package-dir"]
    expected = set()
    for top, name in (("gradviz", "gradviz"), ("engine", "gradviz.engine"), ("ui", "gradviz.ui")):
        for folder, _, files in os.walk(os.path.join(root, top)):
            if "__init__.py" in files and "__pycache__" not in folder:
                rel = os.path.relpath(folder, os.path.join(root, top))
                expected.add(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    assert set(tool["packages"]) == expected
    assert all(os.path.isdir(os.path.join(root, d)) for d in dirs.values())


def test_both_adapters_answer_the_adapter_protocol():
    from gradviz.adapters.engine import EngineAdapter
    from gradviz.adapters.protocol import Adapter
    assert isinstance(EngineAdapter(), Adapter)
    missing = [name for name in ("op_name", "next_nodes", "summarize", "memory") if not hasattr(EngineAdapter, name)]
    assert missing == []
    torch = pytest.importorskip("torch")
    from gradviz.adapters.torch import MultiAdapter, TorchAdapter
    assert isinstance(TorchAdapter(torch), Adapter)
    assert isinstance(MultiAdapter(EngineAdapter(), TorchAdapter(torch)), Adapter)


def test_an_object_lacking_a_method_is_not_an_adapter():
    from gradviz.adapters.engine import EngineAdapter
    from gradviz.adapters.protocol import Adapter

    class Partial:
        pass

    methods = [n for n, v in vars(Adapter).items() if callable(v) and not n.startswith("_")]
    assert "summarize" in methods and "replay" in methods and "summarize_later" in methods and len(methods) == 22
    for name in methods:
        setattr(Partial, name, getattr(EngineAdapter, name))
    Partial.source_dirs = ()
    assert isinstance(Partial(), Adapter)
    del Partial.summarize
    assert not isinstance(Partial(), Adapter)


def test_the_engine_observer_api_hands_back_removable_handles():
    import gradviz.engine as engine
    from gradviz.engine import hooks

    seen = []

    class Watcher:
        def node_created(self, node, inputs, output):
            seen.append(("made", node.name()))

        def node_entered(self, node, grad):
            seen.append(("ran", node.name()))

    handle = hooks.register_observer(Watcher())
    x = engine.ones(2, requires_grad=True)
    (x * 3).sum().backward()
    handle.remove()
    (x * 3).sum().backward()  # nothing heard after remove()
    assert seen == [("made", "MulBackward0"), ("made", "SumBackward0"), ("ran", "SumBackward0"),
                    ("ran", "MulBackward0"), ("ran", "torch::autograd::AccumulateGrad")]
    assert all(len(h) == 0 for h in hooks.MOMENTS.values())
    with pytest.raises(TypeError, match="no method named after a moment"):
        hooks.register_observer(object())
