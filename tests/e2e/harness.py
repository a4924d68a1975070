"""End-to-end harness: a real Prosody (scripts/prosody_local.py), the real
component binary, and slixmpp clients playing the users."""
import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ejabberd_local import Ejabberd  # noqa: E402
from prosody_local import Prosody  # noqa: E402
from xmpp_users import Client  # noqa: E402,F401

DOMAIN = "unified.localhost"
SECRET = "e2e-secret"
BIN = os.environ.get("UP_BIN", os.path.join(ROOT, "target", "debug", "unified-presence"))

JINGLE_AUDIO = [
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:transports:ice-udp:1",
]
JINGLE_VIDEO = JINGLE_AUDIO + ["urn:xmpp:jingle:apps:rtp:video"]
JMI = "urn:xmpp:jingle-message:0"
OUR_NODE = "https://unified-presence.org/caps"


# The servers the scenarios that matter to both run against (issue 6).
SERVERS = ("prosody", "ejabberd")


def start_prosody(tmp, users=("alice", "bob", "eve"), kind="prosody", **options):
    """A fresh loopback server of `kind` ("prosody" or "ejabberd") with the
    component's domain configured and `users` registered (password
    "pw-<name>")."""
    server = {"prosody": Prosody, "ejabberd": Ejabberd}[kind]
    p = server(os.path.join(tmp, kind), component_domain=DOMAIN, secret=SECRET, **options).start()
    p.kind = kind
    for u in users:
        p.register(u, "pw-" + u)
    return p


# Every component a test started and has not stopped (conftest.py stops
# what a test left behind, so that none outlives its test).
LIVE = set()


def stop_all_components():
    for comp in list(LIVE):
        comp.stop()


class Component:
    """The unified-presence binary with its own config and store."""

    def __init__(self, tmp, prosody, owners_toml, presence_toml="coalesce_ms = 100\nsettle_ms = 500\n",
                 level="unified_presence=debug", name="component", domain=DOMAIN, secret=SECRET):
        self.level = level
        self.domain = domain
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "component.toml")
        self.log = os.path.join(self.dir, "component.log")
        with open(self.config, "w") as f:
            # owners_toml first: it may start with top-level keys (admins).
            f.write(f"""{owners_toml}
[server]
address = "127.0.0.1:{prosody.component}"
domain = "{domain}"
secret = "{secret}"
keepalive_secs = 5

[store]
path = "{self.dir}/store"

[presence]
{presence_toml}
[log]
level = "{self.level}"
""")
        # It holds the secret: the component refuses a world-readable one.
        os.chmod(self.config, 0o600)
        self.proc = None

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def start(self, wait_connected=True, max_file_bytes=None):
        """Starts the binary; `max_file_bytes` caps the size of every file
        it writes (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past
        it fails with EFBIG, as on a full disk)."""
        self._logf = open(self.log, "a")
        self.connections = self.log_text().count(" connected domain=")

        def limit():
            if max_file_bytes is not None:
                import resource
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        self.proc = subprocess.Popen([BIN, "--config", self.config], stdout=self._logf,
                                     stderr=subprocess.STDOUT, preexec_fn=limit,
                                     env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
        LIVE.add(self)
        if wait_connected:
            self.wait_log(" connected domain=", self.connections + 1)
        return self

    def wait_log(self, needle, count=1, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log_text().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"component exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"component log never showed {needle!r} x{count}:\n{self.log_text()[-3000:]}")

    async def await_log(self, needle, count=1, timeout=20):
        """wait_log for async tests: lets the clients' event loop run."""
        import asyncio
        deadline = time.time() + timeout
        while self.log_text().count(needle) < count:
            if time.time() > deadline:
                raise AssertionError(f"component log never showed {needle!r}:\n{self.log_text()[-3000:]}")
            await asyncio.sleep(0.05)

    def memory_kib(self):
        """(current RSS, peak RSS) of the running process, in KiB."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        LIVE.discard(self)
        return code


C = "{jabber:client}"


def presence(frm=None, typ="available"):
    """Predicate: a presence from `frm` (exact) of type `typ`."""
    def pred(el):
        if el.tag != C + "presence":
            return False
        if frm is not None and el.get("from") != frm:
            return False
        return (el.get("type") or "available") == typ
    return pred


def show_of(el):
    s = el.find(C + "show")
    return None if s is None else s.text


def iq_reply(id_):
    return lambda el: el.tag == C + "iq" and el.get("id") == id_


def error_condition(el):
    err = el.find(C + "error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_directory(directory):
    """A static HTTP server for `directory` on 127.0.0.1 (a free port), in
    a thread; stop it with .shutdown() and .server_close()."""
    handler = functools.partial(_QuietHandler, directory=directory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
