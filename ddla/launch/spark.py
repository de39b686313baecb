"""The Spark engine: pyspark's TorchDistributor runs ``agent_main`` under torchrun.

Without ``launch.master`` a local Spark session (``local[N]``) is started for the run and the
agents are torchrun processes next to it (``local_mode=True``); with ``launch.master`` (a
``spark://HOST:7077`` cluster, or ``local[N]`` to try it here) they run as one Spark barrier
task each on the executors (``local_mode=False``), torchrun in every task joining task 0.
TorchDistributor sets the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), so the
agent is exactly the one torchrun starts. Spark needs Java 17+ (``java`` on PATH or
``JAVA_HOME``).

    ddla run --launcher spark --agents 2 --dataset digits
    ddla run --launcher spark --set launch.master=spark://10.0.0.5:7077 --agents 8
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ddla.agent import JobFactory, agent_main
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.launch.engines import agent_failure, agent_output, interrupted, require


def _agent(
    config: dict[str, Any], job_factory: JobFactory | None, resume: bool, faults: Any
) -> None:
    """One agent: a torchrun worker that TorchDistributor started."""
    with agent_output(Path(config["out"]), "spark", int(os.environ["RANK"])):
        agent_main(config, job_factory, resume, faults, progress=False)


def java_missing() -> str | None:
    """Why Spark cannot start its JVM here, or None when a ``java`` is found."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return None
    if shutil.which("java"):
        return None
    return "no Java runtime found (java is not on PATH and JAVA_HOME is not set)"


def run_spark(
    cfg: RunConfig,
    out: Path,
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
    progress: bool,
) -> None:
    """Run the agents through TorchDistributor; raise ddla's one-line error if one fails."""
    require("pyspark", engine="spark", extra="spark")
    distributor = require("pyspark.ml.torch.distributor", engine="spark", extra="spark")
    why = java_missing()
    if why:
        raise ConfigError(
            f"the spark launcher needs Java 17 or later: {why}",
            help="apt-get install openjdk-17-jre-headless (or set JAVA_HOME)",
        )
    from pyspark.sql import SparkSession

    n = cfg.agents
    owned = SparkSession.getActiveSession() is None
    builder = (
        SparkSession.builder.master(cfg.launch.master or f"local[{n}]")
        .appName(f"ddla {out.name}")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    master = cfg.launch.master or ""
    if master.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        # Executors of a local master run on this machine: give them this interpreter (and
        # its torch and ddla), not whatever `python3` is first on PATH.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        builder = builder.config("spark.pyspark.python", sys.executable)
    if cfg.launch.master is None:  # nothing but this machine talks to a local session
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    # TorchDistributor echoes torchrun's output (its banner, a failure's report) on stdout;
    # keep it in the run's logs, so the console holds ddla's lines only.
    log_path = out / "logs" / "spark" / "torchrun.out"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("a") as log, contextlib.redirect_stdout(log):
            distributor.TorchDistributor(
                num_processes=n, local_mode=cfg.launch.master is None, use_gpu=False
            ).run(_agent, cfg.to_dict(), job_factory, resume, faults)
    except KeyboardInterrupt:
        raise interrupted(cfg, out) from None
    except Exception as exc:  # TorchDistributor raises RuntimeError with torchrun's output
        raise agent_failure(out, "spark", exc) from None
    finally:
        if owned:
            _stop(spark)


def _stop(spark: Any) -> None:
    """Stop the session and the JVM pyspark started for it (else it lives as long as we do)."""
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            proc.stdin.close()  # the gateway JVM exits when its stdin closes
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None
