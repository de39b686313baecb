"""Imported once by the warm server (:mod:`ddla.warm`) before it forks any agent.

Everything an agent would import on its way to the first step and the first evaluation, and
the server's own environment and streams as it started (to tell, in a forked agent, what the
elastic agent set for that worker).
"""

from __future__ import annotations

import os

from ddla.warm import _identity

SERVER_ENV: dict[str, str] = dict(os.environ)


#: The server's stdout/stderr (device, inode): a forked agent's stream that is still one of
#: these was not redirected by the elastic agent, so it gets the launcher's instead.
SERVER_STDIO: dict[int, tuple[int, int] | None] = {fd: _identity(fd) for fd in (1, 2)}

# Imported for their side effect: loaded modules that forked agents inherit.
import torch  # noqa: E402
import torch._dynamo  # noqa: E402, F401  # the first Optimizer.step imports it (torch.optim)
import torchmetrics.classification  # noqa: E402, F401  # the evaluator's first evaluation

import ddla.agent  # noqa: E402, F401
