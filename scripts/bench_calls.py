#!/usr/bin/env python3
"""Call-setup latency through the component against the direct path.

Starts a fresh loopback Prosody and the component (release build), logs in
Alice's phones (1, 3 and 10 of them: the component rings them all in
parallel, the first answers) and Bob (slixmpp), and times N call setups
each way:

  via component: Bob -> propose -> alice@unified (-> phone), phone ->
                 proceed -> proxy JID (-> Bob), then Bob finishes;
  direct:        Bob -> propose -> alice@localhost/phone, phone -> proceed
                 -> Bob, through the same Prosody: one device, the floor;
  native fork:   Bob -> propose -> alice@localhost (her bare JID), which
                 Prosody forks to every phone itself (all at priority 1),
                 phone -> proceed -> Bob: the fair baseline for N devices
                 (issue 15), since forking to N costs her server too.

All paths pay the same client and Prosody costs, so the ratios are what the
component adds. Prosody runs with Nagle off (see below). Usage: python3 scripts/bench_calls.py [--rounds N] [--devices 1,3,10] [--bin PATH]
"""
import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from prosody_local import Prosody  # noqa: E402
from xmpp_users import Client  # noqa: E402

JMI = "urn:xmpp:jingle-message:0"
AUDIO = ["urn:xmpp:jingle:1", "urn:xmpp:jingle:apps:rtp:1", "urn:xmpp:jingle:apps:rtp:audio",
         "urn:xmpp:jingle:transports:ice-udp:1", JMI]
DOMAIN = "unified.localhost"
ALICE = f"alice@{DOMAIN}"


def jmi(el, name):
    for c in el:
        if c.tag == "{%s}%s" % (JMI, name):
            return c
    return None


async def one_call(bob, phone, to, sid, via_component):
    """One call set up and finished; returns (propose, proceed) in ms."""
    s_phone, s_bob = phone.mark(), bob.mark()
    t0 = time.perf_counter()
    bob.send_raw(f"<message type='chat' to='{to}'><propose xmlns='{JMI}' id='{sid}'>"
                 "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
    prop = await phone.wait_for(lambda el: jmi(el, "propose") is not None, s_phone)
    t1 = time.perf_counter()
    leg = jmi(prop, "propose").get("id")
    phone.send_raw(f"<message type='chat' to='{prop.get('from')}'><proceed xmlns='{JMI}' id='{leg}'/></message>")
    await bob.wait_for(lambda el: jmi(el, "proceed") is not None, s_bob)
    t2 = time.perf_counter()
    # Both paths hang up the same way: the device gets a finish it does not
    # answer (this matters: Prosody writes to clients with Nagle on).
    fin = f"<finish xmlns='{JMI}' id='{sid}'/>" if via_component else f"<finish xmlns='{JMI}' id='{leg}'/>"
    bob.send_raw(f"<message type='chat' to='{to}'>{fin}</message>")
    await phone.wait_for(lambda el: jmi(el, "finish") is not None, s_phone)
    return (t1 - t0) * 1000, (t2 - t1) * 1000


async def run(rounds, c2s, devices):
    """`devices` phones of Alice's; the component rings them all, and the
    first (phone0) answers. The direct path calls phone0 alone."""
    # The phones that only ring live in another process: in this one their
    # parsing of every propose and retract would delay phone0 and Bob.
    others = None
    if devices > 1:
        others = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--idle-phones",
                                   str(devices - 1), "--c2s", str(c2s)], stdout=subprocess.PIPE, text=True)
        assert others.stdout.readline().strip() == "online", "the other phones did not come online"
    phone = await Client("alice@localhost/phone0", AUDIO).online(c2s, priority=1)
    phones = [phone]
    await phone.wait_for(lambda el: el.get("from") == ALICE and el.get("type") == "subscribe", timeout=15)
    phone.send_presence(pto=ALICE, ptype="subscribed")
    bob = await Client("bob@localhost/pc", AUDIO).online(c2s)
    await asyncio.sleep(1.5)  # the component learns the phones' features
    results = {"via component": [], "direct": [], "native fork": []}
    for i in range(rounds):
        # Interleaved, so that drift affects every path alike.
        results["via component"].append(await one_call(bob, phone, ALICE, f"c{i}", True))
        results["direct"].append(await one_call(bob, phone, "alice@localhost/phone0", f"d{i}", False))
        results["native fork"].append(await one_call(bob, phone, "alice@localhost", f"n{i}", False))
        await asyncio.sleep(0.01)
    for c in phones + [bob]:
        await c.offline()
    if others:
        others.terminate()
        others.wait()
    return results


async def idle_phones(n, c2s):
    """Phones 1..n of Alice's, online until terminated (see run())."""
    phones = [await Client(f"alice@localhost/phone{d}", AUDIO).online(c2s, priority=1) for d in range(1, n + 1)]
    print("online", flush=True)
    await asyncio.Event().wait()
    return phones


def bench(rounds, devices, binary):
    """One fresh Prosody and component; returns the results of run()."""
    tmp = tempfile.mkdtemp(prefix="up-bench-")
    # Nagle off: with Prosody's default, a stanza to a client that did not
    # answer the previous one waits for its delayed ACK (~40 ms), on both
    # paths alike, which would drown what the component adds.
    prosody = Prosody(os.path.join(tmp, "prosody"), component_domain=DOMAIN, secret="bench", level="warn",
                      extra="network_settings = { nagle = false; opportunistic_writes = true }").start()
    for u in ("alice", "bob"):
        prosody.register(u, "pw-" + u)
    cfg = os.path.join(tmp, "component.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
address = "127.0.0.1:{prosody.component}"
domain = "{DOMAIN}"
secret = "bench"
[store]
path = "{tmp}/store"
[log]
level = "warn"
[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
""")
    os.chmod(cfg, 0o600)  # it holds the secret
    comp = subprocess.Popen([binary, "--config", cfg], stderr=open(os.path.join(tmp, "component.log"), "w"))
    try:
        time.sleep(0.5)
        return asyncio.run(run(rounds, prosody.c2s, devices))
    finally:
        comp.terminate()
        comp.wait()
        prosody.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "unified-presence"))
    ap.add_argument("--devices", default="1,3,10", help="fork sizes to measure, comma-separated")
    ap.add_argument("--idle-phones", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--c2s", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.idle_phones:
        asyncio.run(idle_phones(args.idle_phones, args.c2s))
        return
    if args.bin.endswith(os.path.join("release", "unified-presence")):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)

    def p(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(f"call setup, {args.rounds} rounds each, loopback Prosody, slixmpp caller and devices")
    print(f"{'devices':>7} {'path':16} {'propose p50':>12} {'proceed p50':>12} {'setup p50':>10} {'setup p90':>10}  (ms)")
    table = []
    for devices in [int(d) for d in args.devices.split(",")]:
        results = bench(args.rounds, devices, args.bin)
        setup = {}
        for name, rows in results.items():
            props = [a for a, _ in rows]
            procs = [b for _, b in rows]
            totals = [a + b for a, b in rows]
            setup[name] = statistics.median(totals)
            print(f"{devices:7} {name:16} {statistics.median(props):12.2f} {statistics.median(procs):12.2f} "
                  f"{setup[name]:10.2f} {p(totals, 0.9):10.2f}")
        ratio = setup["via component"] / setup["direct"]
        fork_ratio = setup["via component"] / setup["native fork"]
        print(f"{devices:7} ratio (via component / direct, setup p50): {ratio:.2f}; "
              f"(via component / native fork): {fork_ratio:.2f}")
        table.append((devices, setup["via component"], setup["direct"], ratio, setup["native fork"], fork_ratio))
    print("== calls")
    for devices, via, direct, ratio, fork, fork_ratio in table:
        print(f"calls_{devices}_via_ms {via:.3f}")
        print(f"calls_{devices}_direct_ms {direct:.3f}")
        print(f"calls_{devices}_ratio {ratio:.2f}")
        print(f"calls_{devices}_fork_ms {fork:.3f}")
        print(f"calls_{devices}_fork_ratio {fork_ratio:.2f}")
    print("== end")


if __name__ == "__main__":
    main()
