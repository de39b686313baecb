"""Per-agent data sources: paths, agreement without moving data, per-site evaluation.

The distributed cases run real gloo agents (``run_agents``) and compare a per-agent-sources run
with the equivalent partition of one file, and the per-site rows with an independent
evaluation of the saved model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddla.agent import train
from ddla.config import RunConfig
from ddla.data import load_dataset, partition
from ddla.data.sources import check_agreement, site_path
from ddla.errors import ConfigError, DataError
from ddla.job import Job, job_from_config, site_job
from ddla.metrics.meters import evaluate, evaluate_counts, metrics_from_counts
from ddla.models import load_model
from ddla.testing import run_agents

BASE = [
    "data.batch_size=16",
    "model.hidden=32",
    "optim.name=sgd",
    "optim.lr=0.1",
    "train.steps=15",
    "train.eval_every=0",
]

# ---------------------------------------------------------------- paths and config


def test_site_path_forms(tmp_path: Path) -> None:
    assert site_path("npz:/d/s-{rank}.npz", rank=3, world=4) == Path("/d/s-3.npz")
    assert site_path("/d/n{node}-l{local_rank}.npz", rank=3, world=4, node=1, local_rank=0) == Path(
        "/d/n1-l0.npz"
    )
    assert site_path("a.npz, b.npz", rank=1, world=2) == Path("b.npz")
    for name in ("b.npz", "a.npz"):
        (tmp_path / name).touch()
    assert site_path(str(tmp_path), rank=0, world=2) == tmp_path / "a.npz"
    with pytest.raises(ConfigError, match=r"lists 2 files for 3 agents"):
        site_path("a.npz,b.npz", rank=0, world=3)
    with pytest.raises(DataError, match=r"holds 2 \.npz files for 4 agents"):
        site_path(str(tmp_path), rank=0, world=4)


def test_config_refuses_unknown_placeholders_and_sharing() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder \{site\}"):
        RunConfig.load(None, ["data.source=npz:/d/{site}.npz"])
    with pytest.raises(ConfigError, match=r"data\.test_source needs data\.source"):
        RunConfig.load(None, ["data.test_source=t.npz"])
    with pytest.raises(ConfigError, match=r"not with data\.source"):
        RunConfig.load(
            None,
            ["data.source=npz:/d/{rank}.npz", "data.share=shared:0.1", "security.enabled=true"],
        )


# ---------------------------------------------------------------- agreement (records only)


def _record(path: str, shape=(4,), dtype="float32", counts=(3, 3), classes=None) -> dict:
    return {
        "path": path,
        "shape": list(shape),
        "dtype": dtype,
        "test_shapes": [list(shape)],
        "classes": classes,
        "counts": list(counts),
        "test_counts": [1, 1],
        "max_test_label": 1,
    }


def test_agreement_names_the_agent_whose_shape_or_dtype_differs() -> None:
    with pytest.raises(DataError, match=r"agent 2 \(c.npz\) has samples of shape \(5,\)"):
        check_agreement([_record("a.npz"), _record("b.npz"), _record("c.npz", shape=(5,))])
    with pytest.raises(DataError, match=r"agent 1 \(b.npz\) has inputs of dtype float64"):
        check_agreement([_record("a.npz"), _record("b.npz", dtype="float64")])
    with pytest.raises(DataError, match=r"agent 1 .* names its classes"):
        check_agreement([_record("a", classes=["x", "y"]), _record("b", classes=["y", "x"])])


def test_agreement_takes_the_union_of_class_ids() -> None:
    # agent 1 holds only class 0..1; agent 0 also class 4: the label space is 0..4
    a = check_agreement([_record("a", counts=(2, 0, 0, 0, 5)), _record("b", counts=(1, 1))])
    assert a.classes == ("0", "1", "2", "3", "4")
    assert a.counts == [[2, 0, 0, 0, 5], [1, 1, 0, 0, 0]]


def test_agreement_reports_a_failed_agent_with_its_path() -> None:
    bad = {"path": "/d/s-1.npz", "error": "dataset file /d/s-1.npz does not exist", "help": None}
    with pytest.raises(DataError, match=r"agent 1 could not load its data \(/d/s-1.npz\)"):
        check_agreement([_record("a"), bad])


def test_metrics_from_counts_equal_torchmetrics_on_the_concatenation() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    # site 0 has no class 3 at all; site 1 only classes 0 and 1
    parts = [
        (torch.randn(40, 6), torch.randint(0, 3, (40,))),
        (torch.randn(25, 6), torch.randint(0, 2, (25,))),
    ]
    union = metrics_from_counts([evaluate_counts(model, x, y, num_classes=4) for x, y in parts])
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    ref = evaluate(model, x, y, num_classes=4)
    for key in ref:
        assert union[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key


# ---------------------------------------------------------------- real agents


def _write_sites(tmp: Path, world: int, *, seed: int = 0) -> tuple[Path, list[Path]]:
    """One digits file, and per-agent files holding exactly its iid partition."""
    ds = load_dataset("digits", seed=seed)
    whole = tmp / "whole.npz"
    arrays = {k: getattr(ds, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test")}
    np.savez(whole, **arrays)
    parts = partition("iid", ds.y_train.numpy(), world, seed)
    sites = []
    for rank, idx in enumerate(parts):
        path = tmp / f"site-{rank}.npz"
        np.savez(
            path,
            x_train=arrays["x_train"][idx],
            y_train=arrays["y_train"][idx],
            x_test=arrays["x_test"],
            y_test=arrays["y_test"],
        )
        sites.append(path)
    return whole, sites


def _run(transport, overrides: list[str], sources: bool) -> dict:
    config = RunConfig.load(None, [*BASE, f"agents={transport.world_size}", *overrides])
    Path(config.out).mkdir(parents=True, exist_ok=True)
    job = functools.partial(site_job, config) if sources else job_from_config(config)
    summary = train(job, config, transport, progress=False)
    model = job.model if isinstance(job, Job) else None
    return {"summary": summary, "state": None if model is None else model.state_dict()}


def _agents(fn, *args):
    """Two real agents; the timeout is generous because the shared test machine is loaded."""
    return run_agents(fn, 2, *args, timeout_s=300)


def _catch(transport, overrides: list[str]) -> str:
    try:
        _run(transport, overrides, True)
    except DataError as exc:
        return str(exc)
    return "no error"


@pytest.mark.dist
def test_per_agent_sources_equal_the_partition_of_one_file(tmp_path: Path) -> None:
    whole, _ = _write_sites(tmp_path, 2)
    part_out, src_out = tmp_path / "partitioned", tmp_path / "sources"
    _agents(_run, [f"data.dataset=npz:{whole}", f"out={part_out}"], False)
    source = f"npz:{tmp_path}/site-{{rank}}.npz"
    res = _agents(_run, [f"data.source={source}", f"out={src_out}"], True)
    a, _ = load_model(part_out / "model.safetensors")
    b, _ = load_model(src_out / "model.safetensors")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    part = json.loads((part_out / "summary.json").read_text())
    summary = res[0]["summary"]
    # each site's test set is the same file's test split: per-site and union figures equal it
    for key in ("accuracy", "precision", "recall", "f1"):
        assert summary["final"][key] == pytest.approx(part["final"][key], abs=1e-6)
        for site in summary["sites"]:
            assert site[key] == pytest.approx(part["final"][key], abs=1e-6)
    assert summary["data"]["sources"] == [str(tmp_path / f"site-{r}.npz") for r in range(2)]
    assert [sum(c) for c in summary["data"]["counts"]] == [719, 719]


@pytest.mark.dist
def test_sites_with_different_classes_agree_and_report_per_site_rows(tmp_path: Path) -> None:
    ds = load_dataset("digits", seed=0)
    x, y, xt, yt = (getattr(ds, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test"))
    # site 0 holds classes 0-6, site 1 classes 3-9; each tests on its own classes
    for rank, (lo, hi) in enumerate([(0, 6), (3, 9)]):
        keep, keep_t = (y >= lo) & (y <= hi), (yt >= lo) & (yt <= hi)
        np.savez(
            tmp_path / f"s{rank}.npz",
            x_train=x[keep],
            y_train=y[keep],
            x_test=xt[keep_t],
            y_test=yt[keep_t],
        )
    out = tmp_path / "run"
    source = f"{tmp_path}/s0.npz,{tmp_path}/s1.npz"
    res = _agents(_run, [f"data.source={source}", f"out={out}"], True)
    summary = res[0]["summary"]
    counts = summary["data"]["counts"]
    assert len(summary["data"]["classes"]) == 10
    assert counts[0][7:] == [0, 0, 0] and counts[1][:3] == [0, 0, 0]
    # per-site rows: the saved global model evaluated independently on each site's test set
    model, _ = load_model(out / "model.safetensors")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    site_rows = {r["site"]: r for r in rows if str(r["agent"]).startswith("site")}
    tests = []
    for rank in range(2):
        with np.load(tmp_path / f"s{rank}.npz") as f:
            xt_r, yt_r = torch.from_numpy(f["x_test"]), torch.from_numpy(f["y_test"])
        tests.append((xt_r, yt_r))
        ref = evaluate(model, xt_r, yt_r, num_classes=10)
        for key in ("accuracy", "precision", "recall", "f1", "loss"):
            assert site_rows[rank][key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6)
    # no shared test set: the global row is the union of the sites' test sets
    union = evaluate(
        model, torch.cat([t[0] for t in tests]), torch.cat([t[1] for t in tests]), num_classes=10
    )
    for key in ("accuracy", "precision", "recall", "f1", "loss"):
        assert summary["final"][key] == pytest.approx(union[key], rel=1e-5, abs=1e-6)


@pytest.mark.dist
def test_missing_file_on_one_agent_stops_every_agent_naming_it(tmp_path: Path) -> None:
    _write_sites(tmp_path, 2)
    (tmp_path / "site-1.npz").unlink()
    source = f"data.source=npz:{tmp_path}/site-{{rank}}.npz"
    messages = _agents(_catch, [source, f"out={tmp_path / 'run'}"])
    missing = str(tmp_path / "site-1.npz")
    for message in messages:  # both agents stop with the same line, nobody waits for a timeout
        assert message.startswith(f"agent 1 could not load its data ({missing})"), message


@pytest.mark.dist
@pytest.mark.slow
def test_malformed_or_mismatched_file_is_refused_naming_the_agent(tmp_path: Path) -> None:
    _, sites = _write_sites(tmp_path, 2)
    sites[1].write_bytes(b"PK\x03\x04 truncated")
    source = f"data.source=npz:{tmp_path}/site-{{rank}}.npz"
    messages = _agents(_catch, [source, f"out={tmp_path / 'a'}"])
    assert all(m.startswith(f"agent 1 could not load its data ({sites[1]})") for m in messages)
    # a site whose samples have another shape
    with np.load(sites[0]) as f:
        arrays = dict(f)
    flat = {k: arrays[k].reshape(len(arrays[k]), -1) for k in ("x_train", "x_test")}
    np.savez(sites[1], **{**arrays, **flat})
    messages = _agents(_catch, [source, f"out={tmp_path / 'b'}"])
    assert all(f"agent 1 ({sites[1]}) has samples of shape (64,)" in m for m in messages), messages
    # and one stored as float64 instead of float32
    np.savez(sites[1], **{**arrays, "x_train": arrays["x_train"].astype(np.float64)})
    messages = _agents(_catch, [source, f"out={tmp_path / 'c'}"])
    assert all(f"agent 1 ({sites[1]}) has inputs of dtype float64" in m for m in messages), messages


def _callable_job(transport, whole: str, out: str) -> dict:
    """The Python API: ``Job(train=lambda rank: ...)`` equals a partitioned Job."""
    config = RunConfig.load(None, [*BASE, f"agents={transport.world_size}", f"out={out}"])
    Path(out).mkdir(parents=True, exist_ok=True)
    base = job_from_config(RunConfig.load(None, [*BASE, f"data.dataset=npz:{whole}"]))
    parts = partition("iid", base.train[1].numpy(), transport.world_size, 0)
    x, y = base.train
    job = Job(
        model=base.model,
        train=lambda rank: (x[parts[rank]], y[parts[rank]]),
        test=base.test,
        classes=base.classes,
        model_config=base.model_config,
    )
    train(job, config, transport, progress=False)
    return job.model.state_dict()


@pytest.mark.dist
def test_python_api_per_agent_train_equals_partition(tmp_path: Path) -> None:
    whole, _ = _write_sites(tmp_path, 2)
    states = _agents(_callable_job, str(whole), str(tmp_path / "api"))
    _agents(_run, [f"data.dataset=npz:{whole}", f"out={tmp_path / 'p'}"], False)
    ref, _ = load_model(tmp_path / "p" / "model.safetensors")
    for k, v in ref.state_dict().items():
        assert torch.equal(states[0][k], v), k


def test_federated_strategies_and_unlabelled_per_agent_jobs_are_refused() -> None:
    # fed.clients are index sets into one dataset every agent holds; per-agent data has none
    with pytest.raises(ConfigError, match=r"sync\.strategy=fedavg partitions one dataset"):
        RunConfig.load(
            None, ["data.source=npz:/d/{rank}.npz", "sync.strategy=fedavg", "fed.clients=4"]
        )
    x, y = torch.zeros(8, 4, dtype=torch.long), torch.zeros(8, 4, dtype=torch.long)
    with pytest.raises(DataError, match=r"per-agent train \(rank -> data\) is for labelled data"):
        Job(model=torch.nn.Linear(4, 4), train=lambda rank: (x, y), test=(x, y), task="lm")


def _epochs_run(transport, source: str, out: str) -> dict:
    config = RunConfig.load(
        None,
        [
            *[o for o in BASE if not o.startswith("train.steps")],
            "train.epochs=1",
            f"agents={transport.world_size}",
            f"out={out}",
            f"data.source={source}",
        ],
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    summary = train(functools.partial(site_job, config), config, transport, progress=False)
    return {"summary": summary}


@pytest.mark.dist
def test_sites_of_different_sizes_train_the_same_budget(tmp_path: Path) -> None:
    """An epoch budget counts all sites' samples (from the agreement), the same on every agent:
    from its own site's size alone each agent would train a different number of steps."""
    ds = load_dataset("digits", seed=0)
    x, y, xt, yt = (getattr(ds, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test"))
    sizes = (1000, 200)
    for rank, (lo, hi) in enumerate([(0, sizes[0]), (sizes[0], sizes[0] + sizes[1])]):
        np.savez(
            tmp_path / f"s{rank}.npz", x_train=x[lo:hi], y_train=y[lo:hi], x_test=xt, y_test=yt
        )
    res = run_agents(
        _epochs_run, 2, f"npz:{tmp_path}/s{{rank}}.npz", str(tmp_path / "run"), timeout_s=300
    )
    budget = res[0]["summary"]["budget"]
    assert budget["steps"] == -(-sum(sizes) // (2 * 16)) == 38
    assert budget["source"] == "train.epochs"
