"""``python -m dancelcm.report runs=DIR [out=DIR] [compare='variant=full']``: the runs of a sweep (or any runs)
side by side from the local run folders: tables, CSV and plots (:mod:`dancelcm.evaluation.study`); options in
``conf/report.yaml``."""

from __future__ import annotations

from omegaconf import DictConfig

from dancelcm.cli import command
from dancelcm.evaluation.study import report


def run(cfg: DictConfig) -> dict:
    """The report ``cfg`` (conf/report.yaml) asks for; returns :func:`dancelcm.evaluation.study.report`'s result."""
    return report(cfg.runs, cfg.out, list(cfg.metrics) if cfg.metrics else None, cfg.compare)


main = command("report", run, __doc__)


if __name__ == "__main__":
    main()
