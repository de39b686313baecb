"""Profiling a run: torch.profiler traces per agent with ddla's own spans (``--profile``).

``ddla run --profile`` (or ``--set profile.steps=A:B``) records a ``torch.profiler`` trace on
every agent over a window of steps. ddla marks its own work in that trace with user
annotations (``torch.profiler.record_function``) from one place each: ``ddla.compute`` around
every step of the loop, ``ddla.sync.<strategy>`` around the strategy's synchronization, and
``ddla.comm.<op>`` around every Transport call (from the Transport's seam, with bytes, peer,
tag and modelled link time added to the span's ``args`` at export), ``ddla.wait`` where an
agent blocks on a peer outside a transfer. The result:

- ``OUT/profile/agentN.json``: each agent's Chrome trace (Perfetto, chrome://tracing);
- ``OUT/profile/merged.json``: all agents on one time axis (one process row per agent);
- ``OUT/profile/timeline.json``: the ddla spans per agent, with compute / communication /
  waiting split and link time modelled vs measured, that ``ddla report`` draws.

This package imports no torch at import time: ``torch.profiler`` is imported by
:mod:`ddla.profile.session` only when a run profiles.

Example:
    >>> from ddla.profile.config import ProfileConfig
    >>> ProfileConfig(steps="5:15").window(total_steps=100)
    (5, 15)
"""

from ddla.profile.config import ProfileConfig, parse_steps

__all__ = ["ProfileConfig", "parse_steps"]
