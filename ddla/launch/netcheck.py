"""What this machine's network says about a rendezvous endpoint, checked before anyone waits.

Three settings decide whether nodes on different machines find each other, and the defaults
of torch's launcher get all three wrong when the machine's name resolves to loopback (common:
Debian maps the hostname to 127.0.1.1): whether this node hosts the rendezvous store, the
address it advertises to the others, and the interface gloo binds. :func:`plan_node` works
each one out from the routing table; :func:`preflight` then checks the endpoint, so a wrong
address is one line with its fix, not a 60-second timeout and a traceback.

Example::

    plan = plan_node("192.168.77.1:29400", nodes=2)
    plan.is_host, plan.local_addr, plan.ifname     # (True, '192.168.77.1', 'veth0')
    preflight(plan, timeout_s=120)
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import time
from dataclasses import dataclass

from ddla.errors import CommError, CommTimeoutError, ConfigError

#: Errors of a TCP connect that may clear up (the host is still starting, a busy link).
_RETRY_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ECONNRESET, errno.ETIMEDOUT}


@dataclass(frozen=True)
class NodePlan:
    """How this node joins: each field can be overridden by a ``ddla join`` flag."""

    endpoint: str
    """``HOST:PORT`` as the user wrote it."""
    host_ip: str
    """The endpoint's address as this machine resolves it."""
    port: int
    nodes: int
    is_host: bool | None
    """This node hosts the rendezvous store; None lets torch decide (all nodes on loopback)."""
    local_addr: str
    """The address this node advertises to the others (not its host name)."""
    ifname: str
    """The interface gloo binds (``GLOO_SOCKET_IFNAME``): the one holding ``local_addr``."""

    def describe(self) -> str:
        """One line for the console: what was worked out."""
        role = {True: "hosts", False: "joins", None: "hosts or joins"}[self.is_host]
        return (
            f"this node {role} the rendezvous at {self.host_ip}:{self.port}, advertises "
            f"{self.local_addr}, gloo on {self.ifname}"
        )


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6]:PORT``) -> (host, port); the port is required."""
    host, sep, port_text = endpoint.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"--rendezvous {endpoint!r} is not HOST:PORT",
            help="name the first machine and a free port, e.g. --rendezvous 10.0.0.1:29400",
        )
    return host, int(port_text)


def local_addresses() -> dict[str, str]:
    """This machine's IP addresses and the interface holding each (psutil reads them)."""
    import psutil

    found: dict[str, str] = {}
    for ifname, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                found.setdefault(a.address.split("%")[0], ifname)
    return found


def _resolve(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"--rendezvous host {host!r} does not resolve on this machine: {exc.strerror}",
            help="pass the first machine's IP address instead of its name",
        ) from None
    # IPv4 first: gloo and most clusters use it; an IPv6-only name still works.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def route_source(ip: str, port: int) -> str:
    """The source address the kernel picks to reach ``ip`` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, port))
        except OSError as exc:
            raise CommError(
                f"no route from this machine to the rendezvous endpoint {ip}:{port} "
                f"({exc.strerror})",
                help="check the address in --rendezvous: it must be the first machine's address "
                "as the others reach it",
            ) from None
        return str(s.getsockname()[0])


def _is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


def plan_node(
    endpoint: str,
    *,
    nodes: int,
    is_host: bool | None = None,
    local_addr: str | None = None,
    ifname: str | None = None,
) -> NodePlan:
    """Work out hosting, advertised address and gloo interface from this machine's routes.

    Raises a ConfigError/CommError with a ``help:`` naming the flag that fixes it when a choice
    cannot work: the endpoint's name resolves to loopback here but other machines take part,
    this node would advertise a loopback address to other machines, a given address or
    interface is not this machine's.
    """
    host, port = parse_endpoint(endpoint)
    ip = _resolve(host, port)
    addrs = local_addresses()
    literal = _is_ip_literal(host)
    if _is_loopback(ip) and not literal and nodes > 1:
        own = ", ".join(a for a in addrs if not _is_loopback(a)) or "none"
        raise ConfigError(
            f"--rendezvous {host} resolves to {ip} (loopback) on this machine, so the other "
            "machines' agents would be told to connect to themselves",
            help=f"use this machine's network address in --rendezvous (its addresses: {own}); "
            "for several nodes on one machine write 127.0.0.1",
        )
    if is_host is None and not _is_loopback(ip):
        is_host = ip in addrs
    elif is_host and not _is_loopback(ip) and ip not in addrs:
        raise ConfigError(
            f"--host: {ip} is not an address of this machine, so it cannot host the rendezvous",
            help="run --host on the machine that holds the --rendezvous address",
        )
    if local_addr is None:
        local_addr = ip if is_host and not _is_loopback(ip) else route_source(ip, port)
    elif local_addr not in addrs:
        raise ConfigError(
            f"--local-addr {local_addr} is not an address of this machine",
            help=f"choose one of: {', '.join(addrs)}",
        )
    if nodes > 1 and _is_loopback(local_addr) and not _is_loopback(ip):
        raise ConfigError(
            f"this node would advertise the loopback address {local_addr} to the other machines",
            help="pass --local-addr with this machine's address as the others reach it",
        )
    if ifname is None:
        ifname = addrs.get(local_addr) or _no_interface(local_addr)
    else:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            raise ConfigError(
                f"--ifname {ifname}: no such network interface on this machine",
                help=f"choose one of: {', '.join(sorted(set(addrs.values())))}",
            ) from None
        if nodes > 1 and not _is_loopback(ip) and ifname in _loopback_interfaces(addrs):
            raise ConfigError(
                f"--ifname {ifname} is the loopback interface: gloo on it cannot reach "
                "other machines",
                help=f"pass the interface holding {local_addr} ({addrs.get(local_addr)})",
            )
    return NodePlan(endpoint, ip, port, nodes, is_host, local_addr, ifname)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback_interfaces(addrs: dict[str, str]) -> set[str]:
    return {name for a, name in addrs.items() if _is_loopback(a)}


def _no_interface(addr: str) -> str:
    raise ConfigError(
        f"no network interface of this machine holds {addr}",
        help="pass --ifname with the interface gloo should use (see `ip addr`)",
    )


def check_port_free(plan: NodePlan) -> None:
    """The host's rendezvous port must be free: a leftover run would take our agents."""
    family = socket.AF_INET6 if ":" in plan.host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # The store sets SO_REUSEADDR too: a closed run's TIME_WAIT sockets must not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((plan.host_ip, plan.port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise CommError(
                f"port {plan.port} on {plan.host_ip} is already in use (another run or "
                "program is listening there)",
                help=f"stop it, or give every node another port: --rendezvous "
                f"{plan.endpoint.rpartition(':')[0]}:{plan.port + 1}",
            ) from None


def wait_reachable(plan: NodePlan, timeout_s: float, *, announce: bool = True) -> float:
    """TCP-connect to the endpoint until it answers or ``timeout_s`` passes; return seconds."""
    start = time.monotonic()
    deadline = start + timeout_s
    said = False
    while True:
        attempt = max(0.1, min(2.0, deadline - time.monotonic()))
        try:
            with socket.create_connection((plan.host_ip, plan.port), timeout=attempt):
                return time.monotonic() - start
        except OSError as exc:
            code = exc.errno if exc.errno is not None else errno.ETIMEDOUT
            if code not in _RETRY_ERRNOS and not isinstance(exc, TimeoutError):
                raise CommError(
                    f"cannot reach the rendezvous endpoint {plan.host_ip}:{plan.port}: "
                    f"{exc.strerror or exc}",
                    help="check the address and port in --rendezvous and the firewall between "
                    "the machines",
                ) from None
            last = exc.strerror or type(exc).__name__
        if time.monotonic() + 0.5 >= deadline:
            raise CommTimeoutError(
                f"the rendezvous endpoint {plan.host_ip}:{plan.port} did not answer within "
                f"{timeout_s:g} s ({last})",
                help="start `ddla join` on the machine holding that address first (it hosts the "
                "rendezvous), and check the address, the port and the firewall; "
                "comm.timeout_s sets how long to wait",
            )
        if announce and not said:
            print(
                f"waiting for the rendezvous host at {plan.host_ip}:{plan.port} ({last}) ...",
                file=sys.stderr,
                flush=True,
            )
            said = True
        time.sleep(0.5)


def preflight(plan: NodePlan, timeout_s: float) -> None:
    """Check what :func:`plan_node` chose before the launcher waits on the rendezvous."""
    if plan.is_host:
        check_port_free(plan)
    elif plan.is_host is False:
        wait_reachable(plan, timeout_s)
