"""Validate the link model against a real rate-limited link (network namespaces + ``tc tbf``).

Two agents run in two fresh network namespaces joined by a veth pair whose both ends are shaped
with a token bucket filter (``tc qdisc ... tbf rate R``), and time a real gloo all-reduce
across it. The same all-reduce then runs on loopback with ddla's emulated link of the same
rate (real clock), and both are compared with the model (:func:`ddla.comm.op_seconds`). This
kernel has no ``netem``, so the real link has (almost) no delay: the latency part of the model
stays emulated and the spec used is ``RATE:0ms``.

Needs root (``ip netns``, ``tc``). Only this script's own namespaces, veth pair and private
addresses (10.250.X.1/2 inside those namespaces) are created, and they are removed on exit.

    sudo .venv/bin/python benchmarks/link_validation.py            # writes a record
    python benchmarks/link_validation.py --rates 100mbit --sizes 4000000 --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddla.comm import op_seconds  # noqa: E402
from ddla.comm.links import LinkTable  # noqa: E402

RECORD = ROOT / "benchmarks" / "records" / "link_validation.json"
PORT = 29500  # inside our own fresh namespaces: nothing else listens there


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_available() -> bool:
    """True when this process may create network namespaces and shape links (root, iproute2)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    probe = f"ddla-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError):
        return False
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", probe)
    return True


@contextlib.contextmanager
def shaped_pair(rate: str) -> Iterator[tuple[tuple[str, str, str], tuple[str, str, str]]]:
    """Two namespaces on a veth pair shaped to ``rate`` both ways; yields (ns, dev, addr) x2."""
    tag = os.getpid() % 100_000
    subnet = f"10.250.{os.getpid() % 250}"
    ends = [(f"ddla-lv{tag}-{s}", f"dlv{tag}{s}", f"{subnet}.{i + 1}") for i, s in enumerate("ab")]
    created: list[str] = []
    try:
        for ns, _, _ in ends:
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", ends[0][1], "type", "veth", "peer", "name", ends[1][1])
        for ns, dev, addr in ends:
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
            # 32 KB bucket: small against the messages, so bursts barely beat the rate.
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                 "rate", rate, "burst", "32kb", "latency", "200ms"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        yield ends[0], ends[1]
    finally:
        for ns in created:  # deleting a namespace deletes its end of the veth pair too
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)


def _worker(nbytes: int, reps: int, link: str | None) -> None:
    import torch

    from ddla.comm import Transport

    with Transport.from_env(backend="gloo", timeout_s=120) as transport:
        if link is not None:
            transport.emulate_links(link, clock="real")
        t = torch.ones(nbytes // 4)
        transport.all_reduce(t)  # warm up connections
        times = []
        for _ in range(reps):
            transport.barrier()
            t0 = time.monotonic()
            transport.all_reduce(t)
            times.append(time.monotonic() - t0)
        if transport.rank == 0:
            print(json.dumps(times), flush=True)


def _spawn(prefixes: list[list[str]], envs: list[dict[str, str]], args: list[str]) -> list[float]:
    procs = [
        subprocess.Popen(
            [*pre, sys.executable, __file__, "--worker", *args],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pre, env in zip(prefixes, envs, strict=True)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def measure(rate: str, nbytes: int, reps: int) -> dict[str, float | str | int]:
    """tbf-measured, emulated-measured and modelled seconds of a 2-agent all-reduce."""
    args = ["--nbytes", str(nbytes), "--reps", str(reps)]
    with shaped_pair(rate) as (a, b):
        envs = [
            {"MASTER_ADDR": a[2], "MASTER_PORT": str(PORT), "WORLD_SIZE": "2", "RANK": str(r),
             "GLOO_SOCKET_IFNAME": end[1]}
            for r, end in enumerate((a, b))
        ]  # fmt: skip
        tbf = _spawn([["ip", "netns", "exec", a[0]], ["ip", "netns", "exec", b[0]]], envs, args)
    spec = f"{rate}:0ms"
    from ddla.testing import free_port

    port = str(free_port())
    envs = [
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(r)}
        for r in range(2)
    ]
    emulated = _spawn([[], []], envs, [*args, "--link", spec])
    model = op_seconds(
        "all_reduce", nbytes, table=LinkTable.build(spec, None, world_size=2), rank=0
    )
    real, emu = statistics.median(tbf), statistics.median(emulated)
    return {
        "rate": rate,
        "nbytes": nbytes,
        "reps": reps,
        "model_s": model,
        "tbf_s": real,
        "emulated_s": emu,
        "model_error": (model - real) / real,
        "emulated_error": (emu - real) / real,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="100mbit,20mbit")
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nbytes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--link", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="do not write the record")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.nbytes, args.reps, args.link)
        return 0
    if not netns_available():
        print("skipped: needs root and `ip netns add` (network namespaces)", file=sys.stderr)
        return 0
    rows = [
        measure(rate, int(size), args.reps)
        for rate in args.rates.split(",")
        for size in args.sizes.split(",")
    ]
    print("| rate | all-reduce size | tc tbf (measured) | ddla emulated | model | model error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rate']} | {r['nbytes'] / 1e6:g} MB | {r['tbf_s']:.3f} s | "
            f"{r['emulated_s']:.3f} s | {r['model_s']:.3f} s | {r['model_error']:+.1%} |"
        )
    if not args.no_record:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        record = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "git_sha": sha,
            "machine": {
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
            },
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agents": 2,
            "rows": rows,
        }
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        print(f"record: {RECORD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
