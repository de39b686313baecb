"""Bytes of a secure (masked) mean against the unmasked compressed mean, per compressor.

Real gloo agents average one pseudo-gradient of the Fashion-MNIST MLP (784-256-256-10, 269,322
values) through :class:`ddla.aggregate.Aggregator`, once unmasked and once masked, for every
``sync.compress`` that secure aggregation accepts; the Transport counts the bytes each agent
sends (exact, not timed), and the record gives masked / unmasked per spec and agent count.

    python benchmarks/secure_bytes.py --agents 2 4 8
"""

from __future__ import annotations

import argparse

import torch
from records import write_record
from rich.console import Console
from rich.table import Table

from ddla.aggregate import Aggregator, Protection
from ddla.compress import build_compressor
from ddla.security.identity import handshake
from ddla.security.secagg import SecureAggregator
from ddla.testing import run_agents

SPECS = ["none", "fp16", "bf16", "int8", "int4"]
MLP = [(256, 784), (256,), (256, 256), (256,), (10, 256), (10,)]


def _agent(transport) -> dict[str, dict[str, int]]:
    session = handshake(
        transport.store, prefix="bench", rank=transport.rank,
        world_size=transport.world_size, secret=b"b" * 32, timeout_s=60,
    )  # fmt: skip
    masking = SecureAggregator(session)
    gen = torch.Generator().manual_seed(transport.rank)
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in MLP]
    out: dict[str, dict[str, int]] = {}
    for spec in SPECS:
        for secure in (False, True):
            tag = f"{spec}-{'masked' if secure else 'plain'}"
            agg = Aggregator(
                transport,
                compressor=build_compressor(spec),
                protection=Protection(masking=masking if secure else None),
            )
            agg.mean(grads, tag=tag)
            out.setdefault(spec, {})[tag.split("-")[1]] = int(
                transport.stats.totals(tag)["bytes_sent"]
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    figures: dict[str, dict[str, dict[str, float]]] = {}
    table = Table(title="bytes sent per agent for one mean of 269,322 values")
    table.add_column("agents")
    for spec in SPECS:
        table.add_column(f"{spec}\nplain -> masked")
    for world in args.agents:
        res = run_agents(_agent, world, timeout_s=600)[0]
        figures[str(world)] = {
            spec: {**res[spec], "ratio": res[spec]["masked"] / res[spec]["plain"]} for spec in SPECS
        }
        table.add_row(
            str(world),
            *(
                f"{res[s]['plain'] / 1e3:,.0f} kB -> {res[s]['masked'] / 1e3:,.0f} kB "
                f"({res[s]['masked'] / res[s]['plain']:.2f}x)"
                for s in SPECS
            ),
        )
    Console().print(table)
    path = write_record(
        "secure_bytes",
        config={"agents": args.agents, "values": sum(torch.Size(s).numel() for s in MLP)},
        figures=figures,
    )
    print(f"record: {path}")


if __name__ == "__main__":
    main()
