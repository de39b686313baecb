"""Resident memory of a federated agent as the client count M grows (1,000 and 10,000).

One real agent process per point (``ddla.testing.run_agents``), Fashion-MNIST with the paper's
2NN (784-200-200-10, D = 199,210), C = 0.01, E = 1, B = 10, 3 rounds; the figure is the peak RSS
(psutil) during the rounds minus the RSS before the federated Compute was built, so it counts
what the clients and their state cost. SCAFFOLD writes one 0.8 MB c_i per trained client to
disk (``state_written_mb``), none of it resident. The same measurement is
``tests/fed/test_memory.py``.

    nice -n 10 .venv/bin/python benchmarks/fed_memory.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.records import write_record
from ddla.testing import run_agents
from tests.fed.test_memory import _grow


def main() -> None:
    rows = []
    for strategy, clients in (("fedavg", 1_000), ("fedavg", 10_000), ("scaffold", 1_000),
                              ("scaffold", 10_000)):  # fmt: skip
        [res] = run_agents(_grow, 1, clients, strategy, 3, timeout_s=900)
        rows.append({"strategy": strategy, "clients": clients, **res})
        print(rows[-1], flush=True)
    config = {"dataset": "fashion-mnist", "model": "2nn", "fraction": 0.01, "rounds": 3}
    print(write_record("fed_memory", config=config, figures=rows))


if __name__ == "__main__":
    main()
