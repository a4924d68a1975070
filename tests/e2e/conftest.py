"""Nothing the suite starts outlives it.

After each test, any component it started and left running is stopped.
Every process the suite starts inherits a mark in its environment
(`UP_TEST_SUITE`, set here for this session), whatever it is (the
component, Prosody, ejabberd's Erlang VM and port mapper, coturn,
Chromium and the browser drivers) and even once orphaned. At the end of
the session any process still carrying the mark is killed; all but
Erlang's port mapper (which ejabberd starts with its first node and
leaves for the next) are reported and fail the run."""
import os
import signal
import time

import pytest

from harness import stop_all_components

MARK = f"UP_TEST_SUITE={os.getpid()}-{time.time_ns()}"
os.environ["UP_TEST_SUITE"] = MARK.split("=", 1)[1]


def _marked():
    """{pid: command line} of the processes carrying this session's mark,
    this one aside."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if MARK.encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return out


@pytest.fixture(autouse=True)
def _stop_what_the_test_left():
    yield
    stop_all_components()


def pytest_sessionfinish(session, exitstatus):
    stop_all_components()
    # Servers the scripts stop at exit (atexit) and processes on their way
    # out get a moment.
    deadline = time.time() + 10
    while True:
        left = {p: c for p, c in _marked().items() if c}
        strays = {p: c for p, c in left.items() if "epmd" not in c}
        if not strays or time.time() > deadline:
            break
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if strays:
        lines = "\n".join(f"  {p} {c[:200]}" for p, c in strays.items())
        print(f"\nThe suite left these running (now killed):\n{lines}")
        session.exitstatus = 1
