"""Her name and face (issue 17, DESIGN.md section 11): what Bob's client
shows for alice@unified.localhost comes from her own account's profile,
through the component, without her real JID or a device."""
import asyncio
import base64
import hashlib

import pytest

from harness import C, DOMAIN, JINGLE_AUDIO, SERVERS, Client, Component, presence, start_prosody

ALICE = f"alice@{DOMAIN}"
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
PHONE_NODE = "https://phone.example/app"
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "ask"
"""
# A 1x1 PNG: her photo.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PHOTO_ID = hashlib.sha1(PNG).hexdigest()
UPDATE = "{vcard-temp:x:update}"


@pytest.fixture(params=SERVERS)
def server(tmp_path, request):
    p = start_prosody(str(tmp_path), kind=request.param)
    c = Component(str(tmp_path), p, OWNERS)
    yield p, c
    c.stop()
    p.stop()


def photo_of(el):
    x = el.find(f"{UPDATE}x")
    return None if x is None or x.find(f"{UPDATE}photo") is None else (x.find(f"{UPDATE}photo").text or "")


def test_bob_sees_her_name_and_photo_and_never_her_account(server):
    """Alice sets her name and photo in her own client (vcard-temp, which
    her server also turns into PEP avatar and vCard4). Bob, her watcher,
    then sees her photo hash in her class presence, fetches her vCard and
    her XEP-0084 avatar and XEP-0172 nick from alice@D as his client
    would, and nothing he receives names her account or device."""
    prosody, component = server

    async def scenario():
        component.start()
        phone = Client("alice@localhost/phone", JINGLE_AUDIO, caps_node=PHONE_NODE)
        phone.register_plugin("xep_0054")
        await phone.online(prosody.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await component.await_log("account link changed")

        card = phone["xep_0054"].make_vcard()
        card["FN"] = "Alice Liddell"
        card["NICKNAME"] = "Alice"
        card["JABBERID"] = "alice@localhost"
        card["PHOTO"]["TYPE"] = "image/png"
        card["PHOTO"]["BINVAL"] = PNG
        await phone["xep_0054"].publish_vcard(card, timeout=10)
        # Her next presence carries the photo hash: her server puts it
        # there (mod_vcard_legacy, mod_vcard_xupdate).
        phone.send_presence(pstatus="here")
        await component.await_log("her profile changed")

        bob = Client("bob@localhost/pc")
        bob.register_plugin("xep_0054")
        bob.register_plugin("xep_0060")
        await bob.online(prosody.c2s)
        his = bob["xep_0054"].make_vcard()
        his["FN"] = "Bob Builder"
        await bob["xep_0054"].publish_vcard(his, timeout=10)
        since = bob.mark()
        # His client puts no nick in his request: her client still shows
        # his name, from his card (issue 16).
        bob.send_presence(pto=ALICE, ptype="subscribe")
        req = await phone.wait_for(presence(PROXY_BOB, "subscribe"), what="Bob's request")
        assert req.findtext("{http://jabber.org/protocol/nick}nick") == "Bob Builder"
        phone.send_presence(pto=PROXY_BOB, ptype="subscribed")
        chat = await bob.wait_for(presence(f"{ALICE}/chat"), since, what="her chat class")
        assert photo_of(chat) == PHOTO_ID, bob.raw_since(since)

        got = await bob["xep_0054"].get_vcard(ALICE, cached=False, timeout=10)
        vcard = got["vcard_temp"]
        assert vcard["FN"] == "Alice Liddell"
        assert vcard["NICKNAME"] in ("Alice", ["Alice"])
        assert vcard["PHOTO"]["BINVAL"] == PNG
        assert "alice@localhost" not in str(got), str(got)

        meta = await bob["xep_0060"].get_items(ALICE, "urn:xmpp:avatar:metadata", timeout=10)
        info = meta.xml.find(".//{urn:xmpp:avatar:metadata}info")
        assert info is not None and info.get("id") == PHOTO_ID, str(meta)
        assert int(info.get("bytes")) == len(PNG)
        data = await bob["xep_0060"].get_items(ALICE, "urn:xmpp:avatar:data", item_ids=[PHOTO_ID], timeout=10)
        blob = data.xml.find(".//{urn:xmpp:avatar:data}data")
        assert base64.b64decode(blob.text) == PNG
        nick = await bob["xep_0060"].get_items(ALICE, "http://jabber.org/protocol/nick", timeout=10)
        assert nick.xml.find(".//{http://jabber.org/protocol/nick}nick").text == "Alice"

        if prosody.kind == "prosody":
            # Prosody keeps her card as a vCard4 too (XEP-0292): asked of
            # her account, served without her account's address.
            v4 = await bob["xep_0060"].get_items(ALICE, "urn:xmpp:vcard4", timeout=10)
            assert "Alice Liddell" in str(v4), str(v4)
            assert "alice@localhost" not in str(v4), str(v4)

        # She changes her name: after her next presence Bob's client gets
        # the new nick as a PEP event, and the card says it.
        since = bob.mark()
        card["NICKNAME"] = "Ally"
        card["PHOTO"]["BINVAL"] = PNG + b"\0"
        await phone["xep_0054"].publish_vcard(card, timeout=10)
        phone.send_presence(pstatus="here again")
        event = await bob.wait_for(
            lambda el: el.tag == C + "message" and el.find(
                ".//{http://jabber.org/protocol/pubsub#event}items[@node='http://jabber.org/protocol/nick']") is not None,
            since, what="her new nick as a PEP event")
        assert event.get("from") == ALICE
        assert "Ally" in str(bob.raw_since(since))
        new_id = hashlib.sha1(PNG + b"\0").hexdigest()
        chat = await bob.wait_for(lambda el: presence(f"{ALICE}/chat")(el) and photo_of(el) == new_id,
                                  since, what="her new photo hash")

        raw = bob.raw_since(0)
        for secret in ("alice@localhost", "phone", PHONE_NODE):
            assert not any(secret in r for r in raw), f"{secret} reached Bob"
        for c in (bob, phone):
            await c.offline()

    asyncio.run(scenario())
