"""The ``ddla`` command line: thin wrappers that parse, build a RunConfig, and call the library.

ddla run --agents 4 --strategy allreduce --dataset fashion-mnist --model mlp
ddla run --config run.yaml --set sync.every=50
ddla run --resume runs/latest
ddla join --rendezvous 10.0.0.1:29400 --nodes 2 --agents-per-node 2 --config run.yaml
ddla run --launcher ray --agents 2 --dataset digits      (or spark, dask; local is the default)
ddla partition --dataset digits --agents 8 --partition dirichlet:0.3
ddla eval runs/latest/model.safetensors --dataset mnist1d
ddla merge runs/a runs/b --method greedy-soup --out merged/
ddla report runs/latest --tensorboard
ddla bench --strategy allreduce --strategy diloco,sync.every=250 --link wan-100 --target 0.88
ddla keygen --out run.key
ddla audit verify runs/latest
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ddla.commands.merge import merge_cmd
from ddla.errors import DdlaError

app = typer.Typer(
    help="ddla: train one PyTorch model across many agents that each hold part of the data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help and usage errors: typer's rich panels import rich.markdown, markdown_it
    # and pygments (measured 0.4 s of a 0.9 s `ddla --help`); the text is the same.
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn a DdlaError into one ``error:`` line plus a ``help:`` hint and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DdlaError as exc:
            msg, hint = escape(str(exc)), escape(exc.help or "")
            err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
            if hint:
                err_console.print(f"[bold]help:[/] {hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]error:[/] interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _flag_overrides(**flags: Any) -> list[str]:
    """CLI flags as ``a.b=c`` overrides (None means: not given, keep the file's value)."""
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def _metric_rows(table: Table, metrics: dict[str, float]) -> None:
    """A task's metrics: fractions as percentages, loss and perplexity as numbers."""
    for key in ("accuracy", "precision", "recall", "f1"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.2%}")
    if "perplexity" in metrics:
        table.add_row("perplexity", f"{metrics['perplexity']:.3f}")
    table.add_row("loss", f"{metrics['loss']:.4f}")


def summary_table(summary: dict[str, Any]) -> Table:
    from ddla.metrics import human_bytes

    f, c, t = summary["final"], summary["comm"], summary["time"]
    table = Table(
        title=f"ddla run: {summary['strategy']} x{summary['agents']} on {summary['dataset']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    _metric_rows(table, f)
    for site in summary.get("sites") or []:  # the global model on each site's own test data
        table.add_row(
            f"site {site['site']} accuracy / f1", f"{site['accuracy']:.2%} / {site['f1']:.2%}"
        )
    budget = summary.get("budget")
    if budget:
        table.add_row(
            "budget",
            f"{budget['steps']} steps, {budget['epochs']:.3g} epochs ({budget['source']})",
        )
    else:
        table.add_row("steps", str(summary["steps"]))
    table.add_row("bytes sent (all agents)", human_bytes(c["bytes_sent"]))
    table.add_row("bytes received (all agents)", human_bytes(c["bytes_received"]))
    link = summary.get("link") or {}
    clock = f" ({link['clock']} clock)" if link.get("clock") else ""
    if link.get("profile", "lan") != "lan":
        table.add_row("link", str(link["profile"]))
    table.add_row("wall time", f"{t['wall_s']:.1f} s{clock}")
    table.add_row("compute / comm time", f"{t['compute_s']:.1f} s / {t['comm_s']:.1f} s")
    table.add_row("model", summary["model_path"])
    return table


@app.command()
@guarded
def run(
    agents: Annotated[int | None, typer.Option(help="Number of local agents (default 4).")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="allreduce, local_sgd, diloco, streaming_diloco, asynchronous param_server "
            "(sync.servers, sync.staleness), decentralized gossip (sync.topology), or federated "
            "fedavg, fedsgd, fedprox, fedavgm, fedadam, fedyogi, scaffold "
            "(with fed.clients; default allreduce; periodic ones sync every sync.every steps, "
            "default 20/100/100)."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="digits, mnist1d, fashion-mnist, npz:PATH; text: python-stdlib or text:PATH "
            "(default mnist1d)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="mlp, cnn or gpt (default mlp).")] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            help="iid, dirichlet:A, shards:K (or pathological:K), quantity:A or contiguous "
            "(default auto: iid, "
            "contiguous for text)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps per agent (default: --epochs, else the dataset's default "
            "budget, else 600)."
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(help="Passes over the whole training set by all agents (instead of --steps)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per agent per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of the local optimizer.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights, split and batches.")] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (default runs/latest).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML run file.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any setting: --set sync.every=50 (repeatable)."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its checkpoint.")
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N steps.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the live progress bar.")] = True,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also write TensorBoard files under OUT/tb.")
    ] = False,
    launcher: Annotated[
        str | None,
        typer.Option(
            help="Engine that starts the agents: local (default), ray, spark or dask "
            "(launch.engine; a cluster: --set launch.address=... or launch.master=...)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Use an --out that holds a finished run or other files: they are moved "
            "aside to OUT.previous-STAMP (never deleted) once the new run is known to start.",
        ),
    ] = False,
    report: Annotated[
        bool, typer.Option(help="Draw the plots and report.html after the run (sweeps: off).")
    ] = True,
    timing: Annotated[
        bool, typer.Option("--timing", help="Print where the start-up time went, by phase.")
    ] = False,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Record torch.profiler traces with ddla's spans under OUT/profile/ "
            "(steps 0:20; choose with --set profile.steps=A:B).",
        ),
    ] = False,
) -> None:
    """Train with N agents on this machine (4 agents on mnist1d by default)."""
    if launcher in (None, "local") and "TORCHELASTIC_RUN_ID" not in os.environ:
        from ddla import warm

        warm.start()  # first: the agents' imports overlap the launcher's own (ddla.warm)
    from ddla.launch import launch, write_run_report

    overrides = _flag_overrides(
        agents=agents,
        out=out,
        tensorboard="true" if tensorboard else None,
        **{
            "profile.enabled": "true" if profile else None,
            "launch.engine": launcher,
            "sync.strategy": strategy,
            "data.dataset": dataset,
            "model.name": model,
            "data.partition": partition,
            "train.steps": steps,
            "train.epochs": epochs,
            "data.batch_size": batch_size,
            "optim.lr": lr,
            "train.seed": seed,
            "train.eval_every": eval_every,
            "train.checkpoint_every": checkpoint_every,
        },
    )
    summary = launch(
        config_file=config,
        overrides=[*overrides, *(set_ or [])],
        resume=resume,
        force=force,
        progress=progress,
        report=False,
    )
    if not summary:  # an agent of rank > 0 under torchrun: rank 0 reports the run
        return
    # The result first: summary.json and the model are on disk; the report comes after.
    console.print(summary_table(summary))
    if timing:
        console.print(timing_table(summary))
    if report:
        page = write_run_report(Path(summary["model_path"]).parent)
        if page is not None:
            console.print(f"report: {page}")


def timing_table(summary: dict[str, Any]) -> Table:
    """``--timing``: seconds of each start-up phase, up to the end of the first step."""
    t = summary.get("time", {})
    table = Table(title=f"start-up: {t.get('startup_s') or 0:.2f} s to the end of the first step")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for phase, seconds in (t.get("startup") or {}).items():
        table.add_row(phase, f"{seconds:.3f}")
    return table


@app.command()
@guarded
def join(
    rendezvous: Annotated[
        str, typer.Option(help="HOST:PORT of the first machine; the same on every machine.")
    ],
    nodes: Annotated[int, typer.Option(help="Number of machines in the run.")],
    agents_per_node: Annotated[int, typer.Option(help="Agents on this machine.")] = 1,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML run file.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any setting: --set sync.every=50 (repeatable)."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="This machine's run directory.")] = None,
    run_id: Annotated[str, typer.Option(help="Name of the run; the same on every machine.")] = (
        "ddla"
    ),
    host: Annotated[
        bool | None,
        typer.Option(
            "--host/--no-host",
            help="Host the rendezvous here (default: when the endpoint is this machine's).",
        ),
    ] = None,
    local_addr: Annotated[
        str | None,
        typer.Option(help="Address to advertise (default: the one routing to the endpoint)."),
    ] = None,
    ifname: Annotated[
        str | None,
        typer.Option(help="gloo's network interface (default: the one holding --local-addr)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the live progress bar.")] = True,
) -> None:
    """Run this machine's agents of a run across machines (one command on each machine)."""
    from ddla import warm

    warm.start()  # first: the agents' imports overlap the rendezvous set-up (ddla.warm)
    from ddla.launch.nodes import join as join_run
    from ddla.launch.nodes import node_summary_line

    overrides = [*([f"out={out}"] if out else []), *(set_ or [])]
    result = join_run(
        rendezvous=rendezvous, nodes=nodes, agents_per_node=agents_per_node, config_file=config,
        overrides=overrides, run_id=run_id, is_host=host, local_addr=local_addr, ifname=ifname,
        progress=progress,
    )  # fmt: skip
    if "final" in result:
        console.print(summary_table(result))
        console.print(f"report: {Path(result['model_path']).parent / 'report.html'}")
    else:
        console.print(node_summary_line(result), soft_wrap=True, highlight=False)


@app.command("partition")
@guarded
def partition_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset to split.")] = "mnist1d",
    agents: Annotated[int, typer.Option(help="Number of agents.")] = 4,
    partition: Annotated[
        str,
        typer.Option(
            help="auto, iid, dirichlet:A, shards:K, quantity:A, contiguous (auto: iid for "
            "labelled data, contiguous for text)."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    root: Annotated[str | None, typer.Option(help="Dataset directory.")] = None,
    source: Annotated[
        str | None,
        typer.Option(help="Per-agent files instead (as data.source): their real histograms."),
    ] = None,
) -> None:
    """Show how a dataset would be split across agents (per-agent class histogram; for a
    text corpus, windows per document)."""
    from ddla.config import RunConfig
    from ddla.data import load_dataset, partition_table
    from ddla.data import partition as split
    from ddla.tasks import get_task, resolve_partition

    if source is not None:
        console.print(_sources_table(source, agents, seed))
        return

    cfg = RunConfig.load(
        None,
        _flag_overrides(
            agents=agents,
            **{"data.dataset": dataset, "data.partition": partition, "data.root": root},
        ),
    )
    ds = load_dataset(cfg.data.dataset, root=cfg.data.root, seed=seed)
    task = get_task(getattr(ds, "task", "classification"))
    # A text corpus is split by document: show windows per document instead of per token.
    labels = getattr(ds, "partition_labels", ds.y_train).numpy()
    names = getattr(ds, "documents", ds.classes)
    parts = split(resolve_partition(cfg.data.partition, task), labels, cfg.agents, seed)
    console.print(partition_table(parts, labels, names))


def _sources_table(source: str, agents: int, seed: int) -> Table:
    """Per-agent class histogram of ``data.source`` files, from the agreement's own counts."""
    import itertools

    import numpy as np

    from ddla.data import partition_table
    from ddla.data.sources import check_agreement, describe_site, load_site, site_path

    records = []
    for rank in range(agents):
        path = site_path(source, rank=rank, world=agents, node=0)
        records.append(describe_site(load_site(path, seed=seed), None, str(path)))
    agreement = check_agreement(records)
    counts = np.asarray(agreement.counts)
    labels = np.concatenate([np.repeat(np.arange(len(row)), row) for row in counts])
    bounds = np.cumsum([0, *counts.sum(axis=1)])
    parts = [np.arange(a, b) for a, b in itertools.pairwise(bounds)]
    return partition_table(parts, labels, agreement.classes, title=f"Data at each agent ({source})")


@app.command("eval")
@guarded
def eval_cmd(
    model_path: Annotated[Path, typer.Argument(help="model.safetensors written by ddla run.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the model's).")] = None,
    root: Annotated[str | None, typer.Option(help="Dataset directory.")] = None,
    size: Annotated[
        int | None, typer.Option(help="MNIST-1D size the model was trained on.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed the dataset split used.")] = 0,
) -> None:
    """Evaluate a saved model on a dataset's test set (a classifier: accuracy, precision,
    recall, F1; a language model: loss, perplexity, next-token accuracy)."""
    from ddla.commands.testdata import model_test_set
    from ddla.models import load_model
    from ddla.tasks import get_task

    module, meta = load_model(model_path)  # an ensemble (ddla merge) loads as one module
    task = get_task(meta.get("task", "classification"))
    # Through the model's saved data.preprocess transform, as it was trained.
    name, x, y, num_classes = model_test_set(
        model_path, meta, dataset=dataset, root=root, size=size, seed=seed
    )
    m = task.evaluate(module, x, y, num_classes=num_classes)
    table = Table(title=f"{model_path} on {name} ({len(y)} test samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    _metric_rows(table, m)
    console.print(table)


app.command("merge")(guarded(merge_cmd))  # body in ddla/commands/merge.py


@app.command("report")
@guarded
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by ddla run.")],
    tensorboard: Annotated[
        bool, typer.Option(help="Also write TensorBoard event files under RUN_DIR/tb.")
    ] = False,
) -> None:
    """Draw a run's plots and write its self-contained report.html (and TensorBoard files)."""
    from ddla.report import write_report

    page = write_report(run_dir)
    console.print(f"report: {page}")
    if tensorboard:
        from ddla.metrics.tensorboard import export_run

        console.print(f"tensorboard: tensorboard --logdir {export_run(run_dir)}")


@app.command("bench")
@guarded
def bench_cmd(
    strategy: Annotated[
        list[str],
        typer.Option(
            help="STRATEGY[,section.key=value,...] (repeatable; the first is the baseline)."
        ),
    ],
    target: Annotated[float, typer.Option(help="Target accuracy of the global model.")] = 0.88,
    link: Annotated[
        str | None, typer.Option(help="Link profile: lan, dc, wan, wan-100, edge or RATE:DELAY.")
    ] = None,
    link_overrides: Annotated[
        str | None, typer.Option(help="Agents behind other links, e.g. 3=edge.")
    ] = None,
    clock: Annotated[
        str,
        typer.Option(
            help="virtual (modelled link time, no sleeping), virtual-cpu (and compute as CPU "
            "time, as on a dedicated core) or real (sleeps)."
        ),
    ] = "virtual",
    agents: Annotated[int | None, typer.Option(help="Number of local agents.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset of every run.")] = None,
    model: Annotated[str | None, typer.Option(help="Model of every run.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps per agent.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N steps.")] = None,
    out: Annotated[Path, typer.Option(help="Bench directory.")] = Path("runs/bench"),
    config: Annotated[Path | None, typer.Option(help="YAML or TOML run file.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any setting of every run (repeatable)."),
    ] = None,
) -> None:
    """Run several strategies on one workload under one link, and compare them side by side."""
    from ddla.bench import markdown_table, parse_entry, run_bench

    overrides = _flag_overrides(
        agents=agents,
        **{
            "comm.link": link,
            "comm.link_overrides": link_overrides,
            "comm.clock": clock,
            "data.dataset": dataset,
            "model.name": model,
            "train.steps": steps,
            "train.eval_every": eval_every,
        },
    )
    record = run_bench(
        [parse_entry(s) for s in strategy],
        out=out,
        target=target,
        overrides=[*overrides, *(set_ or [])],
        config_file=config,
    )
    console.print(markdown_table(record))
    console.print(f"record: {out / 'bench.json'}  plot: {out / 'bench.png'}")


@app.command()
@guarded
def keygen(
    out: Annotated[Path, typer.Option(help="Where to write the run secret.")] = Path("ddla.key"),
    force: Annotated[bool, typer.Option(help="Replace an existing secret file.")] = False,
) -> None:
    """Create a run secret (32 random bytes, file mode 0600) that every agent must hold."""
    from ddla.security.secret import fingerprint, load_secret, write_secret

    path = write_secret(out, overwrite=force)
    console.print(f"wrote run secret {path} (fingerprint {fingerprint(load_secret(path))})")
    console.print(f"use it: --set security.enabled=true --set security.secret_file={path}")


audit_app = typer.Typer(help="Inspect a run's hash-chained audit logs.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
@guarded
def audit_verify(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (--out of ddla run).")],
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Run secret: also check the MACs ($DDLA_SECRET[_FILE] work too)."),
    ] = None,
) -> None:
    """Check that no audit line or whole log was edited, reordered, removed, copied or swapped."""
    import os

    from ddla.errors import SecurityError
    from ddla.security.audit import verify
    from ddla.security.secret import ENV_SECRET, ENV_SECRET_FILE, load_secret

    has_env = os.environ.get(ENV_SECRET) or os.environ.get(ENV_SECRET_FILE)
    secret = load_secret(secret_file) if secret_file or has_env else None
    report = verify(run_dir, secret=secret)
    for path, lines in report.files.items():
        console.print(f"{path}: {lines} lines", highlight=False)
    for problem in report.problems:
        err_console.print(f"[bold red]{problem}[/]", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise SecurityError(
            f"audit log of {run_dir} failed verification ({len(report.problems)} problem(s))",
            help="each line or log named above was altered, removed, copied or swapped after "
            "it was written",
        )
    checked = "hashes and MACs" if report.macs_checked else "hashes (pass --secret-file for MACs)"
    console.print(f"audit log intact: {checked} verified")


def main() -> None:
    """Console-script entry point: run the command, then exit without the interpreter teardown."""
    from ddla.fast_exit import exit_now

    try:
        code: object = app()
    except SystemExit as exc:
        code = exc.code
    exit_now(code)


if __name__ == "__main__":
    main()
