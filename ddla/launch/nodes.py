"""One command per machine: ``ddla join`` runs this machine's agents in a multi-machine run.

The same agent entry point as ``ddla run``, under torch's elastic launcher with a c10d
rendezvous (what ``torchrun`` does), with the three settings that torchrun leaves to the user
worked out from this machine's routing table (:mod:`ddla.launch.netcheck`): whether this node
hosts the rendezvous store, the address it advertises, and the gloo interface. On each of two
machines, the first one at 10.0.0.1::

    ddla join --rendezvous 10.0.0.1:29400 --nodes 2 --agents-per-node 2 --config run.yaml

Global ranks go to nodes in the order of their advertised addresses (torch's c10d
rendezvous), so rank 0, which writes ``summary.json`` and the model, is on the machine whose
address sorts first. Every machine writes its own agents' logs and a ``node.json`` under its
own ``--out``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from ddla.config import RunConfig, read_run_file
from ddla.errors import AgentFailedError, CommError, CommTimeoutError, ConfigError
from ddla.launch.netcheck import NodePlan, plan_node, preflight
from ddla.runfiles import atomic_write_json, plan_fresh_out, start_fresh_run

log = logging.getLogger("ddla.launch")

NODE = "node.json"


def node_agent(config_dict: dict[str, Any], progress: bool) -> dict[str, Any]:
    """One agent of a joined node: the summary on global rank 0, where it ran elsewhere."""
    from ddla.agent import agent_main

    summary = agent_main(config_dict, None, False, None, progress)
    return summary or {"rank": int(os.environ["RANK"]), "master": os.environ["MASTER_ADDR"]}


def _explicit_agents(config_file: str | Path | None, overrides: list[str]) -> int | None:
    """``agents`` as the user set it (run file or --set), None when left to the default."""
    value = None
    if config_file is not None and "agents" in read_run_file(config_file):
        value = read_run_file(config_file)["agents"]
    for item in overrides:
        key, _, raw = item.partition("=")
        if key.strip() == "agents":
            value = raw
    return None if value is None else int(value)


def join_config(
    config_file: str | Path | None, overrides: list[str], *, nodes: int, agents_per_node: int
) -> RunConfig:
    """The run's config on this node; ``agents`` is ``nodes * agents_per_node``."""
    if nodes < 1 or agents_per_node < 1:
        raise ConfigError(
            f"--nodes {nodes} --agents-per-node {agents_per_node}: both must be at least 1",
            help="--nodes is the number of machines, --agents-per-node the agents on this one",
        )
    total = nodes * agents_per_node
    given = _explicit_agents(config_file, overrides)
    if given is not None and given != total:
        raise ConfigError(
            f"agents={given} in the config, but --nodes {nodes} x --agents-per-node "
            f"{agents_per_node} start {total}",
            help="drop agents from the config (ddla join sets it) or change the node counts",
        )
    return RunConfig.load(config_file, [*overrides, f"agents={total}"])


def join(
    *,
    rendezvous: str,
    nodes: int,
    agents_per_node: int = 1,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    run_id: str = "ddla",
    is_host: bool | None = None,
    local_addr: str | None = None,
    ifname: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run this machine's agents of a multi-machine run; return the summary on rank 0's node.

    Elsewhere returns this node's ``node.json`` record (its ranks and where rank 0 ran).
    ``is_host``, ``local_addr`` and ``ifname`` override what :func:`plan_node` works out.
    """
    # The network first: a wrong address is the likeliest mistake and needs nothing else.
    plan = plan_node(rendezvous, nodes=nodes, is_host=is_host, local_addr=local_addr, ifname=ifname)
    cfg = join_config(config_file, overrides or [], nodes=nodes, agents_per_node=agents_per_node)
    print(plan.describe(), file=sys.stderr, flush=True)
    preflight(plan, cfg.comm.timeout_s)
    out = Path(cfg.out)
    # A node's --out is its own scratch: an earlier join there is moved aside, never deleted.
    start_fresh_run(plan_fresh_out(out, force=True, scratch=True), cfg.to_yaml())
    results = _launch_node(cfg, plan, out, run_id, agents_per_node, progress)
    ranks = sorted(results)
    if 0 in results:
        from ddla.launch import write_run_report

        record = _node_record(plan, ranks, plan.local_addr, out)
        atomic_write_json(out / NODE, record)
        write_run_report(out)
        return results[0]
    record = _node_record(plan, ranks, results[ranks[0]]["master"], out)
    atomic_write_json(out / NODE, record)
    return record


def _node_record(plan: NodePlan, ranks: list[int], rank0: str, out: Path) -> dict[str, Any]:
    return {
        "out": str(out),
        "rendezvous": f"{plan.host_ip}:{plan.port}",
        "nodes": plan.nodes,
        "ranks": ranks,
        "rank0_addr": rank0,
        "is_host": plan.is_host,
        "local_addr": plan.local_addr,
        "gloo_ifname": plan.ifname,
    }


def _launch_node(
    cfg: RunConfig, plan: NodePlan, out: Path, run_id: str, k: int, progress: bool
) -> dict[int, Any]:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (
        RendezvousConnectionError,
        RendezvousTimeoutError,
    )
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ddla import warm
    from ddla.launch.local import _agent_failure

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # gloo binds the address of the machine's host name unless told otherwise; that is
    # loopback on many machines. The agents inherit this from us.
    os.environ["GLOO_SOCKET_IFNAME"] = plan.ifname
    rdzv_configs: dict[str, Any] = {"timeout": int(cfg.comm.timeout_s)}
    if plan.is_host is not None:
        rdzv_configs["is_host"] = plan.is_host
    launch_config = LaunchConfig(
        min_nodes=plan.nodes,
        max_nodes=plan.nodes,
        nproc_per_node=k,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=f"{plan.host_ip}:{plan.port}",
        rdzv_configs=rdzv_configs,
        max_restarts=0,
        monitor_interval=0.1,
        start_method=(method := warm.start_method()),
        local_addr=plan.local_addr,
        logs_specs=DefaultLogsSpecs(
            log_dir=str(out / "logs" / "elastic"),
            redirects={0: Std.ERR, **{r: Std.ALL for r in range(1, k)}},
        ),
    )
    try:
        context = warm.LauncherContext.capture() if method == "forkserver" else None
        entry = elastic_launch(launch_config, warm.call)
        return entry(context, node_agent, cfg.to_dict(), progress)
    except ChildFailedError as exc:
        raise _agent_failure(out, exc) from None
    except RendezvousTimeoutError:
        raise CommTimeoutError(
            f"not all {plan.nodes} nodes joined the rendezvous at {plan.host_ip}:{plan.port} "
            f"within {cfg.comm.timeout_s:g} s",
            help="run `ddla join` on every machine with the same --rendezvous, --nodes and "
            "--run-id",
        ) from None
    except RendezvousConnectionError as exc:
        raise CommError(
            f"lost the rendezvous store at {plan.host_ip}:{plan.port}: {exc}",
            help="the hosting machine's `ddla join` stopped; see its console and logs",
        ) from None
    except SignalException as exc:
        raise AgentFailedError(
            f"interrupted by signal {exc.sigval.name}; this machine's agents stopped",
            help="stop `ddla join` on the other machines too, then start them again",
        ) from None


def node_summary_line(record: dict[str, Any]) -> str:
    """What a node that did not hold rank 0 prints at the end."""
    ranks = record["ranks"]
    return (
        f"this node ran agent(s) {', '.join(map(str, ranks))}; logs in {record['out']}/logs. "
        f"The summary and model are on rank 0's machine ({record['rank0_addr']}) under its --out."
    )
