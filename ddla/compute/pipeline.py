"""A pipeline stage: this agent's consecutive layers, microbatches through a GPipe or 1F1B schedule.

The schedule is ``torch.distributed.pipelining``'s own (``ScheduleGPipe``/``Schedule1F1B``)
around a manual ``PipelineStage`` built with static shapes (no tracer front end, no runtime
shape inference, so no message outside the ones below). The stage's activations and their
gradients travel through the pipeline group's :class:`~ddla.comm.Transport` instead of
``torch.distributed.batch_isend_irecv``: :class:`TransportStage` overrides the four methods
that hand the schedule its send/receive ops, runs each op as a Transport ``isend``/``irecv``
(tag ``train``, so bytes are exact and emulated links delay it) and hands the schedule nothing
left to do. Sends start at once and are waited at the end of the step; receives complete before
the schedule uses their buffer, as its own wait would. This is deadlock-free for both schedules
because each send is handed out before the receive the schedule would batch it with.

The schedule averages: each microbatch's loss is a mean and gradients are divided by the
number of microbatches, so a step equals one full-batch step of the unsplit model.

Example (two agents, one stage each; see tests/compute/test_pipeline.py)::

    stage = PipelineCompute(stage=stage_module, index=rank, stages=2, pipe=transport, ...)
    loss = stage(step)          # the last stage's mean loss, on every stage
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from ddla.compute.replica import Batch, OptimizerStep
from ddla.errors import DdlaError

if TYPE_CHECKING:
    from ddla.comm import P2PWork, Transport
    from ddla.sync import Strategy

SCHEDULE_CLASSES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}

#: The ``PipelineStage`` methods :class:`TransportStage` overrides, with their parameters. The
#: two private ones (shape-inference vote of the schedule's first step) are torch internals:
#: a torch whose methods differ would silently send raw messages around the Transport, or
#: call ours with other arguments, so :func:`check_pipelining_api` refuses it up front.
OVERRIDDEN = {
    "get_fwd_recv_ops": ("self", "fwd_chunk_id"),
    "get_bwd_recv_ops": ("self", "bwd_chunk_id"),
    "get_fwd_send_ops": ("self", "fwd_chunk_id"),
    "get_bwd_send_ops": ("self", "bwd_chunk_id"),
    "_warmup_forward_vote": ("self", "has_backward", "received_acc"),
    "_warmup_backward_result": ("self", "received_result"),
}


def check_pipelining_api() -> None:
    """Refuse (one line) a torch whose ``PipelineStage`` lacks, or changed the parameters of,
    a method :class:`TransportStage` overrides (checked with torch 2.13)."""
    import inspect

    for name, params in OVERRIDDEN.items():
        method = getattr(PipelineStage, name, None)
        got = tuple(inspect.signature(method).parameters) if method is not None else None
        if got != params:
            raise DdlaError(
                f"torch {torch.__version__}: torch.distributed.pipelining.PipelineStage."
                f"{name} is {'missing' if got is None else f'now {got}'}, not {params}: "
                "ddla's pipeline stage overrides it and cannot run on this torch",
                help="install the torch ddla's pipeline was checked with (torch==2.13.*), "
                "or run without model.stages",
            )


class TransportStage(PipelineStage):
    """A ``PipelineStage`` whose point-to-point transfers go through a Transport.

    ``pipe`` is the Transport over this replica's stages, stage ``i`` at its rank ``i``.
    Counts the bytes it moved by kind (``activations`` forward, ``gradients`` backward).
    """

    def __init__(self, *args: Any, pipe: Transport, **kwargs: Any) -> None:
        check_pipelining_api()
        super().__init__(*args, group=pipe.group, **kwargs)
        self.pipe = pipe
        self.pending: list[P2PWork] = []
        self.sent = {"activations": 0, "gradients": 0}
        #: Seconds blocked waiting for a peer (receives, and sends at the end of a step): the
        #: stage's share of the pipeline bubble plus transfer time.
        self.wait_s = 0.0

    def _run_ops(self, ops: list[dist.P2POp], kind: str) -> list[dist.P2POp]:
        ranks = list(self.pipe.global_ranks)
        for op in ops:
            peer = ranks.index(op.peer)
            if op.op is dist.isend:
                tensor = op.tensor.contiguous()
                self.pending.append(self.pipe.isend(tensor, dst=peer, tag="train"))
                self.sent[kind] += tensor.numel() * tensor.element_size()
            else:  # a receive: complete it now, before the schedule reads the buffer
                start = time.perf_counter()
                self.pipe.irecv(op.tensor, src=peer, tag="train").wait()
                self.wait_s += time.perf_counter() - start
        return []

    def get_fwd_recv_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        return self._run_ops(super().get_fwd_recv_ops(fwd_chunk_id), "activations")

    def get_bwd_recv_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        return self._run_ops(super().get_bwd_recv_ops(bwd_chunk_id), "gradients")

    def get_fwd_send_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        return self._run_ops(super().get_fwd_send_ops(fwd_chunk_id), "activations")

    def get_bwd_send_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        return self._run_ops(super().get_bwd_send_ops(bwd_chunk_id), "gradients")

    # The schedule's first step runs a warm-up vote (stage 0 -> S-1 and back, raw
    # torch.distributed send/recv) on whether every stage has static shapes. Every ddla stage
    # is built with static shapes (boundary_shapes), so the vote's outcome is known on every
    # agent without the messages; answering locally keeps all traffic on the Transport.
    # These two are private torch methods (torch 2.13): check_pipelining_api, called in
    # __init__, refuses a torch whose methods differ, rather than leaking raw messages.
    def _warmup_forward_vote(self, has_backward: bool, received_acc: Any = None) -> torch.Tensor:
        return torch.ones(1, dtype=torch.int32)

    def _warmup_backward_result(self, received_result: Any = None) -> torch.Tensor:
        return torch.ones(1, dtype=torch.int32)

    def drain(self) -> None:
        """Wait for (and so account) every send started this step."""
        pending, self.pending = self.pending, []
        start = time.perf_counter()
        for work in pending:
            work.wait()
        self.wait_s += time.perf_counter() - start


def boundary_shapes(
    stages: list[torch.nn.Module], example: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) example tensors of each stage for one microbatch ``example``: computed
    locally (every agent holds the whole model's structure), so building a stage needs no
    shape-inference messages."""
    out = []
    x = example
    for i, stage in enumerate(stages):
        # With grad, so the examples say which boundaries carry gradients back.
        inp = x.detach().requires_grad_(i > 0 and x.is_floating_point())
        y = stage(inp)
        out.append(
            (
                inp.detach().requires_grad_(inp.requires_grad),
                y.detach().requires_grad_(y.requires_grad),
            )
        )
        x = y
    return out


class PipelineCompute(OptimizerStep):
    """Stage ``index`` of ``stages``: one schedule step over ``microbatches`` per training step.

    ``module`` is the stage (``strategy.train_model`` runs it: a DDP wrapper when stage replicas
    all-reduce); ``example`` a microbatch's input and output of this stage (see
    :func:`boundary_shapes`).
    """

    name = "pipeline"

    def __init__(
        self,
        *,
        strategy: Strategy,
        optimizer: torch.optim.Optimizer,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch: Callable[[int], Batch],
        pipe: Transport,
        index: int,
        stages: int,
        microbatches: int,
        schedule: str,
        example: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        self.strategy, self.optimizer, self.batch = strategy, optimizer, batch
        self.pipe, self.index, self.stages = pipe, index, stages
        self.microbatches, self.schedule_name = microbatches, schedule
        self.step_s = 0.0  # wall seconds inside steps (this process's real clock)
        self.stage = TransportStage(
            strategy.train_model, index, stages, torch.device("cpu"),
            input_args=example[0], output_args=example[1], pipe=pipe,
        )  # fmt: skip
        # Every stage gets the loss function: the schedule runs backward only when it has one
        # (it is applied on the last stage alone).
        self.schedule = SCHEDULE_CLASSES[schedule](
            self.stage, n_microbatches=microbatches, loss_fn=loss
        )

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.stages - 1

    def __call__(self, step: int) -> torch.Tensor:
        start = time.perf_counter()
        loss = super().__call__(step)  # the strategy synchronizes this stage's replicas
        self.step_s += time.perf_counter() - start
        return loss

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The schedule's forwards and backwards of this stage over the microbatches."""
        losses: list[torch.Tensor] = []
        if self.first:
            self.schedule.step(x)
        elif self.last:
            self.schedule.step(target=y, losses=losses)
        else:
            self.schedule.step()
        self.stage.drain()
        loss = torch.stack(losses).mean().detach() if self.last else torch.zeros(())
        # Only the last stage knows the loss; the progress bar shows rank 0's (a control
        # message: 4 bytes, no training payload).
        self.pipe.broadcast(loss, src=self.stages - 1, tag="control")
        return loss

    def summary(self) -> dict[str, Any]:
        return {"pipeline_bytes_sent": dict(self.stage.sent)}

    def agent_stats(self) -> dict[str, Any]:
        """This stage's bytes sent by kind and its measured idle share of step time."""
        idle = self.stage.wait_s / self.step_s if self.step_s > 0 else None
        return {"pipeline_bytes_sent": dict(self.stage.sent), "idle_fraction": idle}
