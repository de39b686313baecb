"""The plain commands a new user types reach known-good accuracy with the defaults (issue 10).

Runs each command as a user would (``ddla run ...`` in a subprocess, nothing but the flags
shown), and records its final accuracy, its budget and two wall times: the whole command
(process start to summary, what a user waits) and the training loop (``summary.time.wall_s``).

    nice -n 5 python benchmarks/defaults.py            # all three commands
    nice -n 5 python benchmarks/defaults.py --only mnist1d-cnn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from records import write_record

#: name -> (ddla run flags, goal accuracy or None)
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "fashion-mnist-mlp": (["--agents", "4", "--dataset", "fashion-mnist"], 0.875),
    "mnist1d-cnn": (["--agents", "1", "--dataset", "mnist1d", "--model", "cnn"], 0.90),
    "default-job": ([], None),  # `make run`: about a minute
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=list(COMMANDS))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ddla-defaults-"))
    ddla = str(Path(sys.executable).with_name("ddla"))
    rows = []
    for name in args.only:
        flags, goal = COMMANDS[name]
        out = work / name
        cmd = [ddla, "run", *flags, "--out", str(out), "--no-progress"]
        started = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        command_s = time.perf_counter() - started
        if res.returncode != 0:
            print(res.stdout, res.stderr, file=sys.stderr)
            return res.returncode
        summary = json.loads((out / "summary.json").read_text())
        row = {
            "name": name,
            "command": "ddla run " + " ".join(flags),
            "accuracy": summary["final"]["accuracy"],
            "goal": goal,
            "budget": summary["budget"],
            "train_wall_s": round(summary["time"]["wall_s"], 1),
            "command_wall_s": round(command_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    config = {"only": args.only, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    path = write_record("defaults", config=config, figures=rows)
    print(f"record: {path}")
    return 0 if all(r["goal"] is None or r["accuracy"] >= r["goal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
