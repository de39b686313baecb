"""Each engine joins a cluster that is already running, as a user's would be, with the same results.

Real clusters, started here on loopback the way their docs say (a Dask scheduler and workers, a
Ray head node from ``ray start``, a Spark standalone master and worker) and stopped by the test:
a 2-agent digits run through ``--set launch.address=`` / ``launch.master=`` must equal the local
launcher's run bit for bit and leave the cluster running (ddla never stops what it did not
start). A cluster that is not there, or workers whose Python lacks ddla, end the run in one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import cli
from test_launchers import JOBS, _assert_same_run, _installed, local_run  # noqa: F401 (fixture)

from ddla.launch.spark import java_missing
from ddla.testing import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.dist]
BIN = Path(sys.executable).parent


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A cluster process in a session of its own, so the test can stop all it spawned."""
    return subprocess.Popen(
        cmd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(predicate, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout_s:.0f} s")
        time.sleep(1.0)


def _run(engine: str, setting: str, out: Path, env: dict[str, str] | None = None):
    sets = [a for kv in [*JOBS["allreduce"], setting] for a in ("--set", kv)]
    return cli("run", "--launcher", engine, *sets, "--out", str(out), "--no-progress", env=env)


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int = 2) -> Iterator[str]:
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _start(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            tmp / "scheduler.log",
        )
    ]
    try:
        for i in range(workers):
            procs.append(
                _start(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                    ],
                    tmp / f"worker{i}.log",
                )
            )

        def ready() -> bool:
            try:
                with Client(address, timeout=5) as c:
                    return len(c.scheduler_info(n_workers=-1)["workers"]) >= workers
            except OSError:
                return False

        _wait_for(ready, "the Dask cluster")
        yield address
        assert all(p.poll() is None for p in procs), "ddla stopped the user's Dask cluster"
        assert ready(), "the Dask cluster lost workers"
    finally:
        _stop(procs)


# Under load (2 cores shared), a cluster's start plus the local reference take minutes.
@pytest.mark.timeout(900)
@pytest.mark.skipif(not _installed("dask"), reason="ddla[dask] not installed")
def test_dask_cluster_matches_local(local_run, tmp_path: Path) -> None:  # noqa: F811
    with dask_cluster(tmp_path) as address:
        res = _run("dask", f"launch.address={address}", tmp_path / "run")
        assert res.returncode == 0, res.stderr
    _assert_same_run(tmp_path / "run", local_run("allreduce"))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not _installed("dask"), reason="ddla[dask] not installed")
def test_dask_cluster_unreachable_is_one_line(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    res = _run("dask", f"launch.address={address}", tmp_path / "run")
    assert res.returncode != 0
    assert f"error: cannot reach the Dask scheduler at {address}" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not _installed("ray"), reason="ddla[ray] not installed")
def test_ray_cluster_matches_local(local_run, tmp_path: Path) -> None:  # noqa: F811
    # Ray on loopback only (it names a node by its first interface otherwise), its own temp
    # dir (short: Ray's socket paths must fit 107 bytes), token auth as `ray start` sets up.
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}  # fmt: skip
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = _start(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=3",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        tmp_path / "ray.log", env,
    )  # fmt: skip
    try:
        _wait_for(lambda: b"Ray runtime started" in (tmp_path / "ray.log").read_bytes(), "Ray")
        res = _run("ray", f"launch.address=127.0.0.1:{port}", tmp_path / "run", env)
        assert res.returncode == 0, res.stderr
        assert head.poll() is None, "ddla stopped the user's Ray cluster"
    finally:
        _stop([head])
    _assert_same_run(tmp_path / "run", local_run("allreduce"))


@contextlib.contextmanager
def spark_cluster(tmp: Path) -> Iterator[str]:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(tmp)}
    port = free_port()
    master = f"spark://127.0.0.1:{port}"
    klass = str(home / "bin" / "spark-class")
    procs = [
        _start(
            [
                klass,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(free_port()),
            ],
            tmp / "master.log",
            env,
        )
    ]
    try:
        _wait_for(lambda: b"ALIVE" in (tmp / "master.log").read_bytes(), "the Spark master")
        procs.append(
            _start(
                [
                    klass,
                    "org.apache.spark.deploy.worker.Worker",
                    master,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "2",
                    "--memory",
                    "2g",
                    "--webui-port",
                    str(free_port()),
                ],
                tmp / "worker.log",
                env,
            )
        )
        _wait_for(lambda: b"Registering worker" in (tmp / "master.log").read_bytes(), "a worker")
        yield master
        assert all(p.poll() is None for p in procs), "ddla stopped the user's Spark cluster"
    finally:
        _stop(procs)


SPARK = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not _installed("spark"), reason="ddla[spark] not installed"),
    pytest.mark.skipif(java_missing() is not None, reason="no Java runtime"),
]


@pytest.mark.parametrize("_", [pytest.param(0, marks=SPARK)])
def test_spark_cluster_matches_local(_, local_run, tmp_path: Path) -> None:  # noqa: F811
    with spark_cluster(tmp_path) as master:
        env = {"PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        res = _run("spark", f"launch.master={master}", tmp_path / "run", env)
        assert res.returncode == 0, res.stderr
    _assert_same_run(tmp_path / "run", local_run("allreduce"))


@pytest.mark.parametrize("_", [pytest.param(0, marks=SPARK)])
def test_spark_workers_without_ddla_is_one_line(_, tmp_path: Path) -> None:
    # The system Python has no ddla (nor torch): what a cluster without ddla installed gives.
    bare = "/usr/bin/python3"
    if subprocess.run([bare, "-c", "import ddla"], capture_output=True).returncode == 0:
        pytest.skip(f"{bare} has ddla")
    with spark_cluster(tmp_path) as master:
        env = {"PYSPARK_PYTHON": bare, "SPARK_LOCAL_IP": "127.0.0.1"}
        res = _run("spark", f"launch.master={master}", tmp_path / "run", env)
    assert res.returncode != 0
    lines = [x for x in res.stderr.splitlines() if x.startswith(("error:", "help:"))]
    # The system Python lacks numpy before it lacks ddla: the first failed import is named.
    assert re.fullmatch(
        r"error: the spark workers' Python cannot import \w+: install ddla there .*", lines[0]
    ), lines
    assert "PYSPARK_PYTHON" in lines[1]
    assert not (tmp_path / "run" / "summary.json").exists()
