"""Packaging (issue 6): the Debian package that scripts/package builds
(scripts/test builds it before these tests) holds the binary, a sandboxed
systemd unit and a commented config; an admin who fills in that config as
its comments say gets a component that --check approves and that serves
users on a real Prosody."""
import glob
import os
import socket
import re
import signal
import subprocess
import time

from harness import JINGLE_AUDIO, ROOT, Client, presence
from prosody_local import Prosody

DOMAIN = "unified.example.org"


def newest_deb():
    debs = sorted(glob.glob(os.path.join(ROOT, "target", "debian", "unified-presence_*.deb")), key=os.path.getmtime)
    assert debs, "no package: scripts/package builds target/debian/unified-presence_*.deb"
    return debs[-1]


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


def syscall_set(group):
    """The system calls of a systemd syscall group, nested groups expanded."""
    out = set()
    for line in run("systemd-analyze", "syscall-filter", group).stdout.splitlines()[1:]:
        name = line.split("#")[0].strip()
        if name.startswith("@"):
            out |= syscall_set(name)
        elif name:
            out.add(name)
    return out


def test_the_package_holds_binary_unit_and_a_root_only_conffile():
    deb = newest_deb()
    listing = run("dpkg-deb", "-c", deb).stdout
    for path in ("./usr/bin/unified-presence", "./usr/lib/systemd/system/unified-presence.service",
                 "./etc/unified-presence/component.toml", "./usr/share/doc/unified-presence/README.md"):
        assert path in listing, f"{path} missing:\n{listing}"
    config_line = next(line for line in listing.splitlines() if line.endswith("/etc/unified-presence/component.toml"))
    assert config_line.startswith("-rw------- 0/0"), "the config holds the secret: root-only"
    assert "/etc/unified-presence/component.toml" in run("dpkg-deb", "-I", deb, "conffiles").stdout, \
        "an upgrade keeps the admin's config"


def test_the_unit_is_sandboxed():
    unit = os.path.join(ROOT, "contrib", "unified-presence.service")
    text = open(unit).read()
    for line in ("DynamicUser=yes", "StateDirectory=unified-presence", "ProtectSystem=strict",
                 "ExecStart=/usr/bin/unified-presence --config ${CREDENTIALS_DIRECTORY}/component.toml"):
        assert line in text
    # systemd's own exposure score, 0 (locked down) to 10 (unconfined);
    # --threshold counts in tenths: fail above 2.0.
    r = run("systemd-analyze", "security", "--offline=yes", "--threshold=20", unit)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    score = re.search(r"Overall exposure level for unified-presence.service: ([0-9.]+)", r.stdout + r.stderr)
    print(f"\nsystemd-analyze security: exposure {score.group(1)}")


def test_an_admin_fills_in_the_shipped_config_and_users_see_it_work(tmp_path):
    root = tmp_path / "root"
    run("dpkg-deb", "-x", newest_deb(), str(root)).check_returncode()
    binary = str(root / "usr/bin/unified-presence")
    assert run(binary, "--version").stdout.strip() == f"unified-presence {cargo_version()}"

    # As shipped, --check names everything the admin still has to do, at once.
    shipped = root / "etc/unified-presence/component.toml"
    r = run(binary, "--check", "--config", str(shipped))
    assert r.returncode == 1
    assert "server.secret: is empty" in r.stderr and "component_secret" in r.stderr, r.stderr
    # (Unless something on this machine happens to listen there.)
    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", 5347)) == 0
    assert taken or "server.address: nothing accepts connections at 127.0.0.1:5347" in r.stderr, r.stderr

    # The admin does what the comments say: a Component on her Prosody...
    prosody = Prosody(str(tmp_path / "prosody"), component_domain=DOMAIN, secret="s3cret-for-the-test").start()
    try:
        for u in ("alice", "bob"):
            prosody.register(u, "pw-" + u)
        # ... and [server] to match (here on free ports and a scratch store).
        text = shipped.read_text()
        text = text.replace('address = "127.0.0.1:5347"', f'address = "127.0.0.1:{prosody.component}"')
        text = text.replace('secret = ""', 'secret = "s3cret-for-the-test"')
        text = text.replace('path = "/var/lib/unified-presence/store"', f'path = "{tmp_path}/state/store"')
        text = text.replace('# [[owners]]\n# name = "alice"', '[[owners]]\nname = "alice"')
        text = text.replace('# accounts = ["alice@example.org"]', 'accounts = ["alice@localhost"]')
        text = text.replace('# subscription = "ask"', 'subscription = "open"')
        config = tmp_path / "component.toml"
        config.write_text(text)
        config.chmod(0o600)
        r = run(binary, "--check", "--config", str(config))
        assert r.returncode == 0, r.stderr
        assert f"{DOMAIN} as a component of the server at 127.0.0.1:{prosody.component} (port open)" in r.stdout

        log = open(tmp_path / "component.log", "w")
        # Under strace, to hold its system calls against the unit's filter.
        trace = tmp_path / "syscalls.strace"
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), binary, "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            import asyncio

            async def users():
                deadline = time.time() + 20
                while " connected domain=" not in open(tmp_path / "component.log").read():
                    assert time.time() < deadline and proc.poll() is None, open(tmp_path / "component.log").read()
                    await asyncio.sleep(0.05)
                phone = await Client("alice@localhost/phone", JINGLE_AUDIO).online(prosody.c2s)
                await phone.wait_for(presence(f"alice@{DOMAIN}", "subscribe"), what="the linking request")
                phone.send_presence(pto=f"alice@{DOMAIN}", ptype="subscribed")
                bob = await Client("bob@localhost/pc").online(prosody.c2s)
                bob.send_presence(pto=f"alice@{DOMAIN}", ptype="subscribe")
                await bob.wait_for(presence(f"alice@{DOMAIN}/audio"), what="Alice's audio class")
                for c in (phone, bob):
                    await c.offline()

            asyncio.run(users())
        finally:
            # SIGTERM to the component itself (strace's child): it says
            # goodbye and exits, and strace with it.
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                for child in f.read().split():
                    os.kill(int(child), signal.SIGTERM)
            proc.wait(timeout=15)
    finally:
        prosody.stop()
    assert "shutting down" in open(tmp_path / "component.log").read()

    # Every call it made is one the unit's SystemCallFilter allows
    # (@system-service without @privileged and @resources).
    used = set()
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
    assert {"connect", "fsync", "epoll_wait"} <= used, sorted(used)
    allowed = syscall_set("@system-service") - syscall_set("@privileged") - syscall_set("@resources")
    assert used <= allowed, f"the unit's filter would kill it for: {sorted(used - allowed)}"
