"""Calls end to end (issue 3): Bob calls alice@unified.localhost; the
component rings her phone (Dino's dialect) and tablet (Conversations'
dialect) but not her chat-only laptop, and relays Jingle to the one that
answers. Real Prosody, real binary, slixmpp devices, raw JMI and Jingle."""
import asyncio
import xml.etree.ElementTree as ET

import pytest

from harness import (C, DOMAIN, JINGLE_AUDIO, SERVERS, Client, Component, error_condition,
                     iq_reply, presence, show_of, start_prosody)

ALICE = f"alice@{DOMAIN}"
AUDIO = f"{ALICE}/audio"
JMI = "urn:xmpp:jingle-message:0"
JINGLE = "urn:xmpp:jingle:1"
OWNERS = """[calls]
ring_timeout_secs = 3

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""

# What Conversations puts in a session-initiate / session-accept: opus with
# rtcp-fb, header extensions, extmap-allow-mixed, ssrc with parameters,
# rtcp-mux, a DTLS fingerprint and ICE candidates with an mDNS address.
CONTENT = """<content xmlns='urn:xmpp:jingle:1' creator='initiator' name='0' senders='both'>\
<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
<payload-type id='111' name='opus' clockrate='48000' channels='2'>\
<parameter name='minptime' value='10'/><parameter name='useinbandfec' value='1'/>\
<rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/></payload-type>\
<payload-type id='0' name='PCMU' clockrate='8000'/>\
<rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1' uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>\
<rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='3' uri='http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01'/>\
<extmap-allow-mixed xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0'/>\
<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='2948513925'>\
<parameter name='cname' value='Xw3uVJKiPnXW0pyP'/><parameter name='msid' value='my-media-stream my-audio-track'/></source>\
<rtcp-mux/></description>\
<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8Xgj' pwd='yS0LQvIRAHtOwNVQsvz2p3Zd'>\
<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>\
62:C6:2A:95:E4:5B:61:1E:A5:C4:2A:9E:BB:3C:A3:69:7D:6E:41:E8:D3:2B:9B:6F:C0:0B:54:1D:9D:3E:6A:41</fingerprint>\
<candidate component='1' foundation='3577384498' generation='0' id='e1' ip='6a83f06c-77b3-4bfb-a3a4-1c7d2b0e0b51.local' network='1' port='48307' priority='2122260223' protocol='udp' type='host'/>\
<candidate component='1' foundation='842163049' generation='0' id='e2' ip='203.0.113.20' network='1' port='48307' priority='1686052607' protocol='udp' rel-addr='0.0.0.0' rel-port='0' type='srflx'/>\
</transport></content>"""


def canonical(el_or_xml):
    xml = el_or_xml if isinstance(el_or_xml, str) else ET.tostring(el_or_xml, encoding="unicode")
    return ET.canonicalize(xml_data=xml, strip_text=True, rewrite_prefixes=True)


def jmi_of(el):
    for child in el:
        if child.tag.startswith("{" + JMI + "}"):
            return child
    return None


def jmi_msg(name=None, frm=None, id_=None):
    def pred(el):
        if el.tag != C + "message":
            return False
        j = jmi_of(el)
        if j is None or (name and j.tag != "{%s}%s" % (JMI, name)):
            return False
        return (frm is None or el.get("from") == frm) and (id_ is None or j.get("id") == id_)
    return pred


def jingle_iq(action=None, frm=None):
    def pred(el):
        if el.tag != C + "iq" or el.get("type") != "set":
            return False
        j = el.find("{%s}jingle" % JINGLE)
        return j is not None and (action is None or j.get("action") == action) and (frm is None or el.get("from") == frm)
    return pred


def send_jmi(client, to, name, id_, inner="", extra=""):
    client.send_raw(f"<message type='chat' to='{to}'><{name} xmlns='{JMI}' id='{id_}'>{inner}</{name}>{extra}</message>")


def send_jingle(client, to, iq_id, action, sid, body="", attrs=""):
    client.send_raw(f"<iq type='set' id='{iq_id}' to='{to}'><jingle xmlns='{JINGLE}' action='{action}' sid='{sid}' {attrs}>{body}</jingle></iq>")


def ack(client, iq):
    client.send_raw(f"<iq type='result' id='{iq.get('id')}' to='{iq.get('from')}'/>")


def assert_private(client, since=0):
    for raw in client.raw_since(since):
        for secret in ("alice@localhost", "phone", "tablet", "laptop"):
            assert secret not in raw, f"leak of {secret!r}: {raw}"


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    """Every call scenario runs against Prosody and against ejabberd."""
    p = start_prosody(str(tmp_path), kind=request.param)
    comp = Component(str(tmp_path), p, OWNERS)
    yield p, comp
    comp.stop()
    p.stop()


async def setup(p, comp):
    comp.start()
    # Dino-like phone, Conversations-like tablet: both can do audio calls.
    phone = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI], caps_node="https://dino.im").online(p.c2s)
    await phone.wait_for(presence(ALICE, "subscribe"))
    phone.send_presence(pto=ALICE, ptype="subscribed")
    tablet = await Client("alice@localhost/tablet", JINGLE_AUDIO + [JMI], caps_node="https://conversations.im").online(p.c2s)
    laptop = await Client("alice@localhost/laptop", ["urn:xmpp:receipts"]).online(p.c2s)
    bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
    bob.send_presence(pto=ALICE, ptype="subscribe")
    await bob.wait_for(presence(AUDIO), what="/audio available")
    await asyncio.sleep(0.5)  # let every device's features be learned
    return phone, tablet, laptop, bob


async def ring(bob, phone, tablet, sid, receipt=True):
    """Bob proposes; returns the proxy full JID and each device's leg id."""
    s_phone, s_tablet = phone.mark(), tablet.mark()
    extra = "<request xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/>" if receipt else ""
    bob.send_raw(f"<message type='chat' id='m-{sid}' to='{ALICE}'><propose xmlns='{JMI}' id='{sid}'>"
                 f"<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>{extra}</message>")
    p1 = await phone.wait_for(jmi_msg("propose"), s_phone, what="the phone ringing")
    p2 = await tablet.wait_for(jmi_msg("propose"), s_tablet, what="the tablet ringing")
    assert p1.get("from") == p2.get("from"), "one proxy full JID for the call"
    assert p1.get("type") == "chat"
    assert jmi_of(p1).get("id") != jmi_of(p2).get("id") != sid
    phone.last_propose, tablet.last_propose = p1, p2
    return p1.get("from"), jmi_of(p1).get("id"), jmi_of(p2).get("id")


def send_receipt(device, proxy):
    """What Conversations does when a propose asks for a receipt."""
    msg = device.last_propose
    assert msg.find("{urn:xmpp:receipts}request") is not None, "the leg asks for a receipt"
    device.send_raw(f"<message to='{proxy}'><received xmlns='urn:xmpp:receipts' id='{msg.get('id')}'/></message>")


def test_a_call_rings_both_phones_and_connects_the_one_that_answers(world):
    p, comp = world

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)
        s_bob, s_laptop = bob.mark(), laptop.mark()
        proxy, phone_leg, tablet_leg = await ring(bob, phone, tablet, "S1")
        assert proxy.startswith(rf"bob\40localhost@{DOMAIN}/")
        # Bob's receipt says a device got the call: it comes from the first
        # device's receipt, under his id; the other device's is absorbed.
        def receipts():
            return bob.received(lambda el: el.find("{urn:xmpp:receipts}received") is not None, s_bob)
        await asyncio.sleep(0.3)
        assert not receipts(), "no receipt before a device got the call"
        send_receipt(tablet, proxy)
        receipt = await bob.wait_for(lambda el: el.find("{urn:xmpp:receipts}received") is not None, s_bob)
        assert receipt.find("{urn:xmpp:receipts}received").get("id") == "m-S1"
        assert receipt.get("from") == AUDIO
        send_receipt(phone, proxy)

        # Conversations: ringing, accept to her own bare JID, proceed with
        # an OMEMO device.
        send_jmi(tablet, proxy, "ringing", tablet_leg)
        ringing = await bob.wait_for(jmi_msg("ringing", AUDIO, "S1"), s_bob)
        send_jmi(tablet, "alice@localhost", "accept", tablet_leg)
        send_jmi(tablet, proxy, "proceed", tablet_leg,
                 "<device xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' id='123'/>")
        proceed = await bob.wait_for(jmi_msg("proceed", AUDIO, "S1"), s_bob)
        assert len(list(jmi_of(proceed))) == 0, "the OMEMO device is not passed on"
        retract = await phone.wait_for(jmi_msg("retract", proxy, phone_leg), what="the phone's retract")
        await asyncio.sleep(0.5)
        assert not laptop.received(jmi_msg("propose"), s_laptop), "the chat-only laptop never rang"
        assert len(receipts()) == 1, "one receipt, none stray"

        # Bob's session-initiate reaches the tablet, payload intact.
        send_jingle(bob, AUDIO, "b1", "session-initiate", "S1", CONTENT, "initiator='bob@localhost/pc'")
        si = await tablet.wait_for(jingle_iq("session-initiate", proxy))
        j = si.find("{%s}jingle" % JINGLE)
        assert (j.get("sid"), j.get("initiator")) == (tablet_leg, proxy)
        assert canonical(j.find("{%s}content" % JINGLE)) == canonical(CONTENT)
        ack(tablet, si)
        assert (await bob.wait_for(iq_reply("b1"), s_bob)).get("type") == "result"

        # Watchers see Alice busy while she is in a call.
        busy = await bob.wait_for(lambda el: presence(AUDIO)(el) and show_of(el) == "dnd", s_bob)
        assert busy.find(C + "status").text == "In a call"

        # session-accept from the tablet reaches Bob from the class resource.
        accept_body = CONTENT.replace("setup='actpass'", "setup='active'")
        send_jingle(tablet, proxy, "t1", "session-accept", tablet_leg, accept_body,
                    f"initiator='{proxy}' responder='alice@localhost/tablet'")
        sa = await bob.wait_for(jingle_iq("session-accept", AUDIO), s_bob)
        j = sa.find("{%s}jingle" % JINGLE)
        assert (j.get("sid"), j.get("initiator"), j.get("responder")) == ("S1", "bob@localhost/pc", AUDIO)
        assert canonical(j.find("{%s}content" % JINGLE)) == canonical(accept_body)
        ack(bob, sa)
        assert (await tablet.wait_for(iq_reply("t1"))).get("type") == "result"

        # transport-info both ways, then Bob hangs up.
        send_jingle(tablet, proxy, "t2", "transport-info", tablet_leg, CONTENT)
        ti = await bob.wait_for(jingle_iq("transport-info", AUDIO), s_bob)
        ack(bob, ti)
        await tablet.wait_for(iq_reply("t2"))
        send_jingle(bob, AUDIO, "b2", "transport-info", "S1", CONTENT)
        ti = await tablet.wait_for(jingle_iq("transport-info", proxy))
        ack(tablet, ti)
        await bob.wait_for(iq_reply("b2"), s_bob)
        s_tablet = tablet.mark()
        send_jingle(bob, AUDIO, "b3", "session-terminate", "S1", "<reason><success/></reason>")
        term = await tablet.wait_for(jingle_iq("session-terminate", proxy), s_tablet)
        ack(tablet, term)
        await bob.wait_for(iq_reply("b3"), s_bob)
        # ...and /audio is no longer busy: the last /audio presence Bob got.
        for _ in range(100):
            latest = bob.received(presence(AUDIO), s_bob)[-1]
            if show_of(latest) is None:
                break
            await asyncio.sleep(0.05)
        assert show_of(latest) is None, bob.raw_since(s_bob)

        # The session is gone: more Jingle for it is refused per XEP-0166.
        send_jingle(bob, AUDIO, "b4", "transport-info", "S1")
        err = await bob.wait_for(iq_reply("b4"), s_bob)
        assert error_condition(err) == "item-not-found"
        assert err.find(C + "error").find("{urn:xmpp:jingle:errors:1}unknown-session") is not None

        assert_private(bob)
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def test_calls_end_as_they_should(world):
    p, comp = world

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)

        # Bob retracts while ringing: every leg is retracted.
        s_bob = bob.mark()
        proxy, phone_leg, tablet_leg = await ring(bob, phone, tablet, "R1")
        send_jmi(bob, ALICE, "retract", "R1")
        await phone.wait_for(jmi_msg("retract", proxy, phone_leg))
        await tablet.wait_for(jmi_msg("retract", proxy, tablet_leg))

        # Nobody answers within the ring timeout (3 s here).
        proxy, phone_leg, tablet_leg = await ring(bob, phone, tablet, "T1", receipt=False)
        rej = await bob.wait_for(jmi_msg("reject", AUDIO, "T1"), s_bob, timeout=8)
        assert jmi_of(rej).find("{%s}reason/{%s}timeout" % (JINGLE, JINGLE)) is not None
        await phone.wait_for(jmi_msg("retract", proxy, phone_leg))
        await tablet.wait_for(jmi_msg("retract", proxy, tablet_leg))

        # One declines, the other keeps ringing; when both have, Bob hears.
        proxy, phone_leg, tablet_leg = await ring(bob, phone, tablet, "D1", receipt=False)
        decline = f"<reason xmlns='{JINGLE}'><decline/></reason>"
        send_jmi(phone, proxy, "reject", phone_leg, decline)
        await asyncio.sleep(0.5)
        assert not bob.received(jmi_msg("reject", AUDIO, "D1"), s_bob)
        send_jmi(tablet, proxy, "reject", tablet_leg, decline)
        rej = await bob.wait_for(jmi_msg("reject", AUDIO, "D1"), s_bob)
        assert jmi_of(rej).find("{%s}reason/{%s}decline" % (JINGLE, JINGLE)) is not None

        # The phone answers, then hangs up with finish.
        proxy, phone_leg, tablet_leg = await ring(bob, phone, tablet, "F1", receipt=False)
        send_jmi(phone, proxy, "proceed", phone_leg)
        await bob.wait_for(jmi_msg("proceed", AUDIO, "F1"), s_bob)
        # A late proceed from the tablet is retracted.
        send_jmi(tablet, proxy, "proceed", tablet_leg)
        await tablet.wait_for(jmi_msg("retract", proxy, tablet_leg))
        send_jmi(phone, proxy, "finish", phone_leg, f"<reason xmlns='{JINGLE}'><success/></reason>")
        await bob.wait_for(jmi_msg("finish", AUDIO, "F1"), s_bob)

        # Both phones on do-not-disturb: busy at once. (Bob saw "In a call"
        # as dnd during F1 already: wait for her own dnd after it.)
        s_dnd = bob.mark()
        phone.send_presence(pshow="dnd")
        tablet.send_presence(pshow="dnd")

        def her_dnd(el):
            status = el.find(C + "status")
            in_call = status is not None and status.text == "In a call"
            return presence(AUDIO)(el) and show_of(el) == "dnd" and not in_call

        await bob.wait_for(her_dnd, s_dnd)
        bob.send_raw(f"<message type='chat' to='{ALICE}'><propose xmlns='{JMI}' id='B1'>"
                     "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        rej = await bob.wait_for(jmi_msg("reject", AUDIO, "B1"), s_bob)
        assert jmi_of(rej).find("{%s}reason/{%s}busy" % (JINGLE, JINGLE)) is not None

        assert_private(bob)
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def test_plain_jingle_is_forked_like_dino_does_without_jmi(world):
    p, comp = world

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)
        s_bob, s_phone, s_tablet = bob.mark(), phone.mark(), tablet.mark()
        send_jingle(bob, AUDIO, "j1", "session-initiate", "J1", CONTENT, "initiator='bob@localhost/pc'")
        assert (await bob.wait_for(iq_reply("j1"), s_bob)).get("type") == "result"
        si_phone = await phone.wait_for(jingle_iq("session-initiate"), s_phone)
        si_tablet = await tablet.wait_for(jingle_iq("session-initiate"), s_tablet)
        proxy = si_phone.get("from")
        assert si_tablet.get("from") == proxy
        phone_leg = si_phone.find("{%s}jingle" % JINGLE).get("sid")
        tablet_leg = si_tablet.find("{%s}jingle" % JINGLE).get("sid")
        assert canonical(si_phone.find("{%s}jingle/{%s}content" % (JINGLE, JINGLE))) == canonical(CONTENT)
        ack(phone, si_phone)
        ack(tablet, si_tablet)

        # Bob's transport-info is replayed to both ringing legs.
        send_jingle(bob, AUDIO, "j2", "transport-info", "J1", CONTENT)
        await phone.wait_for(jingle_iq("transport-info", proxy), s_phone)
        await tablet.wait_for(jingle_iq("transport-info", proxy), s_tablet)

        # The phone's own transport-info is held until it wins.
        s_bob = bob.mark()
        send_jingle(phone, proxy, "p1", "transport-info", phone_leg, CONTENT)
        await phone.wait_for(iq_reply("p1"))
        await asyncio.sleep(0.3)
        assert not bob.received(jingle_iq("transport-info"), s_bob)

        # The phone accepts first: Bob gets its accept, then what was held;
        # the tablet's ringing ends (with `success`: Gajim keeps a call
        # open on `cancel`).
        send_jingle(phone, proxy, "p2", "session-accept", phone_leg, CONTENT, "responder='alice@localhost/phone'")
        sa = await bob.wait_for(jingle_iq("session-accept", AUDIO), s_bob)
        assert sa.find("{%s}jingle" % JINGLE).get("responder") == AUDIO
        ack(bob, sa)
        await phone.wait_for(iq_reply("p2"))
        await bob.wait_for(jingle_iq("transport-info", AUDIO), s_bob)
        cancel = await tablet.wait_for(jingle_iq("session-terminate", proxy), s_tablet)
        assert cancel.find("{%s}jingle/{%s}reason/{%s}success" % (JINGLE, JINGLE, JINGLE)) is not None
        assert cancel.find("{%s}jingle" % JINGLE).get("sid") == tablet_leg

        assert_private(bob)
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def terminate_reason(iq):
    """(condition, text) of a session-terminate."""
    reason = iq.find("{%s}jingle/{%s}reason" % (JINGLE, JINGLE))
    assert reason is not None, ET.tostring(iq, encoding="unicode")
    conditions = [c.tag.split("}")[1] for c in reason if c.tag != "{%s}text" % JINGLE]
    text = reason.find("{%s}text" % JINGLE)
    return conditions, None if text is None else text.text


def test_plain_jingle_calls_end_once_with_what_gajim_takes_as_the_end(world):
    """Issue 20: after a decline, a ring timeout or the caller hanging up,
    each side gets exactly one session-terminate for its session, with
    `decline` or `success` (Gajim 1.7 keeps a call open on any other
    condition and then refuses every later call), and nothing after it."""
    p, comp = world

    async def start(phone, tablet, bob, sid):
        s_phone, s_tablet = phone.mark(), tablet.mark()
        send_jingle(bob, AUDIO, f"{sid}-i", "session-initiate", sid, CONTENT, "initiator='bob@localhost/pc'")
        si_phone = await phone.wait_for(jingle_iq("session-initiate"), s_phone)
        si_tablet = await tablet.wait_for(jingle_iq("session-initiate"), s_tablet)
        ack(phone, si_phone)
        ack(tablet, si_tablet)
        legs = {c: si.find("{%s}jingle" % JINGLE).get("sid") for c, si in ((phone, si_phone), (tablet, si_tablet))}
        return si_phone.get("from"), legs

    def terminates(client, since, sid=None):
        out = []
        for el in client.received(jingle_iq("session-terminate"), since):
            if sid is None or el.find("{%s}jingle" % JINGLE).get("sid") == sid:
                out.append(el)
        return out

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)

        # Both devices decline: Bob gets one decline, nothing more.
        s_bob = bob.mark()
        proxy, legs = await start(phone, tablet, bob, "D1")
        decline = f"<reason xmlns='{JINGLE}'><decline/></reason>"
        send_jingle(phone, proxy, "d1", "session-terminate", legs[phone], decline)
        send_jingle(tablet, proxy, "d2", "session-terminate", legs[tablet], decline)
        await bob.wait_for(jingle_iq("session-terminate", AUDIO), s_bob)
        await asyncio.sleep(1)
        ends = terminates(bob, s_bob)
        assert len(ends) == 1, ends
        assert terminate_reason(ends[0])[0] == ["decline"]
        for el in ends:
            ack(bob, el)

        # Nobody answers (3 s here): Bob gets one decline saying so, each
        # device one success; nothing after, however long they wait.
        s_bob, s_phone, s_tablet = bob.mark(), phone.mark(), tablet.mark()
        proxy, legs = await start(phone, tablet, bob, "T1")
        end = await bob.wait_for(jingle_iq("session-terminate", AUDIO), s_bob, timeout=8)
        ack(bob, end)
        assert terminate_reason(end) == (["decline"], "Nobody answered.")
        for device, s in ((phone, s_phone), (tablet, s_tablet)):
            leg_end = await device.wait_for(jingle_iq("session-terminate", proxy), s)
            ack(device, leg_end)
            assert terminate_reason(leg_end)[0] == ["success"]
        await asyncio.sleep(2)
        assert len(terminates(bob, s_bob)) == 1
        assert [len(terminates(d, s)) for d, s in ((phone, s_phone), (tablet, s_tablet))] == [1, 1]
        assert [el.find("{%s}jingle" % JINGLE).get("action") for el in bob.received(jingle_iq(), s_bob)] == ["session-terminate"]

        # Bob hangs up while it rings (Gajim sends `cancel`): each device
        # gets one success, Bob his IQ answered, nothing else.
        s_bob, s_phone, s_tablet = bob.mark(), phone.mark(), tablet.mark()
        proxy, legs = await start(phone, tablet, bob, "C1")
        send_jingle(bob, AUDIO, "c1", "session-terminate", "C1", f"<reason xmlns='{JINGLE}'><cancel/></reason>")
        assert (await bob.wait_for(iq_reply("c1"), s_bob)).get("type") == "result"
        for device, s in ((phone, s_phone), (tablet, s_tablet)):
            leg_end = await device.wait_for(jingle_iq("session-terminate", proxy), s)
            ack(device, leg_end)
            assert terminate_reason(leg_end) == (["success"], "The caller hung up.")
        await asyncio.sleep(1)
        assert terminates(bob, s_bob) == []
        assert [len(terminates(d, s)) for d, s in ((phone, s_phone), (tablet, s_tablet))] == [1, 1]

        assert_private(bob)
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def test_a_jmi_call_rings_a_device_that_only_speaks_plain_jingle(world):
    """Issue 20: Dino (XEP-0353) calls Alice, whose only device is Gajim 1.7
    (plain Jingle, no XEP-0353). Once answered busy; now the component
    proceeds for her device, and Dino's session-initiate rings it."""
    p, comp = world

    async def scenario():
        comp.start()
        gajim = await Client("alice@localhost/gajim.X1", JINGLE_AUDIO, caps_node="https://gajim.org").online(p.c2s)
        await gajim.wait_for(presence(ALICE, "subscribe"))
        gajim.send_presence(pto=ALICE, ptype="subscribed")
        bob = await Client("bob@localhost/dino", JINGLE_AUDIO + [JMI]).online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(AUDIO), what="/audio available")
        await asyncio.sleep(0.5)

        s_bob, s_gajim = bob.mark(), gajim.mark()
        bob.send_raw(f"<message type='chat' id='m-G1' to='{ALICE}'><propose xmlns='{JMI}' id='G1'>"
                     f"<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        proceed = await bob.wait_for(jmi_msg("proceed", AUDIO, "G1"), s_bob, what="proceed for the Gajim device")
        assert not bob.received(jmi_msg("reject"), s_bob)
        # XEP-0353: the session goes to whoever proceeded, with the propose's id.
        send_jingle(bob, proceed.get("from"), "g1", "session-initiate", "G1", CONTENT, "initiator='bob@localhost/dino'")
        si = await gajim.wait_for(jingle_iq("session-initiate"), s_gajim, what="the Gajim device ringing")
        ack(gajim, si)
        proxy, leg = si.get("from"), si.find("{%s}jingle" % JINGLE).get("sid")
        send_jingle(gajim, proxy, "a1", "session-accept", leg, CONTENT, "responder='alice@localhost/gajim.X1'")
        sa = await bob.wait_for(jingle_iq("session-accept", AUDIO), s_bob, what="Bob hears the answer")
        assert sa.find("{%s}jingle" % JINGLE).get("sid") == "G1"
        ack(bob, sa)
        assert_private(bob)
        for raw in bob.raw_since(s_bob):
            assert "gajim.X1" not in raw, raw
        for c in (gajim, bob):
            await c.offline()

    asyncio.run(scenario())


def test_sequential_rule_rings_the_phone_only_after_the_tablet_step(tmp_path):
    p = start_prosody(str(tmp_path))
    comp = Component(str(tmp_path), p, OWNERS + """
[[owners.rules]]
classes = ["audio"]
ring = "sequential"
devices = ["tablet", "phone"]
step_secs = 1
on_no_answer = "message"
""")

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)
        s_phone, s_tablet, s_bob, s_laptop = phone.mark(), tablet.mark(), bob.mark(), laptop.mark()
        bob.send_raw(f"<message type='chat' to='{ALICE}'><propose xmlns='{JMI}' id='Q1'>"
                     "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        first = await tablet.wait_for(jmi_msg("propose"), s_tablet)
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(0.5)
        assert not phone.received(jmi_msg("propose"), s_phone), "the phone waits for the tablet's step"
        second = await phone.wait_for(jmi_msg("propose"), s_phone)
        assert asyncio.get_running_loop().time() - t0 >= 0.8
        assert second.get("from") == first.get("from")
        await tablet.wait_for(jmi_msg("retract", first.get("from")), s_tablet)
        # Nobody answers within 3 s: Bob is told, Alice gets a note in her
        # chat with Bob's proxy JID.
        await bob.wait_for(jmi_msg("reject", AUDIO, "Q1"), s_bob, timeout=6)
        note = await laptop.wait_for(lambda el: el.find(C + "body") is not None and "Missed audio call" in el.find(C + "body").text, s_laptop)
        assert note.get("from") == rf"bob\40localhost@{DOMAIN}"
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()


def test_alice_sets_sequential_ringing_by_chat_and_it_survives_a_restart(world):
    p, comp = world

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)
        since = phone.mark()
        phone.send_raw(f"<message type='chat' to='{DOMAIN}'><body>ring sequential tablet phone</body></message>")
        reply = await phone.wait_for(lambda el: el.get("from") == DOMAIN and el.find(C + "body") is not None, since)
        assert "tablet, then phone" in reply.find(C + "body").text

        async def first_to_ring(sid):
            s_phone, s_tablet = phone.mark(), tablet.mark()
            bob.send_raw(f"<message type='chat' to='{ALICE}'><propose xmlns='{JMI}' id='{sid}'>"
                         "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
            await tablet.wait_for(jmi_msg("propose"), s_tablet)
            await asyncio.sleep(0.5)
            assert not phone.received(jmi_msg("propose"), s_phone), "the phone waits its turn"
            send_jmi(bob, ALICE, "retract", sid)

        await first_to_ring("R1")
        # The rule was stored: after a restart it still holds.
        assert comp.stop() == 0
        comp.start()
        await bob.wait_for(presence(AUDIO), bob.mark(), timeout=10)
        await asyncio.sleep(0.5)
        await first_to_ring("R2")
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def test_she_calls_bob_back_from_her_virtual_jid(world):
    """Issue 16: Alice calls Bob from her tablet through his proxy JID, as
    Conversations does: a propose to the bare proxy JID, then Jingle to his
    device's proxy full JID. Bob's client gets the call from
    alice@unified.localhost/audio, his ringing and proceed reach her from
    his proxy full JID, the session is relayed both ways with roles
    mapped, her other devices see the call taken (carbons of the propose
    and of his proceed), watchers see her busy, and nothing Bob receives
    names her devices or her real account. Then a plain-Jingle call (Dino
    without JMI) that he declines."""
    p, comp = world
    proxy = rf"bob\40localhost@{DOMAIN}"
    shown = f"{proxy}/pc"

    async def scenario():
        phone, tablet, laptop, bob = await setup(p, comp)
        # Her phone, like Conversations, has carbons on: it is how her
        # other devices learn of a call one of them makes (XEP-0353 §3.2).
        s_phone = phone.mark()
        phone.send_raw("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await phone.wait_for(iq_reply("carbons"), s_phone, what="carbons enabled")
        s_bob, s_tablet = bob.mark(), tablet.mark()
        tablet.send_raw(f"<message type='chat' id='o1' to='{proxy}'><propose xmlns='{JMI}' id='OUT1'>"
                        "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
                        "<store xmlns='urn:xmpp:hints'/></message>")
        prop = await bob.wait_for(jmi_msg("propose", AUDIO, "OUT1"), s_bob, what="her call, at Bob")
        assert prop.get("type") == "chat"
        send_jmi(bob, AUDIO, "ringing", "OUT1")
        await tablet.wait_for(jmi_msg("ringing", shown, "OUT1"), s_tablet, what="Bob's device ringing")
        send_jmi(bob, AUDIO, "proceed", "OUT1")
        await tablet.wait_for(jmi_msg("proceed", shown, "OUT1"), s_tablet, what="Bob's proceed")
        # Her phone saw both: her tablet's propose (a sent carbon) and his
        # proceed to her tablet (a received carbon), so it shows the call
        # as taken on another device rather than offering it.
        def carbon(kind, jmi):
            return lambda el: (el.tag == C + "message" and el.find("{urn:xmpp:carbons:2}" + kind) is not None
                               and el.find(f".//{{{JMI}}}{jmi}") is not None)
        await phone.wait_for(carbon("sent", "propose"), s_phone, what="a carbon of her tablet's propose")
        await phone.wait_for(carbon("received", "proceed"), s_phone, what="a carbon of his proceed")
        # Her session-initiate, to his device's proxy full JID.
        send_jingle(tablet, shown, "t1", "session-initiate", "OUT1", CONTENT, "initiator='alice@localhost/tablet'")
        si = await bob.wait_for(jingle_iq("session-initiate", AUDIO), s_bob, what="her session-initiate")
        j = si.find("{%s}jingle" % JINGLE)
        assert (j.get("sid"), j.get("initiator")) == ("OUT1", AUDIO)
        assert canonical(j.find("{%s}content" % JINGLE)) == canonical(CONTENT)
        ack(bob, si)
        assert (await tablet.wait_for(iq_reply("t1"), s_tablet)).get("type") == "result"
        accept_body = CONTENT.replace("setup='actpass'", "setup='active'")
        send_jingle(bob, AUDIO, "b1", "session-accept", "OUT1", accept_body,
                    f"initiator='{AUDIO}' responder='bob@localhost/pc'")
        sa = await tablet.wait_for(jingle_iq("session-accept", shown), s_tablet, what="his accept")
        j = sa.find("{%s}jingle" % JINGLE)
        assert (j.get("sid"), j.get("initiator"), j.get("responder")) == ("OUT1", "alice@localhost/tablet", shown)
        ack(tablet, sa)
        assert (await bob.wait_for(iq_reply("b1"), s_bob)).get("type") == "result"
        # Watchers (Bob among them) see her busy while she is in a call.
        await bob.wait_for(lambda el: presence(AUDIO)(el) and show_of(el) == "dnd", s_bob, what="busy")
        # He hangs up; she hears it from his proxy full JID.
        send_jingle(bob, AUDIO, "b2", "session-terminate", "OUT1", "<reason><success/></reason>")
        term = await tablet.wait_for(jingle_iq("session-terminate", shown), s_tablet, what="his hang-up")
        ack(tablet, term)
        await bob.wait_for(iq_reply("b2"), s_bob)

        # Plain Jingle from her phone (Dino without JMI): Bob declines.
        s_bob, s_phone = bob.mark(), phone.mark()
        send_jingle(phone, shown, "p1", "session-initiate", "OUT2", CONTENT, "initiator='alice@localhost/phone'")
        si = await bob.wait_for(jingle_iq("session-initiate", AUDIO), s_bob, what="her plain-Jingle call")
        assert si.find("{%s}jingle" % JINGLE).get("initiator") == AUDIO
        ack(bob, si)
        await phone.wait_for(iq_reply("p1"), s_phone)
        send_jingle(bob, AUDIO, "b3", "session-terminate", "OUT2", "<reason><decline/></reason>")
        term = await phone.wait_for(jingle_iq("session-terminate", shown), s_phone, what="his decline")
        assert term.find("{%s}jingle" % JINGLE).find("{%s}reason" % JINGLE).find("{%s}decline" % JINGLE) is not None
        ack(phone, term)

        assert_private(bob)
        for c in (phone, tablet, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


FT5 = "urn:xmpp:jingle:apps:file-transfer:5"
IBB_T = "urn:xmpp:jingle:transports:ibb:1"


S5B_T = "urn:xmpp:jingle:transports:s5b:1"


def with_streamhost(comp):
    """Gives `comp` a SOCKS5 streamhost on a free loopback port; returns
    the port."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(comp.config, "a") as f:
        f.write(f'\n[streamhost]\nlisten = "127.0.0.1:{port}"\n')
    return port


def dst_addr(sid, offerer, connector):
    """XEP-0260 §2.2 / XEP-0065 §5.3.2, as a client computes it: SHA-1 of
    the stream id, the offerer's JID and its own, as it knows them."""
    import hashlib
    return hashlib.sha1((sid + offerer + connector).encode()).hexdigest()


def streamhost_candidate(iq, port):
    """The one candidate of `iq`'s SOCKS5 transport, which must be the
    component's streamhost; with the transport."""
    t = iq.find(f".//{{{S5B_T}}}transport")
    assert t is not None, ET.tostring(iq, encoding="unicode")
    cands = t.findall(f"{{{S5B_T}}}candidate")
    assert len(cands) == 1, ET.tostring(iq, encoding="unicode")
    c = cands[0]
    assert (c.get("jid"), c.get("host"), c.get("port"), c.get("type")) == (DOMAIN, "127.0.0.1", str(port), "proxy")
    return c, t


def our_candidate(iq, port, sid, offerer, me):
    """The streamhost candidate `iq` gives an end that knows the offerer as
    `offerer` and itself as `me`: its `dstaddr` must be the hash that end
    computes for stream `sid`. Returns the candidate and that hash."""
    cand, t = streamhost_candidate(iq, port)
    dst = dst_addr(sid, offerer, me)
    assert t.get("dstaddr") == dst, ET.tostring(iq, encoding="unicode")
    return cand, dst


def send_s5b_info(client, to, iq_id, sid, t_sid, inner):
    """A SOCKS5 transport-info (`inner`: candidate-used, candidate-error)
    from `client` in Jingle session `sid`, transport `t_sid`."""
    send_jingle(client, to, iq_id, "transport-info", sid,
                f"<content creator='initiator' name='f'><transport xmlns='{S5B_T}' sid='{t_sid}'>"
                f"{inner}</transport></content>")


async def both_hear_candidate_error(ends):
    """Each (client, from, since, who) in `ends` hears that its own
    candidates failed for the other side, and acknowledges it."""
    for client, frm, since, who in ends:
        ack(client, await client.wait_for(s5b_info(frm, "candidate-error"), since,
                                          what=f"candidate-error, at {who}"))


def s5b_info(frm, inner):
    """A transport-info from `frm` whose SOCKS5 transport holds `inner`."""
    def pred(el):
        return jingle_iq("transport-info", frm)(el) and el.find(f".//{{{S5B_T}}}{inner}") is not None
    return pred


class Socks5End:
    """One end of a bytestream, connected the way a client connects to a
    streamhost: slixmpp's own SOCKS5 client (XEP-0065), asking for
    `dst` and port 0."""

    def __init__(self, client):
        self.client = client
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        client.add_event_handler("socks5_data", lambda d: self.data.extend(d))
        client.add_event_handler("socks5_closed",
                                 lambda exc: self.closed.done() or self.closed.set_result(bytes(self.data)))

    async def connect(self, host, port, dst):
        from slixmpp.plugins.xep_0065 import Socks5Protocol
        loop = asyncio.get_running_loop()
        self.transport, self.proto = await loop.create_connection(
            lambda: Socks5Protocol(dst, 0, self.client.event), host, port)
        await asyncio.wait_for(self.proto.connected, 5)

    async def send(self, data):
        for i in range(0, len(data), 65536):
            await self.proto.write(data[i:i + 65536])
        self.transport.close()


@pytest.mark.parametrize("first", ["ibb", "socks5", "socks5-unreachable"])
def test_she_sends_bob_a_file_from_her_virtual_jid(world, first):
    """Issue 16: Alice's phone offers Bob a file through his proxy JID
    (XEP-0234). Bob's client gets the offer from
    alice@unified.localhost/files, accepts it, and the file arrives byte
    for byte; nothing Bob receives names her device or account.
    `ibb`: in-band bytestreams (XEP-0261 and XEP-0047, as slixmpp
    implements them), their blocks relayed. `socks5`: she offers SOCKS5
    first, as Conversations, Dino and Gajim do, with a direct candidate
    (her address and device) and a mediated one; each end gets only the
    component's streamhost, hashed with the JIDs it knows, connects to it
    with slixmpp's SOCKS5 client, hears candidate-error for its own
    candidates and then `activated`, and a megabyte flows through.
    `socks5-unreachable`: Bob cannot reach the streamhost; she hears
    proxy-error and falls back to in-band (transport-replace)."""
    p, comp = world
    shown = rf"bob\40localhost@{DOMAIN}/pc"
    files = f"{ALICE}/files"
    socks5 = first.startswith("socks5")
    size = 1_000_000 if first == "socks5" else 20_000
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    port = with_streamhost(comp) if socks5 else None

    async def scenario():
        comp.start()
        phone = Client("alice@localhost/phone", ["urn:xmpp:jingle:1", FT5, IBB_T, S5B_T, JMI],
                       caps_node="https://dino.im")
        phone.register_plugin("xep_0047")
        await phone.online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        bob = Client("bob@localhost/pc", ["urn:xmpp:jingle:1", FT5, IBB_T, S5B_T])
        bob.register_plugin("xep_0047")
        bob.plugin["xep_0047"].auto_accept = True
        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler("ibb_stream_start", lambda stream: got.done() or got.set_result(stream))
        await bob.online(p.c2s)
        s_bob, s_phone = bob.mark(), phone.mark()
        description = (f"<description xmlns='{FT5}'><file>"
                       f"<name>notes.bin</name><size>{len(data)}</size></file></description>")
        ibb = f"<transport xmlns='{IBB_T}' block-size='4096' sid='IBB1'/>"
        s5b = (f"<transport xmlns='{S5B_T}' sid='S5B1' mode='tcp' dstaddr='972b7bf47291ca609517f67f86b5081086052dad'>"
               "<candidate cid='c1' host='192.0.2.44' jid='alice@localhost/phone' port='5086' priority='8257636' type='direct'/>"
               "<candidate cid='c2' host='127.0.0.1' jid='proxy.localhost' port='7777' priority='655360' type='proxy'/>"
               "</transport>")
        offer = (f"<content creator='initiator' name='f' senders='initiator'>{description}"
                 f"{s5b if socks5 else ibb}</content>")
        send_jingle(phone, shown, "f1", "session-initiate", "FILE1", offer, "initiator='alice@localhost/phone'")
        si = await bob.wait_for(jingle_iq("session-initiate", files), s_bob, what="her file offer, at Bob")
        assert si.find("{%s}jingle" % JINGLE).get("initiator") == files
        ack(bob, si)
        await phone.wait_for(iq_reply("f1"), s_phone)
        if not socks5:
            send_jingle(bob, files, "b1", "session-accept", "FILE1", offer,
                        f"initiator='{files}' responder='bob@localhost/pc'")
            sa = await phone.wait_for(jingle_iq("session-accept", shown), s_phone, what="his accept")
            ack(phone, sa)
        else:
            # Bob knows her as alice@D/files: our candidate is hashed so.
            his, his_dst = our_candidate(si, port, "S5B1", files, "bob@localhost/pc")
            accept = (f"<content creator='initiator' name='f' senders='initiator'>{description}"
                      f"<transport xmlns='{S5B_T}' sid='S5B1' mode='tcp'>"
                      "<candidate cid='b1' host='198.51.100.7' jid='bob@localhost/pc' port='6000' priority='8257636' type='direct'/>"
                      "</transport></content>")
            s_bob, s_phone = bob.mark(), phone.mark()
            send_jingle(bob, files, "b1", "session-accept", "FILE1", accept,
                        f"initiator='{files}' responder='bob@localhost/pc'")
            sa = await phone.wait_for(jingle_iq("session-accept", shown), s_phone, what="his accept")
            ack(phone, sa)
            # She knows him as his proxy full JID, herself as her phone.
            hers, her_dst = our_candidate(sa, port, "S5B1", shown, "alice@localhost/phone")
            # Neither's own candidates worked for "the other side".
            await both_hear_candidate_error([(phone, shown, s_phone, "her"), (bob, files, s_bob, "Bob")])
            at_phone, at_bob = Socks5End(phone), Socks5End(bob)
            await at_phone.connect("127.0.0.1", port, her_dst)
            send_s5b_info(phone, shown, "f2", "FILE1", "S5B1", f"<candidate-used cid='{hers.get('cid')}'/>")
            assert (await phone.wait_for(iq_reply("f2"), s_phone)).get("type") == "result"
            if first == "socks5":
                await at_bob.connect("127.0.0.1", port, his_dst)
                send_s5b_info(bob, files, "b2", "FILE1", "S5B1", f"<candidate-used cid='{his.get('cid')}'/>")
                act = await bob.wait_for(s5b_info(files, "activated"), s_bob, what="activated, at Bob")
                assert act.find(f".//{{{S5B_T}}}activated").get("cid") == his.get("cid")
                ack(bob, act)
                act = await phone.wait_for(s5b_info(shown, "activated"), s_phone, what="activated, at her")
                assert act.find(f".//{{{S5B_T}}}activated").get("cid") == hers.get("cid")
                ack(phone, act)
                await at_phone.send(data)
                assert await asyncio.wait_for(at_bob.closed, 30) == data
                await comp.await_log("bytestream done")
            else:
                send_s5b_info(bob, files, "b2", "FILE1", "S5B1", "<candidate-error/>")
                err = await phone.wait_for(s5b_info(shown, "proxy-error"), s_phone, what="proxy-error, at her")
                ack(phone, err)
                at_phone.transport.close()
                send_jingle(phone, shown, "f4", "transport-replace", "FILE1",
                            f"<content creator='initiator' name='f'>{ibb}</content>")
                rep = await bob.wait_for(jingle_iq("transport-replace", files), s_bob, what="her fallback to in-band")
                ack(bob, rep)
                send_jingle(bob, files, "b3", "transport-accept", "FILE1",
                            f"<content creator='initiator' name='f'>{ibb}</content>")
                ta = await phone.wait_for(jingle_iq("transport-accept", shown), s_phone, what="his accept of in-band")
                ack(phone, ta)
            assert not any("192.0.2.44" in r for r in bob.raw_since(0)), "her address reached Bob"
            assert not any("198.51.100.7" in r for r in phone.raw_since(0)), "his address reached her"
        if first != "socks5":
            stream = await phone.plugin["xep_0047"].open_stream(shown, sid="IBB1", block_size=4096)
            incoming = await asyncio.wait_for(got, 10)
            assert str(incoming.peer_jid) == files
            received = asyncio.ensure_future(incoming.gather(timeout=20))
            await stream.sendall(data)
            await stream.close()
            assert await asyncio.wait_for(received, 20) == data
        send_jingle(phone, shown, "f9", "session-terminate", "FILE1", "<reason><success/></reason>")
        term = await bob.wait_for(jingle_iq("session-terminate", files), s_bob)
        ack(bob, term)
        assert_private(bob)
        for c in (phone, bob):
            await c.offline()

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["ibb", "socks5"])
def test_bob_sends_her_a_file_and_her_device_that_accepts_gets_it(world, transport):
    """Issue 16: a file offer to alice@unified.localhost/files is forked
    like a call: both her devices that take files get it from Bob's proxy
    JID, the first to accept takes it (the other is told it is over), and
    the stream that follows reaches that device byte for byte: in-band
    (`ibb`), or through the component's SOCKS5 streamhost (`socks5`),
    where her phone and Bob each connect under the JIDs they know.
    Nothing Bob receives names her device or account, and no address of
    his reaches her."""
    p, comp = world
    proxy = rf"bob\40localhost@{DOMAIN}/"
    files = f"{ALICE}/files"
    socks5 = transport == "socks5"
    data = bytes((i * 13 + 5) % 256 for i in range(500_000 if socks5 else 12_000))
    port = with_streamhost(comp) if socks5 else None
    features = ["urn:xmpp:jingle:1", FT5, IBB_T, S5B_T]

    async def scenario():
        comp.start()
        phone = Client("alice@localhost/phone", features, caps_node="https://dino.im")
        phone.register_plugin("xep_0047")
        phone.plugin["xep_0047"].auto_accept = True
        got = asyncio.get_running_loop().create_future()
        phone.add_event_handler("ibb_stream_start", lambda stream: got.done() or got.set_result(stream))
        await phone.online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        laptop = await Client("alice@localhost/laptop", features).online(p.c2s)
        bob = Client("bob@localhost/pc", features)
        bob.register_plugin("xep_0047")
        await bob.online(p.c2s)
        since = bob.mark()
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(files), since, what="/files available: her devices take files")
        s_bob, s_phone, s_laptop = bob.mark(), phone.mark(), laptop.mark()
        description = (f"<description xmlns='{FT5}'><file>"
                       f"<name>photo.bin</name><size>{len(data)}</size></file></description>")
        if socks5:
            his_t = (f"<transport xmlns='{S5B_T}' sid='S5B2' mode='tcp'>"
                     "<candidate cid='b1' host='198.51.100.7' jid='bob@localhost/pc' port='6000' priority='8257636' type='direct'/>"
                     "</transport>")
            her_t = (f"<transport xmlns='{S5B_T}' sid='S5B2' mode='tcp'>"
                     "<candidate cid='p1' host='192.0.2.44' jid='alice@localhost/phone' port='5086' priority='8257636' type='direct'/>"
                     "</transport>")
        else:
            his_t = her_t = f"<transport xmlns='{IBB_T}' block-size='4096' sid='IBB2'/>"
        offer = f"<content creator='initiator' name='f' senders='initiator'>{description}{his_t}</content>"
        send_jingle(bob, files, "b1", "session-initiate", "BFILE", offer, "initiator='bob@localhost/pc'")
        await bob.wait_for(iq_reply("b1"), s_bob, what="the offer acknowledged")
        def offer_from_him(el):
            return jingle_iq("session-initiate")(el) and el.get("from", "").startswith(proxy)
        at_phone = await phone.wait_for(offer_from_him, s_phone, what="the offer at her phone")
        at_laptop = await laptop.wait_for(offer_from_him, s_laptop, what="the offer at her laptop")
        # One proxy full JID for this offer, the same at both devices.
        shown = at_phone.get("from")
        assert at_laptop.get("from") == shown
        ack(phone, at_phone)
        ack(laptop, at_laptop)
        sid = at_phone.find("{%s}jingle" % JINGLE).get("sid")
        s_bob = bob.mark()
        answer = f"<content creator='initiator' name='f' senders='initiator'>{description}{her_t}</content>"
        send_jingle(phone, shown, "p1", "session-accept", sid, answer,
                    f"initiator='{shown}' responder='alice@localhost/phone'")
        sa = await bob.wait_for(jingle_iq("session-accept", files), s_bob, what="her phone's accept")
        ack(bob, sa)
        # The laptop is told the offer is over.
        await laptop.wait_for(jingle_iq("session-terminate", shown), s_laptop, what="the laptop's leg ended")
        if socks5:
            # Her phone knows him as `shown` (the offerer), itself as itself.
            hers, her_dst = our_candidate(at_phone, port, "S5B2", shown, "alice@localhost/phone")
            # Bob knows her as alice@D/files (the candidate's offerer).
            his, his_dst = our_candidate(sa, port, "S5B2", files, "bob@localhost/pc")
            await both_hear_candidate_error([(phone, shown, s_phone, "her"), (bob, files, s_bob, "Bob")])
            at_her, at_him = Socks5End(phone), Socks5End(bob)
            await at_her.connect("127.0.0.1", port, her_dst)
            await at_him.connect("127.0.0.1", port, his_dst)
            for client, to, iq_id, s, cand in ((phone, shown, "p2", sid, hers), (bob, files, "b2", "BFILE", his)):
                send_s5b_info(client, to, iq_id, s, "S5B2", f"<candidate-used cid='{cand.get('cid')}'/>")
            ack(bob, await bob.wait_for(s5b_info(files, "activated"), s_bob, what="activated, at Bob"))
            ack(phone, await phone.wait_for(s5b_info(shown, "activated"), s_phone, what="activated, at her"))
            await at_him.send(data)
            assert await asyncio.wait_for(at_her.closed, 30) == data
            assert not any("198.51.100.7" in r for r in phone.raw_since(0)), "his address reached her"
            assert not any("192.0.2.44" in r for r in bob.raw_since(0)), "her address reached Bob"
        else:
            stream = await bob.plugin["xep_0047"].open_stream(files, sid="IBB2", block_size=4096)
            incoming = await asyncio.wait_for(got, 10)
            assert str(incoming.peer_jid) == shown
            received = asyncio.ensure_future(incoming.gather(timeout=20))
            await stream.sendall(data)
            await stream.close()
            assert await asyncio.wait_for(received, 20) == data
        assert_private(bob)
        for c in (phone, laptop, bob):
            await c.offline()

    asyncio.run(scenario())
