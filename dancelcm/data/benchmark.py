"""Measure the clip loader: clips/s for each DataLoader worker count, same data, one run.

Usage: ``python -m dancelcm.data.benchmark [root=DIR] num_frames=16 resolution=256 workers=[0,2]``
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from dancelcm.cli import command

log = logging.getLogger(__name__)


def measure(
    root: str, num_frames: int, stride: int, resolution: int, workers: int, batch_size: int, clips: int
) -> dict:
    from dancelcm.data.datamodule import PoseVideoDataModule

    dm = PoseVideoDataModule(
        root,
        num_frames=num_frames,
        stride=stride,
        resolution=resolution,
        face_size=min(128, resolution // 2),
        batch_size=batch_size,
        num_workers=workers,
        clips_per_video=max(1, clips),
    )
    dm.setup("fit")
    t0 = time.perf_counter()
    it = iter(dm.train_dataloader())
    next(it)
    t_first = time.perf_counter() - t0
    n, t1 = 0, time.perf_counter()
    while n < clips:
        n += len(next(it)["video_id"])
    dt = time.perf_counter() - t1
    return {"workers": workers, "clips": n, "seconds": dt, "clips_per_s": n / dt, "first_batch_s": t_first}


def run(cfg) -> None:
    """The command's work on a composed config (``conf/benchmark_data.yaml``): callable in-process."""
    root = cfg.root
    if root is None:
        root = str(Path(cfg.paths.data_dir) / f"bench_{cfg.resolution}")
        if not (Path(root) / "dataset.json").exists():
            from dancelcm.data.synthesize import SynthesisConfig, synthesize

            log.info("making a %d-video benchmark dataset at %s", cfg.num_videos, root)
            synthesize(
                SynthesisConfig(
                    out_dir=root, num_videos=cfg.num_videos, num_frames=48, resolution=cfg.resolution, preview=False
                )
            )
    rows = []
    for w in cfg.workers:
        r = measure(root, cfg.num_frames, cfg.stride, cfg.resolution, int(w), cfg.batch_size, cfg.clips)
        rows.append(r)
    log.info(
        "loader throughput on %s (%d CPUs): %d frames of %dx%d, batch %d",
        root,
        os.cpu_count(),
        cfg.num_frames,
        cfg.resolution,
        cfg.resolution,
        cfg.batch_size,
    )
    log.info("| workers | clips/s | first batch (s) |")
    log.info("|---|---|---|")
    for r in rows:
        log.info("| %d | %.1f | %.2f |", r["workers"], r["clips_per_s"], r["first_batch_s"])
    if len(rows) > 1:
        log.info(
            "ratio %d/%d workers: %.2fx",
            rows[-1]["workers"],
            rows[0]["workers"],
            rows[-1]["clips_per_s"] / rows[0]["clips_per_s"],
        )
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(rows, indent=1))


main = command("data.benchmark", run, __doc__, config_name="benchmark_data")


if __name__ == "__main__":
    main()
