"""Result fusion: many trained models -> one (``ddla merge``).

* :mod:`.inputs` — read run directories (their agents' models, ``train.keep_agent_models``)
  or model files, and refuse models that cannot be fused, naming the first mismatching tensor;
* :mod:`.methods` — ``average``, ``weighted``, ``ensemble``, ``greedy-soup`` (Wortsman et al.
  2022), ``best``;
* :mod:`.ensemble` — the ensemble model (mean of members' probabilities) and its file;
* :mod:`.agents` — the per-agent model files a run keeps.

No imports here: :mod:`ddla.config` imports :mod:`.check`, which must stay light.
"""
