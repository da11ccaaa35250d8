"""The embedded-default pipeline end to end: ``python -m dancelcm.demo`` (``make demo``).

1. data      the synthetic dancers in ``data/synthetic`` (generated if missing)
2. teacher   the shipped bundle ``checkpoints/synthetic_teacher`` (trained by ``make teacher``)
3. distill   DanceLCM K=4 and the VideoLCM baseline (K=1), same teacher, same budget (resumable)
4. evaluate  teacher DDIM-50 + CFG vs the students at 1/2/4 steps on held-out clips, same noise
5. video     reference | pose | ground truth | teacher | DanceLCM 4 steps | baseline 4 steps

Each stage prints what it does; the distillations show Lightning's progress bars.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def stage(n: int, total: int, text: str) -> None:
    log.info("\n==> [%d/%d] %s", n, total, text)


def run(args: list[str]) -> None:
    log.info("$ %s", " ".join(args))
    proc = subprocess.run([sys.executable, "-m", *args])
    if proc.returncode:
        raise SystemExit(f"stage failed (exit {proc.returncode}): python -m {' '.join(args)}")


def side_by_side(cfg, runs: dict[str, Path], out_dir: Path) -> Path:
    import torch
    from hydra.utils import instantiate

    from dancelcm.callbacks.samples import write_samples
    from dancelcm.evaluate import clip_noise, student_sampler, teacher_sampler
    from dancelcm.models.bundle import bundle_uncond, load_bundle

    teacher = load_bundle(cfg.teacher)
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    batch = {k: v[: cfg.video_clips] for k, v in batch.items()}
    fac, c = teacher.autoencoder.factor, teacher.animator.latent_channels
    f, _, h, w = batch["video"].shape[1:]
    noise = clip_noise(batch["clip_index"], (c, f, h // fac, w // fac), cfg.seed)
    teacher_50 = teacher_sampler(teacher, 50, cfg.guidance, bundle_uncond(teacher))
    samples = {"teacher DDIM-50 CFG": teacher_50.fn(batch, noise)}
    for label, run_dir in runs.items():
        samples[f"{label} 4 steps"] = student_sampler(load_bundle(run_dir / "export"), 4, cfg.seed).fn(batch, noise)
    with torch.no_grad():
        mp4, png = write_samples(out_dir, "side_by_side", batch, samples)
    log.info("panels: reference | pose | ground truth | %s", " | ".join(samples))
    return mp4


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
    def _run(cfg: DictConfig) -> None:
        from dancelcm.models.bundle import TEACHER_COMMAND

        t0 = time.perf_counter()
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        total = 5
        stage(1, total, f"data: synthetic dancers in {cfg.data.root}")
        if not (Path(cfg.data.root) / "dataset.json").exists():
            run(["dancelcm.data.synthesize", f"out_dir={cfg.data.root}"])
        else:
            log.info("found %s", cfg.data.root)
        stage(2, total, f"teacher: {cfg.teacher}")
        if not (Path(cfg.teacher) / "bundle.json").exists():
            raise SystemExit(
                f"no teacher bundle at {cfg.teacher}. It ships with the repository; to make it again run "
                f"{TEACHER_COMMAND}; it copies runs/synthetic_teacher_refine/export there."
            )
        runs = {"DanceLCM": out / "synthetic_k4", "VideoLCM": out / "synthetic_lcm"}
        for i, (label, experiment) in enumerate((("DanceLCM", "synthetic_k4"), ("VideoLCM", "synthetic_lcm"))):
            stage(3, total, f"distill {label} ({experiment}), {cfg.distill_steps} steps [{i + 1}/2]")
            run(
                [
                    "dancelcm.train",
                    f"+experiment={experiment}",
                    f"hydra.run.dir={runs[label]}",
                    "ckpt_path=auto",
                    f"method.teacher={cfg.teacher}",
                    f"trainer.max_steps={cfg.distill_steps}",
                    f"data.root={cfg.data.root}",
                    *cfg.train_overrides,
                ]
            )
        stage(4, total, f"evaluate on {cfg.max_clips} held-out clips")
        students = ",".join(f"{k}:{v / 'export'}" for k, v in runs.items())
        run(
            [
                "dancelcm.evaluate",
                f"teacher={cfg.teacher}",
                f"students={{{students}}}",
                "teacher_steps=[50]",
                f"guidance=[{cfg.guidance}]",
                "student_steps=[1,2,4]",
                f"max_clips={cfg.max_clips}",
                f"data.root={cfg.data.root}",
                f"out_dir={out / 'eval'}",
                "reference_baseline=true",
            ]
        )
        stage(5, total, "side-by-side video")
        video = side_by_side(cfg, runs, out)
        log.info("\n%s", (out / "eval" / "table.md").read_text())
        log.info(
            "video: %s\ntable: %s\ntotal time: %.1f min",
            video,
            out / "eval" / "table.md",
            (time.perf_counter() - t0) / 60,
        )

    _run()


if __name__ == "__main__":
    main()
