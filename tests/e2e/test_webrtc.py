"""A real WebRTC call through the component: two browsers, real media.

Alice's device is a StanzaJS page in headless Chromium logged in as
alice@localhost/laptop over websocket; it approves the component's linking
request and advertises Jingle RTP audio over ICE-UDP (caps). Bob is another
StanzaJS page, bob@localhost/web, who calls alice@unified.localhost/audio
with a plain Jingle session-initiate. The component forks the call to the
laptop from Bob's proxy JID and relays the session both ways; the laptop
answers; audio (Chromium's fake microphone) flows over ICE/DTLS-SRTP.

Both browsers get coturn (Debian's `turnserver`, on 127.0.0.1) as STUN
and TURN server and may use every kind of candidate (iceTransportPolicy
"all"): with `candidates = "relay-only"` it is the component that must
keep Bob and Alice's device from learning each other's addresses (host,
server- and peer-reflexive candidates, related addresses), both ways. With
`candidates = "direct"` the call must work too, and Bob does see her
addresses: the control that shows the relay-only checks can fail. Each
runs against Prosody and ejabberd, both serving XMPP over websocket.

The machine needs a non-loopback address (Chromium gathers no host
candidates on loopback alone); since both browsers run on one machine, an
address is an (ip, port) pair.

On failure the test prints what it saw: every candidate each side
gathered, received in Jingle and knows from getStats, the selected pairs,
the browsers' console and the component's log."""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from contextlib import ExitStack

import pytest

from harness import DOMAIN, ROOT, Component, serve_directory, start_prosody
from ejabberd_local import Ejabberd
from prosody_local import free_port, wait_port

ALICE = f"alice@{DOMAIN}"
AUDIO = f"{ALICE}/audio"
BROWSER = os.path.join(ROOT, "tests", "browser")
CALL = os.path.join(BROWSER, "call")
ICE_UDP = "urn:xmpp:jingle:transports:ice-udp:1"
JINGLE = "urn:xmpp:jingle:1"
ADMIN_TOKEN = "webrtc-admin-token"
OWNERS = """[http]
bind = "127.0.0.1:{http}"
admin_token = "{token}"

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
candidates = "{policy}"
"""
# Alice's device resource: Bob must never learn it.
DEVICE = "laptop"
DIRECT_TYPES = ("host", "srflx", "prflx")


# ---------------------------------------------------------------- services

class EjabberdWs(Ejabberd):
    """scripts/ejabberd_local.py's node plus XMPP over websocket (RFC 7395)
    at ws://127.0.0.1:{http}/xmpp-websocket, as Prosody's websocket=True."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = free_port()

    def write_config(self):
        super().write_config()
        path = os.path.join(self.dir, "ejabberd.yml")
        with open(path) as f:
            text = f.read()
        listener = (f"listen:\n  - port: {self.http}\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n"
                    "    request_handlers:\n      \"/xmpp-websocket\": ejabberd_http_ws\n")
        assert text.count("listen:\n") == 1, text
        with open(path, "w") as f:  # the file keeps its owner (ejabberd)
            f.write(text.replace("listen:\n", listener, 1))

    def start(self):
        super().start()
        if not wait_port(self.http, 20):
            self.stop()
            raise RuntimeError(f"ejabberd did not open its websocket port; see {self.dir}/log/ejabberd.log")
        return self


def start_server(tmp, kind):
    if kind == "prosody":
        return start_prosody(tmp, users=("alice", "bob"), websocket=True)
    e = EjabberdWs(os.path.join(tmp, kind), component_domain=DOMAIN, secret="e2e-secret").start()
    e.kind = kind
    for u in ("alice", "bob"):
        e.register(u, "pw-" + u)
    return e


def free_udp_port():
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Coturn:
    """coturn (Debian's `turnserver`) on 127.0.0.1: STUN and TURN over UDP,
    user u / password p, every file in `dir`. --allow-loopback-peers: the
    peers' relayed traffic goes to 127.0.0.1 too."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.port = free_udp_port()
        self.log = os.path.join(dir, "coturn.log")
        self.proc = None

    def start(self):
        if not shutil.which("turnserver"):
            raise RuntimeError("coturn is not installed: scripts/install-deps (apt-get install coturn)")
        self.proc = subprocess.Popen(
            ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--no-rfc5780",
             "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", str(self.port),
             "--lt-cred-mech", "--user", "u:p", "--realm", "localhost", "--fingerprint",
             "--allow-loopback-peers", "--no-software-attribute",
             "--userdb", os.path.join(self.dir, "turndb"), "--pidfile", os.path.join(self.dir, "turnserver.pid"),
             "--log-file", "stdout", "--simple-log"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            if self.answers_stun():
                return self
        self.stop()
        raise RuntimeError(f"coturn did not start:\n{self.log_text()[-2000:]}")

    def answers_stun(self):
        """A STUN Binding request (RFC 5389) gets a success response."""
        tid = os.urandom(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid, ("127.0.0.1", self.port))
                data = s.recv(1500)
            except OSError:
                return False
        return data[:2] == b"\x01\x01" and data[8:20] == tid

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def serve(directory):
    return serve_directory(directory)


def build_page(www):
    """tests/browser/call/app.js bundled (esbuild, StanzaJS inside) next to
    a copy of its index.html, in `www`."""
    esbuild = os.path.join(BROWSER, "node_modules", ".bin", "esbuild")
    assert os.path.exists(esbuild) and os.path.isdir(os.path.join(BROWSER, "node_modules", "stanza")), \
        "run scripts/install-deps (npm ci in tests/browser)"
    os.makedirs(www, exist_ok=True)
    shutil.copy(os.path.join(CALL, "index.html"), www)
    subprocess.run([esbuild, os.path.join(CALL, "app.js"), "--bundle", "--format=iife", "--platform=browser",
                    "--define:global=globalThis", "--log-level=warning",
                    "--outfile=" + os.path.join(www, "bundle.js")], check=True, cwd=BROWSER, timeout=60)


class Driver:
    """tests/browser/call/drive.mjs: one Chromium, one context per user."""

    def __init__(self, base, log):
        self.log = log
        self.proc = subprocess.Popen(["node", os.path.join(CALL, "drive.mjs"), base],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, start_new_session=True)
        self.answers = queue.Queue()

        def read():
            for line in self.proc.stdout:
                self.answers.put(line)
            self.answers.put(None)
        threading.Thread(target=read, daemon=True).start()

    def ask(self, timeout=30, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the browser driver did not answer {cmd} within {timeout}s")
        assert line is not None, "the browser driver exited"
        answer = json.loads(line)
        assert "error" not in answer, f"{cmd}: {answer['error']}"
        return answer["ok"]

    def eval(self, who, expr, timeout=30):
        return self.ask(cmd="eval", who=who, expr=expr, timeout=timeout)

    def wait(self, who, expr, what, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(who, expr)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{who}: never saw {what} ({expr})")

    def console(self, tail=8000):
        with open(self.log, errors="replace") as f:
            return f.read()[-tail:]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        # Whatever is left of the group (node, Chromium and its helpers).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


# ---------------------------------------------------------------- reading what each side saw

def jingle_candidates(frames):
    """Every ICE-UDP candidate in a Jingle IQ among websocket frames, with
    the action and sender of its IQ."""
    out = []
    for raw in frames:
        try:
            el = ET.fromstring(raw)
        except ET.ParseError:
            continue
        if not el.tag.endswith("}iq") or el.get("type") != "set":
            continue
        j = el.find(f"{{{JINGLE}}}jingle")
        if j is None:
            continue
        for c in j.iter(f"{{{ICE_UDP}}}candidate"):
            out.append({"action": j.get("action"), "from": el.get("from"), "type": c.get("type"),
                        "ip": c.get("ip"), "port": int(c.get("port") or 0), "protocol": c.get("protocol"),
                        "relAddr": c.get("rel-addr"), "relPort": c.get("rel-port")})
    return out


def addresses(cands):
    """The (ip, port) pairs a list of candidates gives away: host, srflx and
    prflx ones themselves, and every candidate's related address."""
    out = set()
    for c in cands:
        if c.get("type") in DIRECT_TYPES and c.get("ip"):
            out.add((c["ip"], int(c["port"])))
        if c.get("relAddr") not in (None, "", "0.0.0.0", "::") and int(c.get("relPort") or 0):
            out.add((c["relAddr"], int(c["relPort"])))
    return out


def named(cands):
    """Addresses a received candidate names: its own and its related one."""
    out = set()
    for c in cands:
        if c.get("ip"):
            out.add((c["ip"], int(c["port"] or 0)))
        if c.get("relAddr"):
            out.add((c["relAddr"], int(c.get("relPort") or 0)))
    return out


def fmt(c):
    rel = f" raddr {c.get('relAddr')}:{c.get('relPort')}" if c.get("relAddr") else ""
    via = f" [{c['action']}]" if c.get("action") else ""
    return f"{c.get('type')} {c.get('ip')}:{c.get('port')} {c.get('protocol')}{rel}{via}"


def fmt_list(cands):
    return "\n".join("    " + fmt(c) for c in cands) or "    (none)"


def hiding_problems(stats, local, received, frames):
    """What says that Bob and Alice's device learned each other's addresses
    (`candidates = "relay-only"` must prevent every one of these)."""
    problems = []
    bob_stats, alice_stats = stats["bob"] or {}, stats["alice"] or {}
    pair = bob_stats.get("pair")
    if not pair or pair["remote"]["type"] != "relay":
        problems.append(f"Bob's selected pair's remote candidate is not a relay one: {pair}")
    for c in received["bob"]:
        if c["type"] != "relay":
            problems.append(f"Bob received a {c['type']} candidate: {fmt(c)}")
        if c["relAddr"] not in (None, "0.0.0.0") or c["relPort"] not in (None, "0"):
            problems.append(f"Bob received a related address: {fmt(c)}")
    # Alice's own addresses: what she gathered and what getStats lists as
    # her local candidates.
    alice_private = addresses(local["alice"]) | addresses(alice_stats.get("localCandidates", []))
    if not alice_private:
        problems.append("Alice's browser gathered no host candidate: the test hides nothing")
    leaked = alice_private & (named(received["bob"]) | named(bob_stats.get("remoteCandidates", [])))
    if leaked:
        problems.append(f"Bob learned Alice's addresses {sorted(leaked)} "
                        "(in Jingle or among his remote candidates, prflx included)")
    # Anywhere else in what Bob's browser received (an SDP blob, another
    # namespace): an address of hers next to one of her ports.
    for raw in frames["bob"]:
        for ip, port in alice_private:
            if port >= 1024 and ip in raw and re.search(rf"(?<![0-9]){port}(?![0-9])", raw):
                problems.append(f"Bob received {ip} and {port} in one stanza: {raw[:300]}")
    # The other way round: no direct candidate of Bob's reaches her device.
    for c in received["alice"]:
        if c["type"] in DIRECT_TYPES:
            problems.append(f"Alice received Bob's {c['type']} candidate: {fmt(c)}")
    bob_private = addresses(local["bob"]) | addresses(bob_stats.get("localCandidates", []))
    leaked = bob_private & named(received["alice"])
    if leaked:
        problems.append(f"Alice's device learned Bob's addresses {sorted(leaked)} in Jingle")
    return problems


def admin_status(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/status.json",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def device_classes(http_port, resource):
    """The classes the component counts `resource` of Alice's in (status.json)."""
    for owner in admin_status(http_port).get("owners", []):
        for d in owner.get("devices", []):
            if d.get("resource") == resource:
                return d.get("classes")
    return None


def call(driver, comp, http_port, page_query, direction="in"):
    """Alice's laptop comes online, Bob calls alice@unified.localhost/audio,
    the laptop answers (`direction` "out": her laptop calls Bob's proxy JID
    and his browser answers, seeing alice@unified.localhost/audio); returns
    what both browsers saw once media flows."""
    # Alice's laptop: logs in, approves the linking request, advertises
    # Jingle RTP audio over ICE-UDP in its caps.
    driver.ask(cmd="open", who="alice", query=page_query("alice", DEVICE))
    driver.wait("alice", "window.t.online", "her login")
    comp.wait_log("account link changed")
    deadline = time.time() + 15
    while "audio" not in (device_classes(http_port, DEVICE) or []):
        assert time.time() < deadline, \
            f"the component never counted the laptop as an audio device: {json.dumps(admin_status(http_port))}"
        time.sleep(0.2)

    # Bob: logs in, subscribes to alice@unified.localhost (approved:
    # subscription = "open"), sees /audio, calls it with plain Jingle.
    driver.ask(cmd="open", who="bob", query=page_query("bob", "web"))
    driver.wait("bob", "window.t.online", "his login")
    driver.eval("bob", f"window.t.subscribe('{ALICE}')")
    driver.wait("bob", f"window.t.presences.includes('{AUDIO} available')", f"{AUDIO} available")
    if direction == "in":
        sid = driver.eval("bob", f"window.t.call('{AUDIO}')")
    else:
        # She calls him back from her laptop, at his proxy full JID.
        sid = driver.eval("alice", f"window.t.call('bob\\\\40localhost@{DOMAIN}/web')")
        driver.wait("bob", f"window.t.events.includes('incoming {AUDIO}')",
                    f"her call reaching Bob from {AUDIO}")

    # Media both ways, and ICE gathering over on both sides (so every
    # candidate there is to signal has been signalled).
    deadline = time.time() + 25
    while time.time() < deadline:
        stats = {who: driver.eval(who, "window.t.stats()") for who in ("alice", "bob")}
        if all(s and s["inbound"] > 0 and s["gathering"] == "complete" for s in stats.values()):
            break
        time.sleep(0.25)
    time.sleep(1.0)  # late trickled candidates, a few more packets
    stats = {who: driver.eval(who, "window.t.stats()") for who in ("alice", "bob")}
    local = {who: driver.eval(who, "window.t.local") for who in ("alice", "bob")}
    frames = {who: driver.ask(cmd="frames", who=who) for who in ("alice", "bob")}
    events = {who: driver.eval(who, "[window.t.events, window.t.jingle, window.t.errors]")
              for who in ("alice", "bob")}
    received = {who: jingle_candidates(frames[who]) for who in ("alice", "bob")}
    return stats, local, frames, received, events, sid


# ---------------------------------------------------------------- the test

@pytest.mark.parametrize("server", ["prosody", "ejabberd"])
@pytest.mark.parametrize("policy,direction", [("relay-only", "in"), ("direct", "in"), ("relay-only", "out")])
def test_webrtc_call_through_the_component(tmp_path, policy, direction, server, capsys):
    t_start = time.time()
    tmp = str(tmp_path)
    with ExitStack() as cleanup:
        p = start_server(tmp, server)
        cleanup.callback(p.stop)
        turn = Coturn(os.path.join(tmp, "coturn")).start()
        cleanup.callback(turn.stop)
        www = os.path.join(tmp, "www")
        build_page(www)
        httpd = serve(www)
        cleanup.callback(httpd.server_close)
        cleanup.callback(httpd.shutdown)
        http_port = free_port()
        comp = Component(tmp, p, OWNERS.format(http=http_port, token=ADMIN_TOKEN, policy=policy))
        cleanup.callback(comp.stop)
        comp.start()
        driver = Driver(f"http://127.0.0.1:{httpd.server_address[1]}", os.path.join(tmp, "browsers.log"))
        cleanup.callback(driver.close)

        def page_query(user, resource):
            return (f"jid={user}@localhost&password=pw-{user}&resource={resource}"
                    f"&ws=ws://127.0.0.1:{p.http}/xmpp-websocket&turn=127.0.0.1:{turn.port}")

        def context():
            """What to print when something fails."""
            return (f"\n--- browsers (console) ---\n{driver.console()}"
                    f"\n--- component log (tail) ---\n{comp.log_text()[-6000:]}")

        try:
            stats, local, frames, received, events, sid = call(driver, comp, http_port, page_query, direction)
        except AssertionError as e:
            raise AssertionError(f"{e}{context()}") from None

        def side(who):
            s = stats[who] or {}
            return (f"--- {who} ---\n  ice={s.get('ice')} gathering={s.get('gathering')} "
                    f"inbound={s.get('inbound')} outbound={s.get('outbound')}\n"
                    f"  selected pair: {s.get('pair')}\n"
                    f"  gathered (onicecandidate):\n{fmt_list(local[who])}\n"
                    f"  local-candidate stats:\n{fmt_list(s.get('localCandidates', []))}\n"
                    f"  remote-candidate stats:\n{fmt_list(s.get('remoteCandidates', []))}\n"
                    f"  candidates received in Jingle:\n{fmt_list(received[who])}\n"
                    f"  session events / jingle IQs received / errors: {json.dumps(events[who])}\n")

        report = (f"policy={policy} direction={direction} server={server} sid={sid}\n" + side("bob") + side("alice") + context())

        problems = []
        for who in ("alice", "bob"):
            s = stats[who]
            if not (s and s["inbound"] > 0):
                problems.append(f"no audio reached {who} (inbound-rtp bytesReceived = {s and s['inbound']})")
        # Whatever the policy: nothing Bob received names Alice's account
        # or her device.
        for raw in frames["bob"]:
            for secret in ("alice@localhost", DEVICE):
                if secret in raw:
                    problems.append(f"Bob received {secret!r}: {raw[:500]}")

        hidden = hiding_problems(stats, local, received, frames)
        if policy == "relay-only":
            problems += hidden
        elif not any("Bob learned Alice's addresses" in h for h in hidden):
            # The control: without the policy Bob does learn her addresses,
            # so the checks above are not vacuous.
            problems.append("with candidates = \"direct\" Bob never saw one of Alice's addresses: "
                            "the relay-only checks would prove nothing")

        elapsed = time.time() - t_start
        report = "\n".join(["problems:", *problems, "relay-only checks:", *hidden, "", report])
        (tmp_path / "report.txt").write_text(report)
        with capsys.disabled():
            pair = (stats["bob"] or {}).get("pair") or {}
            print(f"\n[test_webrtc {policy} {direction} {server}] call up after {elapsed:.1f}s; Bob's selected pair: "
                  f"{fmt(pair.get('local') or {})} -> {fmt(pair.get('remote') or {})}; "
                  f"everything seen: {tmp_path / 'report.txt'}", flush=True)
        assert not problems, "\n" + report
