"""Run directory -> PNG plots and one self-contained ``report.html``.

``ddla run`` calls :func:`write_report` when it finishes; ``ddla report RUN_DIR`` calls it on
demand. Plots land in ``RUN_DIR/plots/``; the page embeds them, so ``report.html`` alone is the
whole report.

Example:
    >>> path = write_report("runs/latest")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

from pathlib import Path

from ddla.report.html import render
from ddla.report.plots import draw_all
from ddla.report.rundir import RunData, load_run

__all__ = ["RunData", "load_run", "write_report"]


def write_report(run_dir: str | Path) -> Path:
    """Draw the plots of ``run_dir`` and write its ``report.html``; return the page's path.

    Raises:
        DataError: ``run_dir`` is not a run directory (see :func:`load_run`).
    """
    run = load_run(run_dir)
    pngs = draw_all(run)
    plots = run.path / "plots"
    plots.mkdir(exist_ok=True)
    for name, data in pngs.items():
        (plots / name).write_bytes(data)
    page = run.path / "report.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render(run, pngs), encoding="utf-8")
    tmp.replace(page)  # never leave a half-written page behind
    return page
