"""``ddla merge``: fuse several trained models into one, and score every input and the result.

    ddla merge runs/a runs/b --method average --out merged/
    ddla merge runs/fed --method greedy-soup --out soup/     (a run with train.keep_agent_models)

The test set is split once (seeded): ``--heldout`` of it is the held-out set that
``greedy-soup`` and ``best`` choose by, the rest is where the table's test figures come from, so
the choice never sees the rows it is judged on. Writes ``OUT/model.safetensors`` + ``model.json``
(the ensemble model file for ``--method ensemble``; the inputs' preprocessing transform beside
it) and ``OUT/merge.json`` (method, inputs, chosen, every row of the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

METHOD_HELP = "average | weighted | ensemble | greedy-soup | best"


def merge_cmd(
    inputs: Annotated[
        list[Path], typer.Argument(help="Run directories or model.safetensors files (2+ models).")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the merged model.")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "average",
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the models').")] = None,
    root: Annotated[str | None, typer.Option(help="Dataset directory.")] = None,
    size: Annotated[int | None, typer.Option(help="MNIST-1D size the models used.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the dataset split and held-out draw.")] = 0,
    heldout: Annotated[
        float, typer.Option(help="Fraction of the test set held out for choosing.")
    ] = 0.5,
) -> None:
    """Fuse models (average, weighted, ensemble, greedy-soup, best); compare all in one table."""
    from ddla.cli import console

    result = merge(
        inputs, out=out, method=method, dataset=dataset, root=root, size=size, seed=seed,
        heldout=heldout,
    )  # fmt: skip
    console.print(merge_table(result))
    console.print(f"merged model: {result['model_path']}")


def merge(
    inputs: list[Path],
    *,
    out: Path,
    method: str = "average",
    dataset: str | None = None,
    root: str | None = None,
    size: int | None = None,
    seed: int = 0,
    heldout: float = 0.5,
) -> dict[str, Any]:
    """The command's work (importable): fuse, evaluate, write ``OUT``; return ``merge.json``."""
    import torch

    from ddla.commands.testdata import model_test_set
    from ddla.errors import ConfigError
    from ddla.models import save_model
    from ddla.models.config import ModelConfig
    from ddla.models.fusion.inputs import load_members
    from ddla.models.fusion.methods import METHODS, fuse
    from ddla.runfiles import atomic_write_json
    from ddla.tasks import get_task

    if method not in METHODS:
        raise ConfigError(
            f"--method: unknown merge method {method!r}",
            help=f"choose one of: {', '.join(METHODS)}",
        )
    if not 0.0 < heldout < 1.0:
        raise ConfigError(f"--heldout must be in (0, 1), got {heldout}")
    members = load_members(inputs)
    first = members[0]
    if first.meta.get("architecture") == "custom":
        raise ConfigError(
            f"{first.name} holds a custom model",
            help="merge it in Python: ddla.models.fusion.methods.fuse with your loaded modules",
        )
    name, x, y, num_classes = model_test_set(
        first.path, first.meta, dataset=dataset, root=root, size=size, seed=seed
    )
    task = get_task(first.meta.get("task", "classification"))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = max(1, min(len(y) - 1, round(heldout * len(y))))
    held, test = order[:cut], order[cut:]

    def score(module: torch.nn.Module, rows: torch.Tensor) -> dict[str, float]:
        module.eval()
        return task.evaluate(module, x[rows], y[rows], num_classes=num_classes)

    fused = fuse(method, members, score=lambda m: score(m, held)["accuracy"])
    rows = [
        {"model": m.name, "heldout_accuracy": score(m.module, held)["accuracy"],
         **score(m.module, test)}
        for m in members
    ]  # fmt: skip
    rows.append(
        {"model": f"merged ({method})", "heldout_accuracy": score(fused.module, held)["accuracy"],
         **score(fused.module, test)}
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {
        "task": task.name,
        "merge": {"method": method, "inputs": [m.name for m in members], "chosen": fused.chosen},
    }
    if fused.ensemble:
        extra["ensemble"] = {"members": len(fused.chosen)}
    model_path = save_model(
        out / "model.safetensors",
        fused.module,
        model_config=ModelConfig(**first.meta["architecture"]),
        input_shape=tuple(first.meta["input_shape"]),
        classes=tuple(first.meta["classes"]),
        dataset=first.meta["dataset"],
        extra=extra,
        preprocess=first.transform,
    )
    result = {
        "method": method,
        "inputs": [str(p) for p in inputs],
        "models": [m.name for m in members],
        "chosen": fused.chosen,
        "weights": fused.weights,
        "soup_steps": fused.steps,
        "dataset": name,
        "heldout_rows": len(held),
        "test_rows": len(test),
        "rows": rows,
        "model_path": str(model_path),
    }
    atomic_write_json(out / "merge.json", result)
    return result


def merge_table(result: dict[str, Any]) -> Any:
    """The inputs and the merged model side by side (rich Table)."""
    from rich.table import Table

    table = Table(
        title=f"ddla merge --method {result['method']} on {result['dataset']} "
        f"({result['heldout_rows']} held-out / {result['test_rows']} test rows)"
    )
    table.add_column("model")
    table.add_column("held-out acc", justify="right")
    for key in ("accuracy", "f1", "loss"):
        table.add_column(f"test {key}", justify="right")
    picks = result["method"] in ("greedy-soup", "best")
    chosen = set(result["chosen"]) if picks else set()
    for row in result["rows"]:
        mark = " *" if row["model"] in chosen else ""
        table.add_row(
            row["model"] + mark,
            f"{row['heldout_accuracy']:.2%}",
            f"{row['accuracy']:.2%}",
            f"{row['f1']:.2%}",
            f"{row['loss']:.4f}",
        )
    return table
