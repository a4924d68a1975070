"""Chat through the virtual JID end to end (DESIGN.md section 7): Bob
writes to alice@unified.localhost and never learns where she reads it."""
import asyncio

import pytest
from slixmpp.exceptions import IqError

from harness import C, DOMAIN, SERVERS, Client, Component, presence, start_prosody

ALICE = f"alice@{DOMAIN}"
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


def message(frm=None, body=None):
    def pred(el):
        if el.tag != C + "message" or (frm and el.get("from") != frm):
            return False
        b = el.find(C + "body")
        return body is None or (b is not None and b.text == body)
    return pred


async def ask_service(client, text):
    """Sends a chat command; returns the reply, or "forbidden: <text>"."""
    since = client.mark()
    client.send_raw(f"<message type='chat' to='{DOMAIN}'><body>{text}</body></message>")
    reply = await client.wait_for(message(DOMAIN), since)
    if reply.get("type") == "error":
        err = reply.find(C + "error")
        assert err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
        return "forbidden: " + err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}text").text
    return reply.find(C + "body").text


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    p = start_prosody(str(tmp_path), kind=request.param)
    comp = Component(str(tmp_path), p, OWNERS)
    yield p, comp
    comp.stop()
    p.stop()


def test_chat_both_ways_through_the_virtual_jid_and_offline_storage(world):
    p, comp = world

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone").online(p.c2s, priority=5)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        bob = await Client("bob@localhost/pc").online(p.c2s)

        # Bob writes to the virtual JID: Alice's client shows it from Bob's
        # proxy JID, with the receipt request and chat state intact.
        bob.send_raw(f"<message type='chat' id='b1' to='{ALICE}'><body>lunch?</body>"
                     "<request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>")
        # One proxy full JID per resource of his.
        got = await phone.wait_for(message(f"{PROXY_BOB}/pc", "lunch?"), what="Bob's message")
        assert got.get("id") == "b1"
        assert got.find("{urn:xmpp:receipts}request") is not None
        assert got.find("{http://jabber.org/protocol/chatstates}active") is not None

        # Her receipt and reply (mentioning her phone, which is her word to
        # send) reach Bob from alice@D/chat; a correction too.
        phone.send_raw(f"<message type='chat' id='a0' to='{PROXY_BOB}/pc'><received xmlns='urn:xmpp:receipts' id='b1'/></message>")
        phone.send_raw(f"<message type='chat' id='a1' to='{PROXY_BOB}/pc'><body>yes, ring my phone</body></message>")
        phone.send_raw(f"<message type='chat' id='a2' to='{PROXY_BOB}/pc'><body>yes, at noon</body>"
                       "<replace xmlns='urn:xmpp:message-correct:0' id='a1'/></message>")
        receipt = await bob.wait_for(lambda el: el.find("{urn:xmpp:receipts}received") is not None)
        assert receipt.get("from") == f"{ALICE}/chat"
        reply = await bob.wait_for(message(f"{ALICE}/chat", "yes, ring my phone"))
        assert reply.get("id") == "a1"
        fix = await bob.wait_for(message(f"{ALICE}/chat", "yes, at noon"))
        assert fix.find("{urn:xmpp:message-correct:0}replace").get("id") == "a1"

        # With none of her devices online, her server keeps it for her.
        await phone.offline()
        bob.send_raw(f"<message type='chat' id='b2' to='{ALICE}'><body>still there?</body></message>")
        await asyncio.sleep(1.0)
        later = await Client("alice@localhost/laptop").online(p.c2s)
        await later.wait_for(message(f"{PROXY_BOB}/pc", "still there?"), what="the stored message")

        for raw in bob.raw_since(0):
            for secret in ("alice@localhost", "/phone", "/laptop"):
                assert secret not in raw, f"leak of {secret!r}: {raw}"
        for c in (later, bob):
            await c.offline()

    asyncio.run(scenario())


def test_owner_commands_by_chat_and_strangers_refused(tmp_path):
    p = start_prosody(str(tmp_path))
    comp = Component(str(tmp_path), p, OWNERS.replace('subscription = "open"', 'subscription = "ask"'))

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone", ["urn:xmpp:jingle:1"]).online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        bob = await Client("bob@localhost/pc").online(p.c2s)
        eve = await Client("eve@localhost/x").online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribe"))

        async def ask(client, text):
            return await ask_service(client, text)

        assert "bob@localhost" in (await ask(phone, "watchers")).split("Waiting for your answer:")[1]
        # Conversations has no ad-hoc UI: Alice approves Bob by chat.
        assert "now sees your presence" in await ask(phone, "approve bob@localhost")
        await bob.wait_for(presence(ALICE, "subscribed"))
        await bob.wait_for(presence(f"{ALICE}/chat"))
        status = await ask(phone, "status")
        assert "• chat: online" in status, status
        assert "help" in await ask(phone, "what?")
        # Nobody else reads or changes Alice's data.
        refused = await ask(eve, "status")
        assert refused.startswith("forbidden: You have no unified address"), refused
        refused = await ask(eve, "deny bob@localhost")
        assert refused.startswith("forbidden: You have no unified address"), refused
        assert "Watching you: bob@localhost" in await ask(phone, "watchers")
        for c in (phone, bob, eve):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()


def test_a_new_user_registers_by_chat_and_unregisters(tmp_path):
    p = start_prosody(str(tmp_path))
    comp = Component(str(tmp_path), p, OWNERS + '\n[registration]\nmode = "domains"\ndomains = ["localhost"]\n')
    EVE = f"eve@{DOMAIN}"

    async def scenario():
        comp.start()
        eve = await Client("eve@localhost/phone").online(p.c2s)
        bob = await Client("bob@localhost/pc").online(p.c2s)
        since = eve.mark()
        eve.send_raw(f"<message type='chat' to='{DOMAIN}'><body>register</body></message>")
        reply = await eve.wait_for(message(DOMAIN), since)
        assert reply.find(C + "body").text.startswith(f"You are now {EVE}")
        await eve.wait_for(presence(EVE, "subscribe"), since, what="the linking request")
        eve.send_presence(pto=EVE, ptype="subscribed")
        # Bob adds eve@unified; Eve (ask policy) approves his proxy JID.
        bob.send_presence(pto=EVE, ptype="subscribe")
        await eve.wait_for(presence(PROXY_BOB, "subscribe"))
        eve.send_presence(pto=PROXY_BOB, ptype="subscribed")
        await bob.wait_for(presence(f"{EVE}/chat"), what="Eve's chat presence")

        since_bob = bob.mark()
        eve.send_raw(f"<message type='chat' to='{DOMAIN}'><body>unregister confirm</body></message>")
        await bob.wait_for(presence(EVE, "unsubscribed"), since_bob, what="Bob told Eve's address is gone")
        assert bob.received(presence(f"{EVE}/chat", "unavailable"), since_bob)
        await comp.await_log("unregistered")
        # The address is nobody now: the store kept nothing.
        since_bob = bob.mark()
        bob.send_raw(f"<message type='chat' id='x' to='{EVE}'><body>hello?</body></message>")
        err = await bob.wait_for(lambda el: el.tag == C + "message" and el.get("type") == "error", since_bob)
        assert err.get("from") == EVE
        for c in (eve, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()


@pytest.mark.parametrize("kind", SERVERS)
def test_adhoc_commands_from_a_client_with_xep_0050(tmp_path, kind):
    """What Gajim does: discover the commands, run a form, submit it; a
    form session is its requester's alone (issue 13)."""
    p = start_prosody(str(tmp_path), kind=kind)
    comp = Component(str(tmp_path), p, OWNERS.replace('subscription = "open"', 'subscription = "ask"')
                     + '\n[registration]\nmode = "open"\n')

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone").online(p.c2s)
        phone.register_plugin("xep_0050")
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        bob = await Client("bob@localhost/pc").online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await phone.wait_for(presence(PROXY_BOB, "subscribe"))

        items = await phone.plugin["xep_0050"].get_commands(DOMAIN)
        nodes = [node for _, node, _ in items["disco_items"]["items"]]
        assert "watchers" in nodes and "ring" in nodes, nodes

        adhoc = phone.plugin["xep_0050"]
        first = await adhoc.send_command(DOMAIN, "watchers")
        assert first["command"]["status"] == "executing"
        sid = first["command"]["sessionid"]

        # Eve (a stranger) and Bob (who waits for Alice's answer) try to
        # end or complete Alice's form by its session id: refused, and it
        # stays open for her.
        eve = await Client("eve@localhost/x").online(p.c2s)
        for c in (eve, bob):
            c.register_plugin("xep_0050")
            for node, action in (("register", "cancel"), ("watchers", "cancel"), ("watchers", "complete")):
                deny = c.plugin["xep_0004"].make_form(ftype="submit")
                deny.add_field(var="deny", ftype="list-multi", value=["bob@localhost"])
                try:
                    await c.plugin["xep_0050"].send_command(DOMAIN, node, action=action, sessionid=sid,
                                                            payload=deny if action == "complete" else None)
                except IqError as e:
                    cond = e.iq["error"]["condition"]
                    assert cond in ("bad-request", "forbidden"), (c.boundjid, node, action, cond)
                else:
                    raise AssertionError(f"{c.boundjid} could {action} Alice's session on {node}")
        form = phone.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="approve", ftype="list-multi", value=["bob@localhost"])
        done = await adhoc.send_command(DOMAIN, "watchers", action="complete", payload=form,
                                        sessionid=first["command"]["sessionid"])
        assert done["command"]["status"] == "completed"
        await bob.wait_for(presence(ALICE, "subscribed"), what="Bob approved through the form")

        # A stranger may register through the form too.
        start = await eve.plugin["xep_0050"].send_command(DOMAIN, "register")
        form = eve.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="name", ftype="text-single", value="evie")
        done = await eve.plugin["xep_0050"].send_command(DOMAIN, "register", action="complete", payload=form,
                                                         sessionid=start["command"]["sessionid"])
        assert "evie@unified.localhost" in done["command"].xml.find("{http://jabber.org/protocol/commands}note").text
        await eve.wait_for(presence(f"evie@{DOMAIN}", "subscribe"), what="the linking request")
        for c in (phone, bob, eve):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()


@pytest.mark.parametrize("kind", SERVERS)
def test_linking_takes_a_code_from_the_account_itself_and_unlink_undoes_it(tmp_path, kind):
    """DESIGN.md section 2, issue 13: Alice links her work account by a
    one-time code that only that account can send back. Naming Bob's
    account (he watches her, and his client approves every request) gives
    her nothing of his, and him nothing of hers."""
    p = start_prosody(str(tmp_path), kind=kind)
    p.register("alicework", "pw-alicework")
    comp = Component(str(tmp_path), p, OWNERS)

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone").online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        work = await Client("alicework@localhost/desk").online(p.c2s)
        eve = await Client("eve@localhost/x").online(p.c2s)
        bob = await Client("bob@localhost/pc").online(p.c2s)
        bob.auto_authorize = True  # like a client that pre-approves contacts
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(f"{ALICE}/chat"), what="Bob watches Alice")

        async def ask(client, text):
            return await ask_service(client, text)

        def code_in(el):
            return el.find(C + "body").text.split("link confirm ")[1].split()[0]

        # Alice names Bob's account: he gets a message saying what it is,
        # no contact request, and nothing he does by habit links him.
        since = bob.mark()
        reply = await ask(phone, "link bob@localhost")
        assert "one-time code" in reply, reply
        await bob.wait_for(message(DOMAIN), since, what="the link notice")
        await asyncio.sleep(0.5)
        assert not bob.received(lambda el: el.tag == C + "presence" and el.get("from") == ALICE
                                and el.get("type") == "subscribe", since)
        answer = await ask(bob, "devices")
        assert answer.startswith("forbidden: You have no unified address"), answer
        assert "alice@localhost" not in answer and "phone" not in answer

        # Her own work account: the code from there links it.
        since = work.mark()
        await ask(phone, "link alicework@localhost")
        notice = await work.wait_for(message(DOMAIN), since, what="the code at work")
        assert (await ask(work, "status")).startswith("forbidden: You have no unified address")
        assert (await ask(eve, f"link confirm {code_in(notice)}")).startswith("No link waits")
        assert "now linked" in await ask(work, f"link confirm {code_in(notice)}")
        await work.wait_for(presence(ALICE, "subscribe"), since, what="the subscription after the code")
        work.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed", 2)
        assert "alicework@localhost/desk" in await ask(work, "devices"), "her work desk is one of her devices now"

        # A stranger's attempt to change Alice's rules is refused.
        assert (await ask(eve, "rule add busy")).startswith("forbidden: You have no unified address")
        assert (await ask(phone, "rules")).startswith("No rules")

        # The work account unlinks itself: at once.
        assert "no longer linked" in await ask(work, "unlink")
        assert (await ask(work, "status")).startswith("forbidden: You have no unified address")
        assert "alicework" not in await ask(phone, "devices")
        for c in (phone, work, eve, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
