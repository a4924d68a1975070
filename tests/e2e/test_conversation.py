"""Conversations through virtual JIDs as real clients hold them (issue 14),
on Prosody and ejabberd: slixmpp's own XEP-0184 (receipts), XEP-0085
(chat states), XEP-0333 (markers) and XEP-0308 (corrections) plugins play
the clients; two owners chat with nothing naming either real JID; an
error from a missing contact reaches the sender; a ring rule leaves chat
on every device; her roster follows every watcher change."""
import asyncio

import pytest

from harness import C, DOMAIN, SERVERS, Client, Component, presence, start_prosody

ALICE = f"alice@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "ask"

[registration]
mode = "open"
"""
RECEIPTS = "urn:xmpp:receipts"
MARKERS = "urn:xmpp:chat-markers:0"
CORRECT = "urn:xmpp:message-correct:0"
STATES = "http://jabber.org/protocol/chatstates"


def chat_from(frm, body=None):
    def pred(el):
        if el.tag != C + "message" or el.get("from") != frm:
            return False
        return body is None or el.findtext(C + "body") == body
    return pred


def with_child(frm, tag):
    return lambda el: el.tag == C + "message" and el.get("from") == frm and el.find(tag) is not None


def client(jid, **kw):
    c = Client(jid, **kw)
    for plugin in ("xep_0184", "xep_0085", "xep_0333", "xep_0308"):
        c.register_plugin(plugin)
    return c


async def ask(c, text):
    since = c.mark()
    c.send_message(mto=DOMAIN, mbody=text, mtype="chat")
    reply = await c.wait_for(chat_from(DOMAIN), since, what=f"the answer to {text!r}")
    return reply.findtext(C + "body") or ""


async def alice_linked(p, comp):
    """The component starts; Alice's phone approves its linking request."""
    comp.start()
    phone = await client("alice@localhost/phone").online(p.c2s)
    await phone.wait_for(presence(ALICE, "subscribe"), what="Alice's linking request")
    phone.send_presence(pto=ALICE, ptype="subscribed")
    return phone


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "carol"), kind=request.param)
    comp = Component(str(tmp_path), p, OWNERS)
    yield p, comp
    comp.stop()
    p.stop()


def test_two_owners_chat_by_virtual_jid_with_receipts_markers_and_corrections(world):
    p, comp = world

    async def scenario():
        phone = await alice_linked(p, comp)
        carol = await client("carol@localhost/desk").online(p.c2s)
        assert (await ask(carol, "register carol")).startswith(f"You are now {CAROL}")
        await carol.wait_for(presence(CAROL, "subscribe"), what="Carol's linking request")
        carol.send_presence(pto=CAROL, ptype="subscribed")
        await comp.await_log("account link changed", 2)

        # Carol writes to Alice's virtual JID, asking for a receipt, with a
        # chat state and a marker request, as her client does.
        s_alice, s_carol = phone.mark(), carol.mark()
        m = carol.make_message(mto=ALICE, mbody="lunch at one?", mtype="chat")
        m["request_receipt"] = True
        m["chat_state"] = "active"
        m.enable("markable")
        m.send()
        got = await phone.wait_for(chat_from(f"{CAROL}/chat", "lunch at one?"), s_alice, what="Carol's message")
        assert got.find(f"{{{STATES}}}active") is not None
        # Alice's client acknowledged it (slixmpp's XEP-0184): Carol gets the
        # receipt for her own message id, from Alice's chat class.
        receipt = await carol.wait_for(with_child(f"{ALICE}/chat", f"{{{RECEIPTS}}}received"), s_carol,
                                       what="the delivery receipt")
        assert receipt.find(f"{{{RECEIPTS}}}received").get("id") == m["id"]
        # Alice reads it: Carol gets the displayed marker for her id.
        phone.plugin["xep_0333"].send_marker(f"{CAROL}/chat", got.get("id"), "displayed")
        shown = await carol.wait_for(with_child(f"{ALICE}/chat", f"{{{MARKERS}}}displayed"), s_carol,
                                     what="the displayed marker")
        assert shown.find(f"{{{MARKERS}}}displayed").get("id") == m["id"]

        # Alice answers Carol's virtual JID, then corrects herself.
        s_carol = carol.mark()
        reply = phone.make_message(mto=f"{CAROL}/chat", mbody="yes, at tne", mtype="chat")
        reply.send()
        await carol.wait_for(chat_from(f"{ALICE}/chat", "yes, at tne"), s_carol, what="Alice's answer")
        phone.plugin["xep_0308"].build_correction(reply["id"], f"{CAROL}/chat", mbody="yes, at one").send()
        fixed = await carol.wait_for(chat_from(f"{ALICE}/chat", "yes, at one"), s_carol, what="the correction")
        assert fixed.find(f"{{{CORRECT}}}replace").get("id") == reply["id"]

        # Neither ever saw the other's real JID.
        for raw in phone.raw_since(0):
            assert "carol@localhost" not in raw, raw
        for raw in carol.raw_since(0):
            assert "alice@localhost" not in raw, raw

        # Alice writes to a proxy JID of nobody: the error reaches her.
        s_alice = phone.mark()
        nobody = rf"nobody\40localhost@{DOMAIN}"
        phone.send_message(mto=nobody, mbody="hello?", mtype="chat")
        err = await phone.wait_for(lambda el: el.tag == C + "message" and el.get("type") == "error", s_alice,
                                   what="the error for a missing contact")
        assert err.get("from") == nobody
        for c in (phone, carol):
            await c.offline()

    asyncio.run(scenario())


def test_ring_rules_leave_chat_alone_and_her_roster_follows_watcher_changes(world):
    p, comp = world

    async def scenario():
        phone = await alice_linked(p, comp)
        laptop = await client("alice@localhost/laptop").online(p.c2s)
        bob = await client("bob@localhost/pc").online(p.c2s)

        # A calls setting does not take chat away from her laptop.
        assert "calls now ring" in await ask(phone, "ring sequential phone")
        s_phone, s_laptop = phone.mark(), laptop.mark()
        bob.send_message(mto=ALICE, mbody="ping you all", mtype="chat")
        await phone.wait_for(chat_from(f"{PROXY_BOB}/pc", "ping you all"), s_phone, what="chat on the phone")
        await laptop.wait_for(chat_from(f"{PROXY_BOB}/pc", "ping you all"), s_laptop, what="chat on the laptop")

        def item():
            roster = phone.client_roster
            return roster[PROXY_BOB] if PROXY_BOB in roster else None

        async def settle(pred, what):
            for _ in range(100):
                if pred():
                    return
                await asyncio.sleep(0.05)
            it = item()
            seen = [r for r in phone.raw_since(0) if "bob" in r or "roster" in r][-6:]
            raise AssertionError(f"{what}: roster has {it and (it['subscription'], it['pending_in'])}; seen: {seen}")

        # Bob asks; her roster shows the request; approving by chat clears it.
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribe"), what="Bob's request")
        await settle(lambda: item() is not None and item()["pending_in"], "the request shows")
        assert "now sees your presence" in await ask(phone, "approve bob@localhost")
        if p.kind == "prosody":
            # Prosody tells her client the request was withdrawn; ejabberd
            # 23.01 drops the request on its side but does not tell the
            # client, which keeps showing it until she dismisses it (and a
            # refusal from her client there revokes him, as any would).
            await settle(lambda: item() is None or not item()["pending_in"], "the approved request goes away")
        await bob.wait_for(presence(f"{ALICE}/chat"), what="Bob sees her")

        # Bob leaves: nothing of his stays subscribed in her roster; he asks
        # again and she, not her server, is asked.
        bob.send_presence(pto=ALICE, ptype="unsubscribe")
        await comp.await_log("watcher removed")
        await settle(lambda: item() is None or item()["subscription"] in ("none", "to"), "his leaving")
        s_phone = phone.mark()
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribe"), s_phone, what="Bob's second request")
        await asyncio.sleep(0.5)
        assert "bob@localhost" in (await ask(phone, "watchers")).split("Waiting for your answer:")[1], \
            "the second request waits for her"
        # Her client approves; then she blocks him by chat: withdrawn.
        phone.send_presence(pto=PROXY_BOB, ptype="subscribed")
        await bob.wait_for(presence(ALICE, "subscribed"), what="approved by her client")
        await settle(lambda: item() is not None and item()["subscription"] in ("from", "both"), "her approval")
        assert "is blocked" in await ask(phone, "block bob@localhost")
        await settle(lambda: item() is None or item()["subscription"] in ("none", "to"), "the block")
        for c in (phone, laptop, bob):
            await c.offline()

    asyncio.run(scenario())


def test_she_sees_bob_come_and_go_through_her_virtual_jid(world):
    """Issue 16, first part: Alice approves Bob and her client subscribes
    back to his proxy JID, as Conversations, Dino and Gajim do; Bob's
    client approves alice@unified.localhost; from then on she sees his
    presence from the proxy JID, per resource, and he never sees her real
    JID."""
    p, comp = world

    async def scenario():
        phone = await alice_linked(p, comp)
        bob = await client("bob@localhost/pc").online(p.c2s)
        bob.auto_authorize = True  # his client approves alice@unified.localhost
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribe"), what="Bob's request")
        phone.send_presence(pto=PROXY_BOB, ptype="subscribed")
        s_phone = phone.mark()
        phone.send_presence(pto=PROXY_BOB, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribed"), s_phone, what="Bob's approval, via the proxy JID")
        bob.send_presence(pshow="away", pstatus="lunch")
        away = await phone.wait_for(lambda el: presence(f"{PROXY_BOB}/pc")(el)
                                    and el.findtext(C + "show") == "away", s_phone, what="Bob away")
        assert away.findtext(C + "status") == "lunch"
        s_phone = phone.mark()
        await bob.offline()
        await phone.wait_for(presence(f"{PROXY_BOB}/pc", "unavailable"), s_phone, what="Bob gone")
        for raw in bob.raw_since(0):
            assert "alice@localhost" not in raw and "/phone" not in raw, raw
        await phone.offline()

    asyncio.run(scenario())


def test_contact_add_gives_her_a_contact_from_her_virtual_jid(world):
    """Issue 16: Alice types "contact add carol@localhost Carol". The proxy
    JID asks her phone, named "Carol"; her client accepts and subscribes
    back; Carol's client approves alice@unified.localhost, which asked
    her; Alice sees Carol come online from the proxy JID, and what she
    writes there reaches Carol from her virtual JID, never her real one."""
    p, comp = world
    proxy_carol = rf"carol\40localhost@{DOMAIN}"

    async def scenario():
        phone = await alice_linked(p, comp)
        carol = await client("carol@localhost/pc").online(p.c2s)
        carol.auto_authorize = True  # her client approves Alice's request
        s_phone = phone.mark()
        reply = await ask(phone, "contact add carol@localhost Carol")
        assert proxy_carol in reply, reply
        ask_el = await phone.wait_for(presence(proxy_carol, "subscribe"), s_phone, what="the request from Carol's proxy JID")
        assert ask_el.findtext("{http://jabber.org/protocol/nick}nick") == "Carol"
        phone.send_presence(pto=proxy_carol, ptype="subscribed")
        phone.send_presence(pto=proxy_carol, ptype="subscribe")
        await phone.wait_for(presence(proxy_carol, "subscribed"), s_phone, what="Carol's approval, via the proxy JID")
        s_phone = phone.mark()
        carol.send_presence(pshow="away", pstatus="reading")
        seen = await phone.wait_for(lambda el: presence(f"{proxy_carol}/pc")(el)
                                    and el.findtext(C + "show") == "away", s_phone, what="Carol away")
        assert seen.findtext(C + "status") == "reading"
        s_carol = carol.mark()
        phone.send_message(mto=proxy_carol, mbody="hello from my one address", mtype="chat")
        got = await carol.wait_for(lambda el: el.tag == C + "message"
                                   and el.findtext(C + "body") == "hello from my one address",
                                   s_carol, what="Alice's message")
        assert got.get("from", "").startswith(ALICE), got.get("from")
        for raw in carol.raw_since(0):
            assert "alice@localhost" not in raw and "/phone" not in raw, raw
        await carol.offline()
        await phone.offline()

    asyncio.run(scenario())
