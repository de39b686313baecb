"""Two hosts on separate network stacks: two network namespaces joined by a veth pair.

Each namespace has its own interfaces, routes and ports, so an agent in one reaches the other
only over the veth link, as two machines would over a network (the host name still resolves
to loopback in both, as on many real machines). Needs root and iproute2; the namespaces and
the link are removed on exit, whatever happened.

Example::

    with two_hosts() as net:
        subprocess.run([*net.exec(0), "ip", "-br", "addr"])   # lo + the veth end, 192.168.77.1
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

SUBNET = "192.168.77"


@dataclass(frozen=True)
class TwoHosts:
    namespaces: tuple[str, str]
    ifnames: tuple[str, str]
    addrs: tuple[str, str] = (f"{SUBNET}.1", f"{SUBNET}.2")
    shaped: str = ""

    def exec(self, host: int) -> list[str]:
        """Command prefix that runs a program on ``host`` (0 or 1)."""
        return ["ip", "netns", "exec", self.namespaces[host]]

    def link_bytes(self, host: int) -> dict[str, int]:
        """Bytes sent and received on ``host``'s end of the link (the kernel's counters)."""
        out = _ip("-n", self.namespaces[host], "-s", "-j", "link", "show", self.ifnames[host])
        stats = json.loads(out)[0]["stats64"]
        return {"tx": int(stats["tx"]["bytes"]), "rx": int(stats["rx"]["bytes"])}


def _ip(*args: str) -> str:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def why_not() -> str | None:
    """Why two namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run the suite as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to create network namespaces"
    return None


def remove_stale() -> None:
    """Remove namespaces an earlier test run left when it was killed (its pid is gone)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        owner = parts[2] if name.startswith("ddla-mh-") and len(parts) > 2 else ""
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@contextlib.contextmanager
def two_hosts(rate: str | None = None) -> Iterator[TwoHosts]:
    """Create the two namespaces (link shaped by ``tc tbf`` at ``rate`` when given)."""
    remove_stale()
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    names = (f"ddla-mh-{tag}-0", f"ddla-mh-{tag}-1")
    short = uuid.uuid4().hex[:8]  # interface names are at most 15 characters
    ifnames = (f"dm{short}a", f"dm{short}b")
    made: list[str] = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", ifnames[0], "netns", names[0], "type", "veth",
            "peer", "name", ifnames[1], "netns", names[1])  # fmt: skip
        shaped = []
        for host, (ns, ifname) in enumerate(zip(names, ifnames, strict=True)):
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{host + 1}/24", "dev", ifname)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", ifname, "up")
            if rate is not None:
                tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ifname, "root",
                      "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]  # fmt: skip
                if subprocess.run(tc, capture_output=True, check=False).returncode == 0:
                    shaped.append(ifname)
        yield TwoHosts(names, ifnames, shaped=f"tbf {rate}" if len(shaped) == 2 else "")
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so both
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
