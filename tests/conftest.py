import os

import pytest


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


@pytest.fixture(scope="session", autouse=True)
def no_child_process_outlives_the_suite():
    yield
    from gradviz.debugger import live_children
    assert live_children() == [], "a debugged program outlived the test suite"
    leftover = _child_pids()
    assert leftover == [], f"child processes left running: {leftover}"
