"""Nothing the suite starts outlives it.

After each test, any component it started and left running is stopped.
At the end of the session, every process of the kinds the suite starts
(the component, Prosody, ejabberd's Erlang VM and its port mapper,
coturn, Chromium and the browser drivers) that was not running when the
session began is reported, stopped, and fails the run."""
import os
import signal
import time

import pytest

from harness import stop_all_components

# Substrings of a command line that mark a process of the suite's kinds.
KINDS = ("unified-presence", "prosody", "beam.smp", "epmd", "turnserver", "chromium",
         "chrome_crashpad", "drive.mjs", "playwright")


def _processes():
    """{pid: command line} of the processes of the suite's kinds, this one
    and its ancestors aside."""
    out = {}
    mine = {os.getpid(), os.getppid()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in mine:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and any(k in cmd for k in KINDS) and "pytest" not in cmd:
            out[int(pid)] = cmd
    return out


def pytest_sessionstart(session):
    session.config._running_before = set(_processes())


@pytest.fixture(autouse=True)
def _stop_what_the_test_left():
    yield
    stop_all_components()


def pytest_sessionfinish(session, exitstatus):
    stop_all_components()
    before = getattr(session.config, "_running_before", set())
    # Servers stopping in the background (atexit handlers have not run
    # yet for those the scripts stop at exit) get a moment.
    deadline = time.time() + 10
    while True:
        left = {p: c for p, c in _processes().items() if p not in before}
        # The port mapper is ejabberd's: started with its first node, it
        # stays for the next one; it goes when the suite does.
        strays = {p: c for p, c in left.items() if "epmd" not in c}
        if not strays or time.time() > deadline:
            break
        time.sleep(0.2)
    for pid, cmd in left.items():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if strays:
        lines = "\n".join(f"  {p} {c[:200]}" for p, c in strays.items())
        print(f"\nThe suite left these running (now killed):\n{lines}")
        session.exitstatus = 1
