"""scripts/run-local the way a newcomer runs it (issue 14): start it, log
in with a client and follow the walkthrough it prints, stop it with
SIGTERM and find nothing left listening; a second start while it runs is
refused without harming the first; a start after a previous run begins
afresh (server and store together), and --demo runs to its end."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import C, ROOT, SERVERS, Client, presence
from prosody_local import free_port

ALICE = "alice@unified.localhost"
PROXY_BOB = r"bob\40localhost@unified.localhost"


class RunLocal:
    def __init__(self, tmp, ports, *args, server="prosody"):
        self.ports = ports
        env = dict(os.environ, RUN_LOCAL_DIR=os.path.join(tmp, "local"), C2S_PORT=str(ports[0]),
                   COMPONENT_PORT=str(ports[1]), HTTP_PORT=str(ports[2]), SERVER=server)
        self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "run-local"), *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self):
        return "".join(self.lines)

    def wait_for(self, needle, timeout=120):
        deadline = time.time() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None or needle in self.text(), \
                f"run-local exited ({self.proc.returncode}) before {needle!r}:\n{self.text()[-3000:]}"
            assert time.time() < deadline, f"run-local never printed {needle!r}:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"run-local ignored {sig!r}:\n{self.text()[-3000:]}")
        return self.proc.returncode


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def walkthrough(c2s):
    """Steps 1-4 and 'help' of what run-local prints, as a user does them."""
    phone = await Client("alice@localhost/phone", password="alice").online(c2s)
    await phone.wait_for(presence(ALICE, "subscribe"), timeout=20, what="step 1: the request from alice@unified")
    phone.send_presence(pto=ALICE, ptype="subscribed")
    bob = await Client("bob@localhost/pc", password="bob").online(c2s)
    bob.send_presence(pto=ALICE, ptype="subscribe")
    await phone.wait_for(presence(PROXY_BOB, "subscribe"), what="step 3: Bob's request")
    phone.send_presence(pto=PROXY_BOB, ptype="subscribed")
    await bob.wait_for(presence(f"{ALICE}/chat"), what="step 4: alice@unified.localhost/chat")
    since = phone.mark()
    phone.send_message(mto="unified.localhost", mbody="status", mtype="chat")
    reply = await phone.wait_for(lambda el: el.tag == C + "message" and el.get("from") == "unified.localhost",
                                 since, what="the answer to status")
    assert "• chat: online" in reply.findtext(C + "body"), reply.findtext(C + "body")
    for raw in bob.raw_since(0):
        assert "alice@localhost" not in raw and "/phone" not in raw, raw
    for c in (phone, bob):
        await c.offline()


async def tls_login(c2s, cert):
    """What Dino does: STARTTLS, the certificate checked against localhost
    (here trusted by its file, as the banner tells a user to)."""
    c = Client("bob@localhost/tls", password="bob")
    c.enable_starttls = True
    c.ca_certs = cert
    secured = []
    c.add_event_handler("tls_success", lambda *_: secured.append(True))
    await c.online(c2s)
    assert secured, "the session never went through TLS"
    await c.offline()


@pytest.mark.parametrize("server", SERVERS)
def test_run_local_as_a_newcomer_runs_it(tmp_path, server):
    import asyncio
    ports = (free_port(), free_port(), free_port())
    first = RunLocal(str(tmp_path), ports, server=server)
    try:
        first.wait_for("== running")
        first.wait_for(" connected domain=")
        asyncio.run(walkthrough(ports[0]))
        cert = os.path.join(tmp_path, "local-cert", "localhost.crt")
        assert "SHA-256" in first.text() and cert in first.text()
        asyncio.run(tls_login(ports[0], cert))

        # A second start while it runs: refused, the first untouched.
        second = RunLocal(str(tmp_path), ports, server=server)
        assert second.proc.wait(60) != 0
        assert "already running" in second.text(), second.text()
        assert listening(ports[0]) and listening(ports[1])
        assert os.path.isdir(os.path.join(tmp_path, "local", "store")), "the first run's store is still there"

        # SIGTERM (what `kill <pid>` sends): everything stops, nothing listens.
        assert first.stop() == 0, first.text()[-2000:]
        time.sleep(0.5)
        for port in ports:
            assert not listening(port), f"port {port} still listening after SIGTERM"

        # Again after a previous run: fresh, and the walkthrough works again
        # (Alice is asked to link anew: server and store were reset together).
        again = RunLocal(str(tmp_path), ports, server=server)
        try:
            again.wait_for("== running")
            again.wait_for(" connected domain=")
            asyncio.run(walkthrough(ports[0]))
        finally:
            assert again.stop(signal.SIGINT) == 0, again.text()[-2000:]

        # The demo runs to its end by itself.
        demo = RunLocal(str(tmp_path), ports, "--demo", server=server)
        assert demo.proc.wait(120) == 0, demo.text()[-3000:]
        assert "Bob receives" in demo.text() and "alice@unified.localhost/chat" in demo.text(), demo.text()[-3000:]
        for port in ports:
            assert not listening(port), f"port {port} still listening after the demo"
    finally:
        first.stop()
