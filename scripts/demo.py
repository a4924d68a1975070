#!/usr/bin/env python3
"""Watch unified presence work: plays Alice's phone (can call) and laptop
(chat only) and Bob, approves the requests as Alice would, then takes the
devices on and off line, printing each presence Bob's client receives.
Run by `scripts/run-local --demo`."""
import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmpp_users import Client  # noqa: E402

ALICE = "alice@unified.localhost"
CALLS = ["urn:xmpp:jingle:1", "urn:xmpp:jingle:apps:rtp:1", "urn:xmpp:jingle:apps:rtp:audio",
         "urn:xmpp:jingle:transports:ice-udp:1", "urn:xmpp:jingle:apps:rtp:video"]
C = "{jabber:client}"


def describe(el):
    typ = el.get("type") or "available"
    show = el.find(C + "show")
    status = el.find(C + "status")
    parts = [f"{el.get('from'):32}", typ]
    if show is not None:
        parts.append(f"show={show.text}")
    if status is not None:
        parts.append(f"status={status.text!r}")
    return "  ".join(parts)


async def main(port):
    def user(jid, features=(), caps=True):
        # The demo accounts' passwords are their names.
        return Client(jid, features, caps, password=jid.split("@")[0])

    phone = await user("alice@localhost/phone", CALLS).online(port, priority=5)
    await phone.wait_for(lambda el: el.get("from") == ALICE and el.get("type") == "subscribe", timeout=15)
    print("alice's phone: approving the link request from", ALICE)
    phone.send_presence(pto=ALICE, ptype="subscribed")
    laptop = await user("alice@localhost/laptop", caps=False).online(port, priority=1)
    bob = await user("bob@localhost/pc").online(port)
    seen = bob.mark()
    bob.send_presence(pto=ALICE, ptype="subscribe")
    proxy = r"bob\40localhost@unified.localhost"
    await phone.wait_for(lambda el: el.get("from") == proxy and el.get("type") == "subscribe", timeout=15)
    print("alice's phone: approving", proxy)
    phone.send_presence(pto=proxy, ptype="subscribed")

    async def show_bob(title, wait=2.0):
        nonlocal seen
        await asyncio.sleep(wait)
        print(f"\n-- {title}; Bob receives:")
        got = bob.received(lambda el: el.tag == C + "presence" and el.get("from", "").startswith(ALICE), seen)
        for el in got:
            print("   ", describe(el))
        if not got:
            print("    (nothing: what he sees did not change)")
        seen = bob.mark()

    await show_bob("Bob subscribed")
    laptop.send_presence(pshow="away", pstatus="in a meeting", ppriority=1)
    await show_bob("laptop goes away (the phone is still online)")
    await phone.offline()
    await show_bob("phone goes offline (the only device that can call)")
    laptop.send_presence(pshow="away", pstatus="in a meeting", ppriority=2)
    await show_bob("laptop changes only its priority")
    for c in (laptop, bob):
        await c.offline()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=5222)
    asyncio.run(main(ap.parse_args().port))
