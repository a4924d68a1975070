"""Faults, floods and durability end to end (issue 5): a real Prosody, the
real binary, slixmpp users. Figures (acknowledged vs found, memory) are
printed; run with `pytest -s tests/e2e/test_faults.py` to see them."""
import asyncio
import signal
import time

import pytest

from harness import (C, DOMAIN, JINGLE_AUDIO, JMI, Client, Component, error_condition, presence,
                     show_of, start_prosody)

ALICE = f"alice@{DOMAIN}"
ALICE_OPEN = """admins = ["alice@localhost"]
[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


def from_service(el):
    return el.tag == C + "message" and el.get("from") == DOMAIN


def body(el):
    b = el.find(C + "body")
    return "" if b is None else b.text


async def ask(client, text):
    """A chat command to the service; returns its reply stanza."""
    since = client.mark()
    client.send_raw(f"<message type='chat' to='{DOMAIN}'><body>{text}</body></message>")
    return await client.wait_for(from_service, since, what=f"the answer to {text!r}")


def propose(caller, to, id_):
    """The caller's client proposes an audio call (XEP-0353)."""
    caller.send_raw(f"<message type='chat' to='{to}'><propose xmlns='{JMI}' id='{id_}'>"
                    "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")


def jmi(name):
    return lambda e: e.tag == C + "message" and e.find(f"{{{JMI}}}{name}") is not None


async def alice_linked(p, features=(), resource="phone"):
    phone = await Client(f"alice@localhost/{resource}", features).online(p.c2s)
    await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
    phone.send_presence(pto=ALICE, ptype="subscribed")
    return phone


@pytest.fixture
def prosody(tmp_path):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "eve", "carol"))
    yield p
    p.stop()


def test_a_full_disk_is_an_error_to_the_requester_and_nothing_half_written(tmp_path, prosody):
    comp = Component(str(tmp_path), prosody, ALICE_OPEN)
    # Every file the component writes stops growing at 64 KiB: EFBIG, as
    # on a full disk.
    comp.start(max_file_bytes=64 * 1024)

    async def scenario():
        phone = await alice_linked(prosody, JINGLE_AUDIO + [JMI])
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(f"{ALICE}/chat"), what="Alice's chat presence")
        acked, refused = [], None
        for n in range(2000):
            reply = await ask(phone, f"block spam{n}@spam.example")
            if reply.get("type") == "error":
                refused = n
                assert error_condition(reply) == "internal-server-error"
                text = reply.find(C + "error").find("{urn:ietf:params:xml:ns:xmpp-stanzas}text").text
                assert "could not save" in text and "nothing changed" in text
                break
            assert "is blocked" in body(reply), body(reply)
            acked.append(n)
        assert refused is not None, "the store never filled"
        await comp.await_log("store write failed")
        # Still up: later changes are refused the same way, presence and
        # calls go on.
        reply = await ask(phone, "block other@spam.example")
        assert reply.get("type") == "error" and error_condition(reply) == "internal-server-error"
        since = bob.mark()
        phone.send_presence(pshow="dnd")
        # (If the store reopened, the rebuilt core first re-announces what
        # it relearned; the change follows.)
        await bob.wait_for(lambda e: presence(f"{ALICE}/chat")(e) and show_of(e) == "dnd", since,
                           what="dnd after the disk filled")
        assert comp.proc.poll() is None, "no crash"
        print(f"\nfull disk: {len(acked)} changes acknowledged before the store filled; "
              f"change #{refused} and the next one refused with internal-server-error")
        for c in (phone, bob):
            await c.offline()
        return acked, refused

    acked, refused = asyncio.run(scenario())
    assert comp.stop() == 0
    assert "panicked" not in comp.log_text()

    # Room again: every acknowledged change is there, the refused ones not.
    comp.start()

    async def check():
        phone = await Client("alice@localhost/phone").online(prosody.c2s)
        for n in acked[-20:] + [acked[0]]:
            assert "already" in body(await ask(phone, f"block spam{n}@spam.example")), n
        assert "already" not in body(await ask(phone, f"block spam{refused}@spam.example"))
        assert "already" not in body(await ask(phone, "block other@spam.example"))
        await phone.offline()

    asyncio.run(check())


async def alice_and_watching_bob(p):
    """Alice's phone (audio calls) linked; Bob, who can call, watches her."""
    phone = await alice_linked(p, JINGLE_AUDIO + [JMI])
    bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
    bob.send_presence(pto=ALICE, ptype="subscribe")
    await bob.wait_for(presence(f"{ALICE}/audio"), what="Alice's audio presence")
    return phone, bob


def owners_toml(n):
    owners = "".join(f"""
[[owners]]
name = "o{i}"
accounts = ["o{i}@localhost"]
subscription = "open"
""" for i in range(n))
    return ALICE_OPEN + owners


def test_sigkill_mid_burst_loses_no_acknowledged_change(tmp_path, prosody):
    """Bob subscribes to 150 owners while Alice adds rules and blocks, as
    fast as they can; the component is killed with SIGKILL mid-burst.
    Every change that was acknowledged must be there after the restart."""
    # The admin checks 150 owners one after the other: more than the
    # default 50 stanzas/s per account.
    comp = Component(str(tmp_path), prosody, owners_toml(150) + "[limits]\nstanzas_per_sec = 1000\nstanza_burst = 1000\n")
    comp.start()
    owners = [f"o{i}" for i in range(150)]

    async def burst():
        phone = await alice_linked(prosody)
        bob = await Client("bob@localhost/pc").online(prosody.c2s)
        since_b, since_a = bob.mark(), phone.mark()

        killed = asyncio.Event()

        async def send_burst():
            # A steady stream (one subscription and one change each 4 ms)
            # so that the kill lands while changes are in flight; the last
            # third waits for the kill, so that however fast the component
            # answers, the kill is mid-burst.
            for i, o in enumerate(owners):
                if i == 100:
                    await killed.wait()
                bob.send_presence(pto=f"{o}@{DOMAIN}", ptype="subscribe")
                if i % 2 == 0:
                    phone.send_raw(f"<message type='chat' to='{DOMAIN}'><body>block spam{i}@spam.example</body></message>")
                else:
                    phone.send_raw(f"<message type='chat' to='{DOMAIN}'><body>rule add from c{i}@example.org busy</body></message>")
                await asyncio.sleep(0.004)

        sender = asyncio.create_task(send_burst())
        acks = lambda: bob.received(lambda e: e.tag == C + "presence" and e.get("type") == "subscribed", since_b)
        deadline = time.monotonic() + 20
        while len(acks()) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        comp.proc.send_signal(signal.SIGKILL)
        comp.proc.wait()
        killed.set()
        await sender
        await asyncio.sleep(1)  # what was sent before the kill arrives
        subscribed = {el.get("from").split("@")[0] for el in acks()}
        replies = [body(el) for el in phone.received(from_service, since_a)]
        blocked = {r.split()[0] for r in replies if "is blocked:" in r}
        rules = {r.split("from ")[1].split()[0] for r in replies if r.startswith("Added as rule")}
        for c in (phone, bob):
            await c.offline()
        return subscribed, blocked, rules

    subscribed, blocked, rules = asyncio.run(burst())
    assert 60 <= len(subscribed) < len(owners), "the kill landed mid-burst"
    comp.stop()
    comp.start()

    async def check():
        phone = await Client("alice@localhost/phone").online(prosody.c2s)
        for o in sorted(subscribed):
            text = body(await ask(phone, f"as {o} watchers"))
            assert "bob@localhost" in text.split("Waiting")[0], f"{o}: acknowledged, lost: {text}"
        for who in sorted(blocked):
            assert "already" in body(await ask(phone, f"block {who}")), f"{who}: acknowledged, lost"
        listed = body(await ask(phone, "rules"))
        for who in sorted(rules):
            assert f"from {who} " in listed, f"rule for {who}: acknowledged, lost:\n{listed}"
        stored_rules = sum(1 for line in listed.splitlines() if "example.org" in line)
        await phone.offline()
        print(f"\nSIGKILL mid-burst: 150 subscriptions + 150 changes sent; acknowledged before the kill: "
              f"{len(subscribed)} subscriptions, {len(blocked)} blocks, {len(rules)} rules; all of them found "
              f"after restart ({stored_rules} rules stored in all)")

    asyncio.run(check())


def test_a_flood_from_one_jid_does_not_stop_other_owners(tmp_path, prosody):
    comp = Component(str(tmp_path), prosody, """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"

[[owners]]
name = "carol"
accounts = ["carol@localhost"]
subscription = "open"
""", level="unified_presence=info")
    comp.start()
    carol_v = f"carol@{DOMAIN}"

    async def scenario():
        await alice_linked(prosody, JINGLE_AUDIO + [JMI])
        carol = await Client("carol@localhost/phone", JINGLE_AUDIO + [JMI]).online(prosody.c2s)
        await carol.wait_for(presence(carol_v, "subscribe"))
        carol.send_presence(pto=carol_v, ptype="subscribed")
        bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(prosody.c2s)
        bob.send_presence(pto=carol_v, ptype="subscribe")
        await bob.wait_for(presence(f"{carol_v}/audio"), what="Carol's audio presence")
        eve = await Client("eve@localhost/x").online(prosody.c2s)
        rss_before, _ = comp.memory_kib()
        t0 = time.monotonic()
        for n in range(10_000):
            eve.send_raw(f"<presence type='subscribe' to='{ALICE}'/>")
            propose(eve, ALICE, f"f{n}")
            if n % 500 == 0:
                await asyncio.sleep(0)
        # While the flood is being routed: Carol's change reaches Bob, and
        # Bob's call rings Carol's phone.
        since = bob.mark()
        carol.send_presence(pshow="away")
        p = await bob.wait_for(lambda e: presence(f"{carol_v}/chat")(e) and show_of(e) == "away", since,
                               timeout=30, what="Carol's change during the flood")
        assert p is not None
        since_c = carol.mark()
        propose(bob, carol_v, "during-flood")
        await carol.wait_for(jmi("propose"),
                             since_c, timeout=30, what="Bob's call during the flood")
        elapsed = time.monotonic() - t0
        await comp.await_log("sender over its rate limit")
        await asyncio.sleep(2)
        rss_after, peak = comp.memory_kib()
        print(f"\nflood: 20000 stanzas from one JID; other owner's presence and call went through "
              f"{elapsed:.1f}s after the flood started; RSS {rss_before} KiB before, "
              f"{rss_after} KiB after, peak {peak} KiB")
        assert peak < 100 * 1024, f"peak RSS {peak} KiB"
        for c in (carol, bob, eve):
            await c.offline()

    asyncio.run(scenario())
    assert comp.proc.poll() is None


def test_prosody_restart_while_a_call_rings_and_watchers_are_online(tmp_path, prosody):
    comp = Component(str(tmp_path), prosody, ALICE_OPEN + "[calls]\nring_timeout_secs = 60\n")
    comp.start()

    async def scenario():
        phone, bob = await alice_and_watching_bob(prosody)
        await asyncio.sleep(0.5)
        since = phone.mark()
        propose(bob, ALICE, "c1")
        await phone.wait_for(jmi("propose"), since)
        prosody.stop()
        await comp.await_log("connection lost")
        await asyncio.gather(phone.gone.wait(), bob.gone.wait())
        prosody.start()
        await comp.await_log(" connected domain=", comp.connections + 2, timeout=30)
        assert "call ended" in comp.log_text(), "the ringing call was ended"
        # Everyone logs in again: Bob sees Alice as she is, not "in a call",
        # within seconds, and a new call rings.
        phone2 = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI]).online(prosody.c2s)
        bob2 = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(prosody.c2s)
        p = await bob2.wait_for(presence(f"{ALICE}/audio"), timeout=10, what="Alice's audio after the restart")
        assert show_of(p) is None, "available, not busy"
        await asyncio.sleep(0.5)
        since = phone2.mark()
        propose(bob2, ALICE, "c2")
        await phone2.wait_for(jmi("propose"),
                              since, what="a new call after the restart")
        for c in (phone2, bob2):
            await c.offline()

    asyncio.run(scenario())


def test_sigterm_ends_calls_tells_watchers_and_keeps_what_was_acknowledged(tmp_path, prosody):
    comp = Component(str(tmp_path), prosody, ALICE_OPEN)
    comp.start()

    async def scenario():
        phone, bob = await alice_and_watching_bob(prosody)
        assert "is blocked" in body(await ask(phone, "block spam@spam.example"))
        await asyncio.sleep(0.5)
        since_p = phone.mark()
        propose(bob, ALICE, "t1")
        await phone.wait_for(jmi("propose"), since_p)
        since_b, since_p = bob.mark(), phone.mark()
        comp.proc.send_signal(signal.SIGTERM)
        await bob.wait_for(presence(f"{ALICE}/audio", "unavailable"), since_b, what="unavailable on shutdown")
        await bob.wait_for(lambda e: jmi("reject")(e) or jmi("retract")(e) or jmi("finish")(e), since_b,
                           what="the call ended for Bob")
        await phone.wait_for(jmi("retract"),
                             since_p, what="the ringing stopped on the phone")
        for c in (phone, bob):
            await c.offline()

    asyncio.run(scenario())
    assert comp.stop() == 0, "a clean exit"
    comp.start()

    async def check():
        phone = await Client("alice@localhost/phone").online(prosody.c2s)
        assert "already" in body(await ask(phone, "block spam@spam.example"))
        await phone.offline()

    asyncio.run(check())
