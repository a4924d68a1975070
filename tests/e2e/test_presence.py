"""Unified presence end to end (issue 2): real Prosody, the real component,
slixmpp clients as Alice's phone and laptop, Bob and Eve."""
import asyncio
import re
import signal

import pytest

from harness import (C, DOMAIN, JINGLE_AUDIO, JINGLE_VIDEO, JMI, OUR_NODE, SERVERS, Client, Component,
                     error_condition, iq_reply, presence, show_of, start_prosody)

ALICE = f"alice@{DOMAIN}"
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
PHONE_NODE = "https://phone.example/app"
OWNERS_ASK = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "ask"
"""
QUIET = 1.5


def assert_no_leak(raw_stanzas):
    """DESIGN.md section 1: nothing a watcher receives names a device."""
    for raw in raw_stanzas:
        for secret in ("alice@localhost", "phone", "laptop", PHONE_NODE):
            assert secret not in raw, f"leak of {secret!r}: {raw}"


@pytest.fixture
def prosody(tmp_path):
    p = start_prosody(str(tmp_path))
    yield p
    p.stop()


@pytest.fixture
def component(tmp_path, prosody):
    c = Component(str(tmp_path), prosody, OWNERS_ASK)
    yield c
    c.stop()


@pytest.fixture(params=SERVERS)
def server(tmp_path, request):
    """The scenarios every supported server must pass: Prosody and ejabberd."""
    p = start_prosody(str(tmp_path), kind=request.param)
    c = Component(str(tmp_path), p, OWNERS_ASK)
    yield p, c
    c.stop()
    p.stop()


async def link_alice(phone, prosody):
    """Alice's client shows the component's request; she approves."""
    await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
    phone.send_presence(pto=ALICE, ptype="subscribed")


async def bob_watches_alice(bob, phone):
    """Bob asks; Alice sees the request from Bob's proxy JID and approves."""
    since = bob.mark()
    bob.send_presence(pto=ALICE, ptype="subscribe")
    req = await phone.wait_for(presence(PROXY_BOB, "subscribe"), what="Bob's request via the proxy JID")
    assert req.get("from") == PROXY_BOB
    phone.send_presence(pto=PROXY_BOB, ptype="subscribed")
    await bob.wait_for(presence(ALICE, "subscribed"), since, what="subscribed")
    return since


def test_bob_sees_one_presence_per_class_and_never_a_device(server):
    prosody, component = server

    async def scenario():
        component.start()
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s, priority=5)
        await link_alice(phone, prosody)
        # The laptop can do audio calls but has no caps: the component
        # learns that with a direct disco#info.
        laptop = await Client("alice@localhost/laptop", JINGLE_AUDIO, caps=False).online(prosody.c2s, priority=1)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        since = await bob_watches_alice(bob, phone)

        for cls in ("chat", "audio", "video"):
            p = await bob.wait_for(presence(f"{ALICE}/{cls}"), since, what=f"/{cls} available")
            assert show_of(p) is None
            c = p.find("{http://jabber.org/protocol/caps}c")
            assert c.get("node") == OUR_NODE
        await asyncio.sleep(QUIET)
        assert not bob.received(presence(f"{ALICE}/files"), since), "no device does file transfer"

        # Bob's own caps plugin verified our ver; disco#info on the class
        # resource answers that class's features.
        info = await bob["xep_0030"].get_info(jid=f"{ALICE}/audio", timeout=10)
        features = set(info["disco_info"]["features"])
        assert {JMI, "urn:xmpp:jingle:apps:rtp:audio"} <= features
        assert "urn:xmpp:jingle:apps:rtp:video" not in features
        video = set((await bob["xep_0030"].get_info(jid=f"{ALICE}/video", timeout=10))["disco_info"]["features"])
        assert "urn:xmpp:jingle:apps:rtp:video" in video

        # The phone, her only video device, goes away: /video becomes
        # unavailable and nothing else changes (the laptop keeps chat and
        # audio as they were).
        since = bob.mark()
        await phone.offline()
        await bob.wait_for(presence(f"{ALICE}/video", "unavailable"), since)
        await asyncio.sleep(QUIET)
        got = bob.received(lambda el: el.tag == C + "presence" and el.get("from", "").startswith(ALICE), since)
        assert [p.get("from") for p in got] == [f"{ALICE}/video"], bob.raw_since(since)

        # Churn that changes nothing Bob sees sends Bob nothing: the laptop
        # reconnects its presence with another status while chat stays
        # available through it.
        since = bob.mark()
        laptop.send_presence(ppriority=2)
        laptop.send_presence(ppriority=1)
        await asyncio.sleep(QUIET)
        assert not bob.received(lambda el: el.tag == C + "presence", since), bob.raw_since(since)

        # A show change that matters does reach Bob.
        laptop.send_presence(pshow="away", pstatus="Lunch")
        p = await bob.wait_for(presence(f"{ALICE}/chat"), since)
        assert show_of(p) == "away"
        assert p.find(C + "status").text == "Lunch"

        # Bob unsubscribes: every class he could see goes unavailable, and
        # later changes no longer reach him. (Prosody drops probes that
        # clients send, so the refused probe is covered by the unit tests.)
        since = bob.mark()
        bob.send_presence(pto=ALICE, ptype="unsubscribe")
        await bob.wait_for(presence(f"{ALICE}/chat", "unavailable"), since)
        await bob.wait_for(presence(f"{ALICE}/audio", "unavailable"), since)
        await component.await_log("watcher removed")
        since = bob.mark()
        laptop.send_presence(pshow="dnd")
        await asyncio.sleep(QUIET)
        assert not bob.received(lambda el: el.tag == C + "presence", since), bob.raw_since(since)

        assert_no_leak(bob.raw_since(0))
        for c in (bob, laptop):
            await c.offline()

    asyncio.run(scenario())


def test_probes_errors_and_strangers(server):
    prosody, component = server

    async def scenario():
        component.start()
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s)
        await link_alice(phone, prosody)
        eve = await Client("eve@localhost/x").online(prosody.c2s)

        # Unknown virtual JID and an IQ we do not serve: RFC 6120 errors.
        cases = [
            (f"nobody@{DOMAIN}", "<ping xmlns='urn:xmpp:ping'/>", "service-unavailable"),
            (ALICE, "<query xmlns='jabber:iq:last'/>", "service-unavailable"),
            # She set no name or photo: her card is a node she lacks.
            (ALICE, "<vCard xmlns='vcard-temp'/>", "item-not-found"),
            (DOMAIN, "<query xmlns='jabber:iq:register'/>", "service-unavailable"),
            (ALICE, "<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>", "bad-request"),
        ]
        for n, (to, payload, condition) in enumerate(cases):
            eve.send_raw(f"<iq type='get' id='e{n}' to='{to}'>{payload}</iq>")
            reply = await eve.wait_for(iq_reply(f"e{n}"), what=f"an answer to e{n}")
            assert reply.get("type") == "error"
            assert error_condition(reply) == condition, (to, payload)
        eve.send_raw(f"<message type='chat' id='m1' to='nobody@{DOMAIN}'><body>hi</body></message>")
        err = await eve.wait_for(lambda el: el.tag == C + "message" and el.get("id") == "m1")
        assert error_condition(err) == "service-unavailable"
        # The domain answers disco and ping.
        info = await eve["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert "urn:xmpp:ping" in info["disco_info"]["features"]

        # A stanza xmpp-parsers would refuse (bad <show/>) gets an error and
        # the connection stays up.
        phone.send_raw(f"<presence to='{ALICE}' id='bad1'><show>bogus</show></presence>")
        bad = await phone.wait_for(lambda el: el.tag == C + "presence" and el.get("type") == "error")
        assert error_condition(bad) == "bad-request"
        assert component.proc.poll() is None

        # A subscription request to nobody: unsubscribed.
        since = eve.mark()
        eve.send_presence(pto=f"nobody@{DOMAIN}", ptype="subscribe")
        await eve.wait_for(presence(f"nobody@{DOMAIN}", "unsubscribed"), since)

        # Eve asks to watch; Alice denies: Eve gets unsubscribed, and her
        # server's probes get nothing but unsubscribed.
        since = eve.mark()
        eve.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(rf"eve\40localhost@{DOMAIN}", "subscribe"))
        phone.send_presence(pto=rf"eve\40localhost@{DOMAIN}", ptype="unsubscribed")
        await eve.wait_for(presence(ALICE, "unsubscribed"), since)
        await asyncio.sleep(QUIET)
        assert not eve.received(presence(f"{ALICE}/chat"), since)
        assert_no_leak(eve.raw_since(0))
        assert "panicked" not in component.log_text()
        for c in (eve, phone):
            await c.offline()

    asyncio.run(scenario())


def test_restart_keeps_watchers_and_answers_the_next_login_probe(prosody, component):
    async def scenario():
        component.start()
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s, show="chat")
        await link_alice(phone, prosody)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        since = await bob_watches_alice(bob, phone)
        await bob.wait_for(presence(f"{ALICE}/video"), since)
        await bob.offline()

        # Restart: the store kept Bob and the link; devices are re-probed.
        mark = phone.mark()
        assert component.stop() == 0, "SIGTERM is a clean exit"
        component.start()
        # Alice approved once: no new linking request, only a probe.
        await asyncio.sleep(QUIET)
        assert not phone.received(presence(ALICE, "subscribe"), mark), phone.raw_since(mark)

        # The phone's verified caps came from the store: no new disco#info.
        assert "cached_caps=1" in component.log_text()

        # Bob logs in again: his server probes alice@D and the component
        # answers with what is true now.
        bob2 = await Client("bob@localhost/pc2").online(prosody.c2s)
        for cls in ("chat", "audio", "video"):
            p = await bob2.wait_for(presence(f"{ALICE}/{cls}"), what=f"/{cls} after restart")
            assert show_of(p) == "chat"

        # The device set was relearned: Alice's phone going offline is seen.
        since = bob2.mark()
        await phone.offline()
        await bob2.wait_for(presence(f"{ALICE}/chat", "unavailable"), since)
        assert_no_leak(bob2.raw_since(0))
        await bob2.offline()

    asyncio.run(scenario())


def test_reconnects_when_the_server_restarts(prosody, component):
    async def scenario():
        component.start()
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s)
        await link_alice(phone, prosody)
        await phone.offline()
        prosody.stop()
        await component.await_log("connection lost")
        prosody.start()
        await component.await_log(" connected domain=", component.connections + 2, timeout=30)
        # Working again: Bob subscribes and sees Alice.
        phone2 = await Client("alice@localhost/phone2", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        since = await bob_watches_alice(bob, phone2)
        await bob.wait_for(presence(f"{ALICE}/audio"), since)
        for c in (bob, phone2):
            await c.offline()

    asyncio.run(scenario())


def test_connection_failures_say_what_to_fix(tmp_path, server):
    prosody, _ = server
    wrong = Component(str(tmp_path), prosody, OWNERS_ASK)
    text = open(wrong.config).read().replace('secret = "e2e-secret"', 'secret = "wrong"')
    open(wrong.config, "w").write(text)
    wrong.start(wait_connected=False)
    try:
        wrong.wait_log("retry_in_secs")
    finally:
        wrong.stop()
    # The admin reads which setting of her server to compare, whichever
    # server it is, and never the secret itself.
    assert "refused unified.localhost (not-authorized)" in wrong.log_text()
    assert "component_secret" in wrong.log_text() and "ejabberd_service" in wrong.log_text()
    assert "wrong" not in wrong.log_text(), "the secret is never logged"


def test_a_second_instance_for_the_same_domain_says_so_and_keeps_out(tmp_path, server):
    """Prosody refuses it (conflict); ejabberd would accept it and split
    the domain's traffic, which the self-check after the handshake finds."""
    prosody, first = server

    async def scenario():
        first.start()
        second = Component(str(tmp_path), prosody, OWNERS_ASK, name="second")
        second.start(wait_connected=False)
        try:
            second.wait_log("another instance", timeout=20)
        finally:
            second.stop()
        assert " connected domain=" not in second.log_text(), second.log_text()
        # The first one still serves Alice's watchers, every stanza of them.
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s)
        await link_alice(phone, prosody)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        since = await bob_watches_alice(bob, phone)
        await bob.wait_for(presence(f"{ALICE}/audio"), since)
        for c in (bob, phone):
            await c.offline()

    asyncio.run(scenario())


def test_an_idle_link_is_kept_alive(tmp_path, prosody):
    comp = Component(str(tmp_path), prosody, OWNERS_ASK)
    comp.config_text = open(comp.config).read().replace("keepalive_secs = 5", "keepalive_secs = 1")
    open(comp.config, "w").write(comp.config_text)

    async def scenario():
        comp.start()
        await asyncio.sleep(3.5)
        assert comp.log_text().count("keepalive") >= 2
        assert "connection lost" not in comp.log_text()
        # Still serving after the silence.
        phone = await Client("alice@localhost/phone", JINGLE_VIDEO, caps_node=PHONE_NODE).online(prosody.c2s)
        await link_alice(phone, prosody)
        await phone.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()


def test_a_status_naming_her_device_is_withheld_before_and_after_a_restart(server):
    """Issue 13: her own words reach her watchers; a status naming her
    device (by a name a client made up) does not, before a restart or
    after it, and the device that set it is told why, once per text."""
    prosody, component = server
    device = "lapt0p-x2"

    async def scenario():
        component.start()
        laptop = await Client(f"alice@localhost/{device}").online(prosody.c2s)
        await link_alice(laptop, prosody)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        await bob_watches_alice(bob, laptop)
        await bob.wait_for(presence(f"{ALICE}/chat"), what="her chat presence")

        def status_of(p):
            s = p.find(C + "status")
            return None if s is None else s.text

        def told(since):
            return laptop.received(lambda el: el.tag == C + "message" and el.get("from") == DOMAIN
                                   and device in (el.findtext(C + "body") or ""), since)

        async def set_status(show, text):
            since, mine = bob.mark(), laptop.mark()
            laptop.send_presence(pshow=show, pstatus=text)
            p = await bob.wait_for(lambda el: presence(f"{ALICE}/chat")(el) and show_of(el) == show, since,
                                   what=f"her {show} presence")
            return p, mine

        # Her own words pass, an everyday word for a device included.
        p, _ = await set_status("away", "on my laptop, back soon")
        assert status_of(p) == "on my laptop, back soon"
        # Naming the device: withheld, and she is told once.
        p, mine = await set_status("chat", f"typing on {device} now")
        assert status_of(p) is None
        await laptop.wait_for(lambda el: told(mine), mine, what="why her status was withheld")
        p, mine = await set_status("away", f"typing on {device} now")
        assert status_of(p) is None
        await asyncio.sleep(0.5)
        assert not told(mine), "told once per text"

        # After a restart: the same.
        assert component.stop() == 0
        component.start()
        await asyncio.sleep(QUIET)
        p, mine = await set_status("chat", f"still on {device}")
        assert status_of(p) is None, f"after a restart Bob saw {status_of(p)!r}"
        await laptop.wait_for(lambda el: told(mine), mine, what="why, after the restart")
        for raw in bob.raw_since(0):
            assert device not in raw and "alice@localhost" not in raw, raw
        for c in (laptop, bob):
            await c.offline()

    asyncio.run(scenario())
