"""Admins can see inside (issue 6): the optional [http] listener serves
Prometheus metrics, /healthz and a status page, against a real Prosody."""
import asyncio
import urllib.error
import urllib.request

from harness import DOMAIN, JINGLE_AUDIO, JMI, Client, Component, presence, start_prosody
from prosody_local import free_port

ALICE = f"alice@{DOMAIN}"


TOKEN = "a-token-for-the-admin"


def get(port, path, token=TOKEN, headers=()):
    """GET `path` from loopback, with the admin token unless `token` is
    None, and any extra `headers` (name, value)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in headers:
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    """The value of one sample line, `name` including its labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in:\n{text}")


def test_metrics_health_and_status_page(tmp_path):
    p = start_prosody(str(tmp_path))
    port = free_port()
    comp = Component(str(tmp_path), p, f"""[http]
bind = "127.0.0.1:{port}"
admin_token = "{TOKEN}"

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
""")

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI]).online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        bob = await Client("bob@localhost/pc").online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(f"{ALICE}/audio"), what="/audio available")
        # Eve asks for an owner nobody registered: an error stanza.
        eve = await Client("eve@localhost/x").online(p.c2s)
        eve.send_raw(f"<iq type='get' id='q1' to='nobody@{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        await eve.wait_for(lambda el: el.get("id") == "q1")

        # Bob calls; the phone rings; Bob gives up: one cancelled call.
        bob.send_raw(f"<message type='chat' to='{ALICE}'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'>"
                     "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        await phone.wait_for(lambda el: el.find("{urn:xmpp:jingle-message:0}propose") is not None, what="ringing")
        status, page = get(port, "/status")
        assert "bob@localhost</td><td>ringing" in page, page
        bob.send_raw(f"<message type='chat' to='{ALICE}'><retract xmlns='urn:xmpp:jingle-message:0' id='c1'/></message>")
        await phone.wait_for(lambda el: el.find("{urn:xmpp:jingle-message:0}retract") is not None, what="retracted")

        assert get(port, "/healthz") == (200, "ok\n")
        status, text = get(port, "/metrics")
        assert status == 200
        assert metric(text, "unified_presence_owners") == 1
        assert metric(text, "unified_presence_devices") == 1
        assert metric(text, "unified_presence_watchers") == 1
        assert metric(text, "unified_presence_connected") == 1
        assert metric(text, 'unified_presence_stanzas_received_total{kind="presence"}') >= 3
        assert metric(text, 'unified_presence_stanzas_sent_total{kind="presence"}') >= 3
        assert metric(text, "unified_presence_errors_sent_total") >= 1
        assert metric(text, "unified_presence_store_write_seconds_count") >= 1
        assert metric(text, "unified_presence_privacy_guard_drops") == 0
        assert metric(text, 'unified_presence_calls_total{outcome="cancelled"}') == 1
        assert metric(text, 'unified_presence_calls_total{outcome="answered"}') == 0
        assert metric(text, "unified_presence_live_calls") == 0
        # The heap in use, by the allocator's count: there, and less than
        # what the process holds in memory.
        with open(f"/proc/{comp.proc.pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        assert 0 < metric(text, "unified_presence_heap_bytes") < rss

        status, page = get(port, "/status")
        assert status == 200
        assert ALICE in page and "alice@localhost" in page
        # Loopback is not trusted by default: a reverse proxy on this host
        # (nginx, Caddy) would relay everyone from here.
        for path in ("/status", "/status.json", "/metrics"):
            status, body = get(port, path, token=None)
            assert status == 403 and "phone" not in body and "alice@localhost" not in body, (path, body)
            assert get(port, path, token="a-wrong-token")[0] == 403
        assert get(port, "/healthz", token=None) == (200, "ok\n")
        assert "phone (online): chat, audio" in page
        assert "audio: online" in page and "video: unavailable" in page

        for c in (phone, bob, eve):
            await c.offline()

    try:
        asyncio.run(scenario())
        # The server goes away: health says so, and says it again once the
        # component is back.
        p.stop()
        comp.wait_log("connection lost")
        status, body = get(port, "/healthz")
        assert status == 503 and "not connected" in body
        p.start()
        comp.wait_log(" connected domain=", comp.connections + 2, timeout=30)
        assert get(port, "/healthz") == (200, "ok\n")
        assert metric(get(port, "/metrics")[1], "unified_presence_reconnects_total") == 1
    finally:
        comp.stop()
        p.stop()


def test_trusting_loopback_is_the_admins_choice_and_never_covers_a_proxy(tmp_path):
    """`trust_loopback = true`: a plain loopback request reads the status
    page without a token, but one that a reverse proxy relayed (it says so
    in a forwarding header) still needs it."""
    p = start_prosody(str(tmp_path))
    port = free_port()
    comp = Component(str(tmp_path), p, f"""[http]
bind = "127.0.0.1:{port}"
trust_loopback = true
admin_token = "{TOKEN}"

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
""")
    try:
        comp.start()
        status, page = get(port, "/status", token=None)
        assert status == 200 and ALICE in page
        for header in (("X-Forwarded-For", "198.51.100.9"), ("Forwarded", "for=198.51.100.9"),
                       ("X-Real-IP", "198.51.100.9"), ("Via", "1.1 caddy")):
            status, body = get(port, "/status", token=None, headers=[header])
            assert status == 403 and "alice@localhost" not in body, header
            assert get(port, "/status", headers=[header])[0] == 200, header
    finally:
        comp.stop()
        p.stop()
