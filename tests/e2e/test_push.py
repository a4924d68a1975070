"""Phones that sleep (issue 18): Alice's phone enables XEP-0357 push on
her server and goes to sleep, either disconnected or with its XEP-0198
session hibernated; Bob calls alice@unified.localhost; her server pushes
to the app server (played by a client account, as Conversations' and
Monal's app servers are XMPP entities); the phone wakes, gets the call,
answers, and Bob's call connects. Real Prosody with mod_cloud_notify
(Debian's prosody-modules) and real ejabberd with mod_push."""
import asyncio
import time

import pytest

from harness import C, DOMAIN, JINGLE_AUDIO, SERVERS, Client, Component, iq_reply, presence, start_prosody
from prosody_local import free_port
from test_admin import TOKEN, get, metric
from test_calls import (AUDIO, CONTENT, JINGLE, JMI, ack, assert_private, jingle_iq, jmi_msg, jmi_of,
                        send_jingle, send_jmi)

ALICE = f"alice@{DOMAIN}"
PUSH = "urn:xmpp:push:0"
APP = "push@localhost/app"
OWNERS = """[calls]
ring_timeout_secs = {ring}
{push_domains}

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"

[[owners.rules]]
on_no_answer = "message"
timeout_secs = {ring}
"""


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "push"), kind=request.param, push=True)
    comp = Component(str(tmp_path), p, owners(p, ring=20))
    # The admin's view of the calls (metrics, status page).
    comp.http = free_port()
    with open(comp.config, "a") as f:
        f.write(f'\n[http]\nbind = "127.0.0.1:{comp.http}"\nadmin_token = "{TOKEN}"\n')
    yield p, comp
    comp.stop()
    p.stop()


def owners(server, ring):
    """ejabberd's mod_push tells only the account itself that it pushes
    (its disco#info to anyone else leaves the feature out): its admin
    says so in push_domains. Prosody's mod_cloud_notify tells her
    virtual JID, and needs nothing."""
    domains = 'push_domains = ["localhost"]' if server.kind == "ejabberd" else ""
    return OWNERS.format(ring=ring, push_domains=domains)


def phone_client(resume=False):
    """Her phone, as Monal or Conversations: calls (XEP-0353), receipts,
    stream management when it hibernates rather than disconnects."""
    phone = Client("alice@localhost/phone", JINGLE_AUDIO + [JMI, "urn:xmpp:receipts"],
                   caps_node="https://monal-im.org")
    if resume:
        phone.register_plugin("xep_0198")
    return phone


def push_of(node):
    """Predicate: the XEP-0357 notification her server publishes for `node`."""
    def pred(el):
        if el.tag != C + "iq" or el.get("type") != "set":
            return False
        publish = el.find("{http://jabber.org/protocol/pubsub}pubsub/{http://jabber.org/protocol/pubsub}publish")
        return publish is not None and publish.get("node") == node and \
            publish.find(f"{{http://jabber.org/protocol/pubsub}}item/{{{PUSH}}}notification") is not None
    return pred


async def enable_push(phone, node):
    """What the phone's client does after login (XEP-0357 §5)."""
    s = phone.mark()
    phone.send_raw(f"<iq type='set' id='push-on'><enable xmlns='{PUSH}' jid='{APP}' node='{node}'/></iq>")
    reply = await phone.wait_for(iq_reply("push-on"), s, what="the server's answer to enable")
    assert reply.get("type") == "result", phone.raw_since(s)


async def setup(p, comp, resume=False):
    comp.start()
    app = await Client(APP).online(p.c2s)
    phone = await phone_client(resume).online(p.c2s)
    await phone.wait_for(presence(ALICE, "subscribe"))
    phone.send_presence(pto=ALICE, ptype="subscribed")
    # Once she approved, the component asks her account whether it pushes.
    pushes = "true" if p.kind == "prosody" else "false"
    await comp.await_log(f"her server's push support owner=alice pushes={pushes}")
    await enable_push(phone, "alice-phone")
    bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
    bob.send_presence(pto=ALICE, ptype="subscribe")
    await bob.wait_for(presence(AUDIO), what="/audio available")
    await asyncio.sleep(0.5)  # the phone's features learned
    return app, phone, bob


def propose(bob, sid):
    bob.send_raw(f"<message type='chat' id='m-{sid}' to='{ALICE}'><propose xmlns='{JMI}' id='{sid}'>"
                 "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
                 "<request xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/></message>")


async def pushed(app, since):
    """The app server gets the push and answers it, as a real one does."""
    notification = await app.wait_for(push_of("alice-phone"), since, timeout=10, what="a push for her phone")
    ack(app, notification)
    return notification


async def answer_and_connect(phone, bob, s_bob, sid):
    """The phone that woke has the propose: receipt, ringing, proceed, and
    Bob's Jingle session reaches it; returns the proxy full JID."""
    propose_ = await phone.wait_for(jmi_msg("propose"), what="the call, once awake")
    proxy, leg = propose_.get("from"), jmi_of(propose_).get("id")
    assert proxy.startswith(rf"bob\40localhost@{DOMAIN}/"), proxy
    assert propose_.find("{urn:xmpp:receipts}request") is not None
    phone.send_raw(f"<message to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{propose_.get('id')}'/></message>")
    receipt = await bob.wait_for(lambda el: el.find("{urn:xmpp:receipts}received") is not None, s_bob,
                                 what="his receipt")
    assert receipt.find("{urn:xmpp:receipts}received").get("id") == f"m-{sid}"
    send_jmi(phone, proxy, "ringing", leg)
    await bob.wait_for(jmi_msg("ringing", AUDIO, sid), s_bob, what="ringing")
    send_jmi(phone, proxy, "proceed", leg)
    await bob.wait_for(jmi_msg("proceed", AUDIO, sid), s_bob, what="proceed")
    send_jingle(bob, AUDIO, "b1", "session-initiate", sid, CONTENT, "initiator='bob@localhost/pc'")
    si = await phone.wait_for(jingle_iq("session-initiate", proxy), what="Bob's session-initiate")
    assert si.find("{%s}jingle" % JINGLE).get("sid") == leg
    ack(phone, si)
    assert (await bob.wait_for(iq_reply("b1"), s_bob)).get("type") == "result"
    accept = CONTENT.replace("setup='actpass'", "setup='active'")
    send_jingle(phone, proxy, "p1", "session-accept", leg, accept,
                f"initiator='{proxy}' responder='alice@localhost/phone'")
    sa = await bob.wait_for(jingle_iq("session-accept", AUDIO), s_bob, what="her session-accept")
    assert sa.find("{%s}jingle" % JINGLE).get("sid") == sid
    ack(bob, sa)
    send_jingle(bob, AUDIO, "b2", "session-terminate", sid, "<reason><success/></reason>")
    term = await phone.wait_for(jingle_iq("session-terminate", proxy))
    ack(phone, term)
    return proxy


def test_a_call_wakes_her_phone_asleep_by_push_and_connects(world):
    p, comp = world

    async def scenario():
        app, phone, bob = await setup(p, comp)
        # The phone goes to sleep: disconnected, push enabled.
        s_bob = bob.mark()
        await phone.offline()
        await bob.wait_for(presence(AUDIO, "unavailable"), s_bob, what="/audio unavailable")
        s_bob, s_app = bob.mark(), app.mark()
        asked = time.monotonic()
        propose(bob, "W1")
        await pushed(app, s_app)
        await asyncio.sleep(0.5)
        assert not bob.received(jmi_msg("reject"), s_bob), "not busy: her phone is being woken"
        # It wakes (a second or two for a real phone), reconnects, and gets
        # the call her server kept for it.
        await asyncio.sleep(1.0)
        phone = await phone_client().online(p.c2s)
        await asyncio.sleep(0.3)
        _, page = get(comp.http, "/status")
        # One leg (her account), not yet reached: the phone has not said so.
        assert "<td>ringing</td><td>1</td><td>0</td><td>-</td>" in page, page
        await answer_and_connect(phone, bob, s_bob, "W1")
        print(f"\nasleep phone: push to connected call in {time.monotonic() - asked:.1f} s")
        await asyncio.sleep(0.3)  # the component takes its own end of the call
        _, text = get(comp.http, "/metrics")
        assert metric(text, 'unified_presence_call_legs_total{state="rung"}') == 1
        assert metric(text, 'unified_presence_call_legs_total{state="reached"}') == 1
        assert metric(text, 'unified_presence_call_legs_total{state="answered"}') == 1
        # Rung through the push, it first rang after its wake-up (1.5 s here).
        assert metric(text, "unified_presence_first_ring_seconds_count") == 1
        assert metric(text, "unified_presence_first_ring_seconds_sum") >= 1.5
        assert_private(bob)
        for c in (app, phone, bob):
            await c.offline()

    asyncio.run(scenario())


def test_a_call_nobody_answers_is_taken_back_before_the_phone_wakes(tmp_path):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "push"), push=True)
    comp = Component(str(tmp_path), p, owners(p, ring=3))

    async def scenario():
        app, phone, bob = await setup(p, comp)
        s_bob = bob.mark()
        await phone.offline()
        await bob.wait_for(presence(AUDIO, "unavailable"), s_bob)
        s_bob, s_app = bob.mark(), app.mark()
        propose(bob, "N1")
        await pushed(app, s_app)
        rej = await bob.wait_for(jmi_msg("reject", AUDIO, "N1"), s_bob, timeout=8, what="nobody answered")
        assert jmi_of(rej).find("{%s}reason/{%s}timeout" % (JINGLE, JINGLE)) is not None
        # The phone wakes late: its server hands it the propose, then the
        # retract of the same call, then her missed-call note. It does not
        # ring for a call that is over.
        phone = await phone_client().online(p.c2s)
        note = await phone.wait_for(lambda el: el.find(C + "body") is not None and
                                    "Missed audio call" in el.find(C + "body").text, what="the missed-call note")
        assert "will not ring for it" in note.find(C + "body").text
        proposes = phone.received(jmi_msg("propose"))
        retracts = phone.received(jmi_msg("retract"))
        assert len(proposes) == 1 and len(retracts) == 1, phone.raw_since(0)
        assert jmi_of(retracts[0]).get("id") == jmi_of(proposes[0]).get("id")
        order = [el for el in phone.received(jmi_msg())]
        assert order[0] is proposes[0] and order[1] is retracts[0], "the retract comes after the propose"
        assert_private(bob)
        for c in (app, phone, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()


def test_a_call_wakes_her_phone_whose_session_hibernates(world):
    """XEP-0198: the phone's connection drops without a goodbye; its server
    keeps the session (her phone stays online to everyone), queues what
    arrives, and pushes. The phone resumes the session and answers."""
    p, comp = world

    async def scenario():
        app, phone, bob = await setup(p, comp, resume=True)
        assert phone.plugin["xep_0198"].sm_id, "the server offered resumption"
        s_bob, s_app = bob.mark(), app.mark()
        # The network goes away under the phone: no </stream>, no
        # unavailable presence; her server hibernates the session.
        sm_id = phone.plugin["xep_0198"].sm_id
        resumed = asyncio.Event()
        phone.add_event_handler("session_resumed", lambda _: resumed.set())
        phone.transport.abort()
        await asyncio.sleep(1.0)
        assert not bob.received(presence(AUDIO, "unavailable"), s_bob), "hibernated, not offline"
        propose(bob, "H1")
        await pushed(app, s_app)
        # Woken, it resumes its session and gets what was queued for it.
        phone.plugin["xep_0198"].sm_id = sm_id
        phone.connect("127.0.0.1", p.c2s)
        await asyncio.wait_for(resumed.wait(), 15)
        await answer_and_connect(phone, bob, s_bob, "H1")
        assert_private(bob)
        for c in (app, phone, bob):
            await c.offline()

    asyncio.run(scenario())


SEQUENTIAL = """[calls]
ring_timeout_secs = 30
ack_timeout_ms = {ack}

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"

[[owners.rules]]
classes = ["audio"]
ring = "sequential"
devices = ["tablet", "phone"]
step_secs = 10
"""


def test_a_sequential_step_whose_device_never_got_the_call_gives_way_after_the_ack_timeout(tmp_path):
    """Her tablet's connection is dead without her server knowing yet (no
    receipt, no ringing comes back): after ack_timeout_ms her phone rings,
    not after the tablet's 10 s step."""
    p = start_prosody(str(tmp_path), users=("alice", "bob"))
    comp = Component(str(tmp_path), p, SEQUENTIAL.format(ack=1500))

    async def scenario():
        comp.start()
        tablet = await Client("alice@localhost/tablet", JINGLE_AUDIO + [JMI]).online(p.c2s)
        await tablet.wait_for(presence(ALICE, "subscribe"))
        tablet.send_presence(pto=ALICE, ptype="subscribed")
        phone = await phone_client().online(p.c2s)
        bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(AUDIO))
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()

        async def call(sid, tablet_acks):
            s_tablet, s_phone, s_bob = tablet.mark(), phone.mark(), bob.mark()
            propose(bob, sid)
            first = await tablet.wait_for(jmi_msg("propose"), s_tablet)
            t0 = loop.time()
            if tablet_acks:
                tablet.send_raw(f"<message to='{first.get('from')}'><received xmlns='urn:xmpp:receipts' "
                                f"id='{first.get('id')}'/></message>")
                await bob.wait_for(lambda el: el.find("{urn:xmpp:receipts}received") is not None, s_bob)
            await phone.wait_for(jmi_msg("propose"), s_phone, timeout=15)
            waited = loop.time() - t0
            send_jmi(bob, ALICE, "retract", sid)
            await phone.wait_for(jmi_msg("retract"), s_phone)
            return waited

        silent = await call("A1", tablet_acks=False)
        print(f"\nsequential step, tablet silent: phone rang after {silent:.2f} s (ack timeout 1.5 s, step 10 s)")
        assert 1.2 <= silent < 5, silent
        acked = await call("A2", tablet_acks=True)
        print(f"sequential step, tablet acknowledged: phone rang after {acked:.2f} s")
        assert acked >= 9.5, "a device that got the call keeps its full step"
        for c in (tablet, phone, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
