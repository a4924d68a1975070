"""End-to-end encryption through the virtual JID (issue 17, DESIGN.md
section 11), with slixmpp-omemo, a real OMEMO implementation, on both
sides: Bob encrypts to alice@unified.localhost with the device list and
keys the component asks of her account, her phone decrypts the exact
text; she replies to his proxy JID with his keys, asked of his account,
and he decrypts it; a new device of his shows up in her view of his
proxy JID and reads her next message, and a new device of hers shows up
in his view of her devices and reads his next message; with her devices offline, her server
keeps his message and her phone reads it when it is back. The component
never holds a key and never sees a word."""
import asyncio

import pytest

from harness import DOMAIN, SERVERS, Component, presence, start_prosody

omemo_users = pytest.importorskip("omemo_users", reason="run scripts/install-deps (slixmpp-omemo)")
OmemoClient = omemo_users.OmemoClient

ALICE = f"alice@{DOMAIN}"
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("roster", ["watcher", "mutual"])
def test_bob_and_alice_write_encrypted_through_her_virtual_jid(tmp_path, kind, roster):
    """`watcher`: Bob watches her, and his client asks alice@D for her
    devices before it encrypts. `mutual`: she also added him back (her
    client subscribed to his proxy JID, he approved alice@D), and his
    client, like a server's PEP contact, reads her devices only from the
    events alice@D sends him."""
    p = start_prosody(str(tmp_path), users=("alice", "bob"), kind=kind)
    comp = Component(str(tmp_path), p, OWNERS)

    async def scenario():
        comp.start()
        phone = await OmemoClient("alice@localhost/phone").online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed")
        bob = await OmemoClient("bob@localhost/pc").online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(ALICE, "subscribed"), what="her approval")
        if roster == "mutual":
            s_b = bob.mark()
            phone.send_presence(pto=PROXY_BOB, ptype="subscribe")
            await bob.wait_for(presence(ALICE, "subscribe"), s_b, what="her request, from alice@D")
            bob.send_presence(pto=ALICE, ptype="subscribed")
            for _ in range(50):
                if bob.client_roster[ALICE]["subscription"] == "both":
                    break
                await asyncio.sleep(0.1)
            assert bob.client_roster[ALICE]["subscription"] == "both"

        # Bob encrypts to her virtual JID: the keys he uses are her phone's.
        phone_id = await phone.device_id()
        text = "Hello Alice, only your devices can read this ✓"
        since = phone.mark()
        await bob.send_encrypted(ALICE, text)
        got, sender, _ = await asyncio.wait_for(phone.plain.get(), 30)
        assert got == text
        assert sender == PROXY_BOB, "her phone knows him by his proxy JID"
        raw = [r for r in phone.raw_since(since) if "<encrypted" in r]
        assert raw and all(text not in r for r in raw), "the text travelled in the clear"
        assert phone_id in await bob.device_ids_of(ALICE)

        # She answers his proxy JID; his keys come from his account.
        reply = "Hi Bob, and only yours can read this"
        await phone.send_encrypted(PROXY_BOB, reply)
        got, sender, device = await asyncio.wait_for(bob.plain.get(), 30)
        assert (got, sender, device) == (reply, ALICE, phone_id)

        # A second device of his starts OMEMO: her phone learns of it at
        # his proxy JID (alice@D follows his device list since her phone
        # asked for it), and her next message reaches both of his.
        laptop = await OmemoClient("bob@localhost/laptop").online(p.c2s)
        laptop_id = await laptop.device_id()
        for _ in range(50):
            if laptop_id in await phone.device_ids_of(PROXY_BOB):
                break
            await asyncio.sleep(0.2)
        assert laptop_id in await phone.device_ids_of(PROXY_BOB), "his new device never reached her"
        both = "For both of your devices, Bob"
        await phone.send_encrypted(PROXY_BOB, both)
        for device in (bob, laptop):
            got, sender, _ = await asyncio.wait_for(device.plain.get(), 30)
            assert (got, sender) == (both, ALICE)
        await laptop.offline()

        # A second device of hers starts OMEMO: Bob's client learns of it
        # at once (her server tells alice@D, subscribed to her device list,
        # and the component tells her watchers), and his next message
        # reaches both.
        tablet = await OmemoClient("alice@localhost/tablet").online(p.c2s)
        tablet_id = await tablet.device_id()
        for _ in range(50):
            if tablet_id in await bob.device_ids_of(ALICE):
                break
            await asyncio.sleep(0.2)
        assert tablet_id in await bob.device_ids_of(ALICE), "her new device never reached Bob"
        again = "Both of your devices can read this"
        await bob.send_encrypted(ALICE, again)
        for device in (phone, tablet):
            got, _, _ = await asyncio.wait_for(device.plain.get(), 30)
            assert got == again

        # Her devices are offline: her server keeps his message and her
        # phone reads it when it comes back.
        await tablet.offline()
        await phone.offline()
        offline = "Read this when you are back"
        await bob.send_encrypted(ALICE, offline)
        await asyncio.sleep(0.5)
        await phone.online(p.c2s)
        got, sender, _ = await asyncio.wait_for(phone.plain.get(), 30)
        assert (got, sender) == (offline, PROXY_BOB)

        assert not phone.failures and not bob.failures and not tablet.failures, \
            (phone.failures, bob.failures, tablet.failures)
        for secret in ("alice@localhost", "/phone", "/tablet"):
            assert not any(secret in r for r in bob.raw_since(0)), f"{secret} reached Bob"
        for c in (bob, phone):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
