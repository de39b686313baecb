"""Evaluation during a run: each agent's model and the merged global model, and the summary.

Every agent evaluates its own model on the test set and the rows are gathered on rank 0, which
also evaluates the average of all agents' parameters (the global model) and writes one JSONL
line per agent plus one ``"global"`` line. Evaluation traffic is tagged ``eval`` so it never
counts as a strategy's cost.

What is measured is the job's task's business (:mod:`ddla.tasks`): a classifier gets
accuracy, macro precision/recall/F1 and loss, a language model validation loss, perplexity
and next-token accuracy.

With per-site test sets (data that lives at each agent; classification only) every agent also
evaluates the global model on its own test data: one ``"agent": "site<r>"`` line per site.
Without a shared test set the ``"global"`` line is the union of the sites' test data, computed
from their summed confusion matrices and loss sums (counts travel, never samples), which
equals evaluating on the concatenated test sets.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddla.metrics.meters import evaluate_counts, metrics_from_counts

if TYPE_CHECKING:
    from ddla.aggregate import Aggregator
    from ddla.comm import Transport
    from ddla.config import RunConfig
    from ddla.job import Job
    from ddla.metrics.sinks import JsonlSink
    from ddla.metrics.tensorboard import TeeSink
    from ddla.metrics.timer import AgentTimer

log = logging.getLogger("ddla.agent")


def agent_row(
    step: int, rank: int, metrics: dict[str, float], transport: Transport, timer: AgentTimer
) -> dict[str, Any]:
    totals = transport.stats.totals("train")
    return {
        "step": step,
        "agent": rank,
        **metrics,
        "bytes_sent": int(totals["bytes_sent"]),
        "bytes_received": int(totals["bytes_received"]),
        "wall_s": round(timer.wall_s(), 4),
        "compute_s": round(timer.compute_s, 4),
        "comm_s": round(timer.comm_s(), 4),
        "link_s": round(timer.link_s(), 4),
        "wait_s": round(timer.wait_s(), 4),
        "train_s": round(timer.train_s, 4),
        "train_cpu_s": round(timer.train_cpu_s, 4),
    }


class Evaluator:
    """Per-agent and global (merged-model) evaluation; rank 0 writes the JSONL lines."""

    def __init__(
        self,
        job: Job,
        config: RunConfig,
        aggregator: Aggregator,
        sink: JsonlSink | TeeSink | None,
        *,
        site_test: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """``aggregator`` merges the agents' models (masked when secure aggregation is on)."""
        self.job, self.config, self.sink = job, config, sink
        self.aggregator = aggregator
        self.task = job.task_spec
        self.site_test = site_test
        self.global_model = copy.deepcopy(job.model)
        self.merged_state: dict[str, torch.Tensor] = {}
        self.last: dict[str, Any] = {}
        from ddla.sync import STRATEGIES  # late: the strategies import the metrics

        #: A federated round ends with every agent holding the new global model, so between
        #: rounds an agent's model IS the merged one: intermediate evaluations skip evaluating
        #: it again per agent and the parameter all-reduce that would average N equal copies
        #: (measured: most of a round's non-training wall on the Flower workload, see
        #: docs/benchmarks.md), and the agents score the global model on a slice of the shared
        #: test set each (:meth:`_shard_counts`). The final evaluation (``final=True``) does
        #: neither, so summary.json and the final model hash are computed exactly as for every
        #: other strategy.
        self.models_agree = bool(getattr(STRATEGIES.get(config.sync.strategy), "federated", False))

    @property
    def transport(self) -> Transport:
        """The aggregator's Transport (a new one after a membership change)."""
        return self.aggregator.transport

    def _site_row(self, step: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The global model on this site's own test data, plus the counts for the union."""
        if self.site_test is None:
            return None
        x, y = self.site_test
        nc = self.job.num_classes
        counts = evaluate_counts(self.global_model, x, y, num_classes=nc)
        row = {"step": step, "agent": f"site{self.transport.rank}", "site": self.transport.rank}
        metrics = self.task.evaluate(self.global_model, x, y, num_classes=nc)
        return row | metrics | {"samples": len(y)}, counts

    def _shard_counts(
        self, shared: tuple[torch.Tensor, torch.Tensor] | None
    ) -> dict[str, Any] | None:
        """This agent's share of scoring the global model on the shared test set, when every
        agent holds the global model (federated rounds): each scores one contiguous slice and
        rank 0 merges the confusion matrices, so the evaluation's wall on the round's critical
        path is 1/N of it (classification only: the counts are its sufficient statistic)."""
        if shared is None or self.task.name != "classification":
            return None
        rank, world = self.transport.rank, self.transport.world_size
        x, y = (torch.tensor_split(t, world)[rank] for t in shared)
        return evaluate_counts(self.global_model, x, y, num_classes=self.job.num_classes)

    def __call__(
        self, step: int, model: torch.nn.Module, timer: AgentTimer, *, final: bool = False
    ) -> dict[str, Any]:
        spans = getattr(self.transport, "spans", None)
        if spans is None or not spans.active:
            return self._evaluate(step, model, timer, final)
        with spans.span("ddla.eval", step=step):  # a profile shows evaluation as such
            return self._evaluate(step, model, timer, final)

    def _evaluate(
        self, step: int, model: torch.nn.Module, timer: AgentTimer, final: bool
    ) -> dict[str, Any]:
        shared = self.job.test
        own = shared if shared is not None else self.site_test
        nc = self.job.num_classes
        evaluate = self.task.evaluate
        agree = self.models_agree and not final
        evaluate_own = self.config.train.eval_agents and own is not None and not agree
        local = evaluate(model, *own, num_classes=nc) if evaluate_own else {}
        row = agent_row(step, self.transport.rank, local, self.transport, timer)
        if agree:  # the agents' models are the global model (see models_agree)
            self.merged_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.merged_state = self.aggregator.average_state(model, tag="eval")
        self.global_model.load_state_dict(self.merged_state)
        site = self._site_row(step)
        part = self._shard_counts(shared) if agree else None
        gathered = self.transport.all_gather_object((row, site, part), tag="eval")
        rows = [r for r, _, _ in gathered]
        sites = [s for _, s, _ in gathered if s is not None]
        if self.transport.rank != 0:
            return {}
        if part is not None:  # every agent scored a slice of the shared test set
            merged = metrics_from_counts([c for _, _, c in gathered])
        elif shared is not None:
            merged = evaluate(self.global_model, *shared, num_classes=nc)
        else:  # the union of the sites' test sets, from their counts
            merged = metrics_from_counts([c for _, c in sites])
        global_row = {
            "step": step,
            "agent": "global",
            **merged,
            "bytes_sent": sum(r["bytes_sent"] for r in rows),
            "bytes_received": sum(r["bytes_received"] for r in rows),
            "wall_s": row["wall_s"],
            "compute_s": max(r["compute_s"] for r in rows),
            "comm_s": max(r["comm_s"] for r in rows),
            "train_s": max(r["train_s"] for r in rows),
        }
        site_rows = [r for r, _ in sites]
        if self.sink is not None:
            if self.config.train.eval_agents:
                for r in rows:
                    self.sink.write(r)
            for r in site_rows:
                self.sink.write(r)
            self.sink.write(global_row)
        self.last = {"global": global_row, "agents": rows, "sites": site_rows}
        head = self.task.headline
        log.info("step %d global %s %.4f loss %.4f", step, head, merged[head], merged["loss"])
        return global_row


def _startup() -> dict[str, Any]:
    from ddla.metrics.startup import phases

    split = phases()
    return {"startup_s": split.pop("total", None), "startup": split}


def build_summary(
    config: RunConfig,
    job: Job,
    evaluator: Evaluator,
    steps: int,
    out: Path,
    *,
    replicas: int | None = None,
) -> dict[str, Any]:
    """summary.json from the last evaluation (a contract: extend it, never rename keys).

    ``replicas``: agents that each take a batch per step (all of them unless the model is
    split into stages or shards, whose agents share a replica's batch)."""
    from ddla.tasks import resolve_partition

    g, rows = evaluator.last["global"], evaluator.last["agents"]
    task = evaluator.task
    world = evaluator.transport.world_size
    train_s = max(r["train_s"] for r in rows)
    samples = steps * config.data.batch_size * (world if replicas is None else replicas)
    per_sample = task.tokens_per_sample(job.input_shape)
    summary = {
        "strategy": config.sync.strategy,
        "agents": world,
        "dataset": job.name,
        "task": task.name,
        "model": config.model.name if job.model_config is not None else "custom",
        "partition": resolve_partition(config.data.partition, task),
        "seed": config.train.seed,
        "steps": steps,
        "final": {k: g[k] for k in task.metrics},
        "comm": {
            "bytes_sent": sum(r["bytes_sent"] for r in rows),
            "bytes_received": sum(r["bytes_received"] for r in rows),
            "per_agent": [
                {"rank": r["agent"]}
                | {
                    k: r[k]
                    for k in (
                        "bytes_sent",
                        "bytes_received",
                        "compute_s",
                        "comm_s",
                        "link_s",
                        "wait_s",
                        "train_s",
                        "train_cpu_s",
                    )
                }
                for r in rows
            ],
        },
        "time": {
            "wall_s": g["wall_s"],
            "compute_s": g["compute_s"],
            "comm_s": g["comm_s"],
            "train_s": train_s,
            **_startup(),
        },
        # All agents together; train_s is the slowest agent's time inside training steps.
        "throughput": {
            "samples_per_s": samples / train_s if train_s > 0 else None,
            "tokens_per_s": samples * per_sample / train_s if train_s > 0 and per_sample else None,
        },
        "model_path": str(out / "model.safetensors"),
        "config": config.to_dict(),
        "sites": [
            {k: r[k] for k in ("site", "accuracy", "precision", "recall", "f1", "loss", "samples")}
            for r in evaluator.last.get("sites", [])
        ],
        "data": job.agreement.to_dict() if job.agreement is not None else None,
        "link": {
            "profile": evaluator.transport.link_description,
            "clock": evaluator.transport.clock.label,
            "modelled_s": evaluator.transport.clock.modelled_s,
        },
    }
    if job.data_info is not None:
        summary["data_info"] = job.data_info
    return summary
