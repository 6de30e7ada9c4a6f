import os

import pytest

# Every GUI test runs offscreen, whichever file is run alone (pytest-qt makes the QApplication
# before any test module could set this itself).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _child_pids():
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == me and fields[0] != "Z":
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path_factory, monkeypatch):
    """Run every test from a folder that is not the checkout: there ``python -m gradviz...`` in a
    subprocess would import the source folder ``gradviz/`` (no engine in it) instead of the
    installed package, which is what users and CI have."""
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session", autouse=True)
def no_child_process_outlives_the_suite():
    yield
    from gradviz.debug.debugger import live_children
    assert live_children() == [], "a debugged program outlived the test suite"
    leftover = _child_pids()
    assert leftover == [], f"child processes left running: {leftover}"
