"""The issue's spellings of two federated settings, accepted beside ours.

Issue 13 names FedProx ``fedprox:MU`` (the strategy with its μ) and the Byzantine test bed
``fault.byzantine``; ddla's settings are ``sync.strategy=fedprox`` with ``fed.mu`` (every
strategy's knobs live in their own fields, so a run file lists them once) and
``fed.byzantine`` (it is a property of the federated clients, checked with the other
``fed.*`` settings). :func:`normalize` rewrites the first spellings into the second before a
run's settings are built; giving both spellings with different values is refused.

Example:
    >>> normalize({"sync": {"strategy": "fedprox:0.1"}, "fault": {"byzantine": "2:signflip"}})
    {'sync': {'strategy': 'fedprox'}, 'fault': {}, 'fed': {'mu': 0.1, 'byzantine': '2:signflip'}}
"""

from __future__ import annotations

from typing import Any

from ddla.errors import ConfigError


def _move(values: dict[str, Any], key: str, value: Any, spelled: str) -> None:
    fed = values.setdefault("fed", {})
    if not isinstance(fed, dict):
        return  # _build refuses a non-mapping section with its own message
    if key in fed and fed[key] != value:
        raise ConfigError(
            f"{spelled} and fed.{key}={fed[key]!r} disagree",
            help=f"give one of them (fed.{key} is ddla's name for it)",
        )
    fed[key] = value


def normalize(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (nested settings) with ``sync.strategy=fedprox:MU`` and ``fault.byzantine``
    rewritten to ``sync.strategy=fedprox`` + ``fed.mu`` and ``fed.byzantine`` (in place)."""
    sync = values.get("sync")
    if isinstance(sync, dict) and isinstance(sync.get("strategy"), str):
        name, sep, mu = sync["strategy"].partition(":")
        if sep and name.strip() == "fedprox":
            try:
                value = float(mu)
            except ValueError:
                raise ConfigError(
                    f"sync.strategy={sync['strategy']!r}: MU must be a number",
                    help="write fedprox:MU, e.g. fedprox:0.01 (or fed.mu=0.01)",
                ) from None
            sync["strategy"] = "fedprox"
            _move(values, "mu", value, f"sync.strategy={name}:{mu}")
    fault = values.get("fault")
    if isinstance(fault, dict) and "byzantine" in fault:
        spec = fault.pop("byzantine")
        _move(values, "byzantine", spec, f"fault.byzantine={spec!r}")
    return values
