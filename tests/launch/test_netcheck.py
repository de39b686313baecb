"""The rendezvous pitfalls are caught before anyone waits: one line each, with the fix."""

from __future__ import annotations

import socket
import time

import pytest

from ddla.errors import CommError, CommTimeoutError, ConfigError
from ddla.launch.netcheck import (
    local_addresses,
    parse_endpoint,
    plan_node,
    preflight,
    route_source,
    wait_reachable,
)
from ddla.testing import free_port


def test_parse_endpoint() -> None:
    assert parse_endpoint("10.0.0.1:29400") == ("10.0.0.1", 29400)
    assert parse_endpoint("[::1]:29400") == ("::1", 29400)
    for bad in ("10.0.0.1", "10.0.0.1:", ":29400", "h:99999", "h:port"):
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            parse_endpoint(bad)


def test_local_addresses_hold_loopback() -> None:
    addrs = local_addresses()
    assert "127.0.0.1" in addrs
    socket.if_nametoindex(addrs["127.0.0.1"])  # a real interface name


def test_loopback_ip_lets_several_nodes_share_this_machine() -> None:
    plan = plan_node("127.0.0.1:29400", nodes=2)
    assert (plan.is_host, plan.local_addr) == (None, "127.0.0.1")
    assert plan.ifname == local_addresses()["127.0.0.1"]


def test_a_name_resolving_to_loopback_is_refused_for_several_nodes() -> None:
    with pytest.raises(ConfigError, match=r"localhost resolves to 127\.0\.0\.1 \(loopback\)") as e:
        plan_node("localhost:29400", nodes=2)
    assert "use this machine's network address" in (e.value.help or "")
    assert plan_node("localhost:29400", nodes=1).local_addr == "127.0.0.1"


def test_unresolvable_name() -> None:
    with pytest.raises(ConfigError, match="does not resolve on this machine"):
        plan_node("no-such-host.invalid:29400", nodes=2)


def test_overrides_must_be_this_machines() -> None:
    with pytest.raises(ConfigError, match=r"--local-addr 203\.0\.113\.9 is not an address of this"):
        plan_node("127.0.0.1:29400", nodes=2, local_addr="203.0.113.9")
    with pytest.raises(ConfigError, match="--ifname nosuchif0: no such network interface"):
        plan_node("127.0.0.1:29400", nodes=2, ifname="nosuchif0")


def test_own_address_means_host_and_is_advertised() -> None:
    own = [a for a in local_addresses() if ":" not in a and not a.startswith("127.")]
    if not own:
        pytest.skip("this machine has no non-loopback IPv4 address")
    plan = plan_node(f"{own[0]}:29400", nodes=2)
    assert (plan.is_host, plan.local_addr) == (True, own[0])
    assert plan.ifname == local_addresses()[own[0]]
    assert plan.describe().startswith(f"this node hosts the rendezvous at {own[0]}:29400")
    assert route_source(own[0], 29400) == own[0]


def test_port_in_use_on_the_host() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        plan = plan_node(f"127.0.0.1:{port}", nodes=2, is_host=True)
        with pytest.raises(CommError, match=f"port {port} on 127.0.0.1 is already in use") as e:
            preflight(plan, timeout_s=5)
    assert f"--rendezvous 127.0.0.1:{port + 1}" in (e.value.help or "")
    preflight(plan, timeout_s=5)  # free again


def test_unreachable_endpoint_fails_after_the_timeout_not_later() -> None:
    plan = plan_node(f"127.0.0.1:{free_port()}", nodes=2, is_host=False)
    start = time.monotonic()
    with pytest.raises(CommTimeoutError, match=r"did not answer within 1\.5 s") as e:
        preflight(plan, timeout_s=1.5)
    assert time.monotonic() - start >= 1.0
    assert "start `ddla join` on the machine holding that address first" in (e.value.help or "")


def test_reachable_endpoint_passes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        plan = plan_node(f"127.0.0.1:{server.getsockname()[1]}", nodes=2, is_host=False)
        assert wait_reachable(plan, timeout_s=5, announce=False) >= 0
