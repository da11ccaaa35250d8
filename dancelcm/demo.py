"""The embedded-default pipeline end to end: ``python -m dancelcm.demo`` (``make demo``).

1. data      the synthetic dancers in ``data/synthetic`` (generated if missing)
2. teacher   the shipped bundle ``checkpoints/synthetic_teacher`` (trained by ``make teacher``)
3. distill   DanceLCM K=4 and the VideoLCM baseline (K=1), same teacher, same budget (resumable)
4. evaluate  teacher DDIM-50 + CFG vs the students at 1/2/4 steps on held-out clips, all from the same
             noise per clip: ``eval/table.md``, ``eval/quality_vs_nfe.png`` and the side-by-side video
             ``eval/samples.mp4`` (pose | ground truth | copy of the reference | teacher | each student)

Each stage prints what it does and its time; the distillations show Lightning's progress bars and the
evaluation a progress bar over clips. ``<out_dir>/demo.md`` keeps the stage times and the table.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

STUDENTS = (("DanceLCM", "synthetic_k4"), ("VideoLCM", "synthetic_lcm"))


def run(args: list[str]) -> None:
    log.info("$ python -m %s", " ".join(args))
    proc = subprocess.run([sys.executable, "-m", *args])
    if proc.returncode:
        raise SystemExit(f"stage failed (exit {proc.returncode}): python -m {' '.join(args)}")


def data_overrides(cfg) -> list[str]:
    """The data options both the distillations and the evaluation must share."""
    return [
        f"data.root={cfg.data.root}",
        f"data.resolution={cfg.data.resolution}",
        f"data.num_frames={cfg.data.num_frames}",
    ]


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
    def _run(cfg: DictConfig) -> None:
        from dancelcm.models.bundle import TEACHER_COMMAND

        t_start = time.perf_counter()
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        steps = [] if cfg.distill_steps is None else [f"trainer.max_steps={cfg.distill_steps}"]
        train_args = [*steps, *cfg.train_overrides]  # both students: the same steps and budget
        stages = [("data", f"synthetic dancers in {cfg.data.root}"), ("teacher", str(cfg.teacher))]
        stages += [(f"distill {label}", " ".join([f"+experiment={e}", *train_args])) for label, e in STUDENTS]
        stages += [("evaluate", f"{cfg.max_clips} held-out clips")]
        starts: list[float] = []  # when each stage began; a stage's time runs to the next one's start

        def stage(i: int) -> None:
            starts.append(time.perf_counter())
            if i < len(stages):
                log.info("\n==> [%d/%d] %s: %s", i + 1, len(stages), *stages[i])

        stage(0)
        if not (Path(cfg.data.root) / "dataset.json").exists():
            run(["dancelcm.data.synthesize", f"out_dir={cfg.data.root}"])
        else:
            log.info("found %s", cfg.data.root)
        stage(1)
        if not (Path(cfg.teacher) / "bundle.json").exists():
            raise SystemExit(
                f"no teacher bundle at {cfg.teacher}. It ships with the repository; to make it again run "
                f"{TEACHER_COMMAND}; it copies runs/synthetic_teacher_refine/export there."
            )
        log.info("found %s", cfg.teacher)
        runs = {label: out / experiment for label, experiment in STUDENTS}
        for i, (label, experiment) in enumerate(STUDENTS):
            stage(2 + i)
            run(
                [
                    "dancelcm.train",
                    f"+experiment={experiment}",
                    f"hydra.run.dir={runs[label]}",
                    "ckpt_path=auto",
                    f"method.teacher={cfg.teacher}",
                    *data_overrides(cfg),
                    *train_args,
                ]
            )
        stage(2 + len(STUDENTS))
        students = ",".join(f"{k}:{v / 'export'}" for k, v in runs.items())
        n, g = int(cfg.teacher_steps), float(cfg.guidance)
        run(
            [
                "dancelcm.evaluate",
                f"teacher={cfg.teacher}",
                f"students={{{students}}}",
                f"teacher_steps=[{n}]",
                f"guidance=[{g}]",
                f"vs_teacher.steps={n}",
                f"vs_teacher.guidance={g}",
                "student_steps=[1,2,4]",
                f"max_clips={cfg.max_clips}",
                f"sample_clips={cfg.video_clips}",
                f"seed={cfg.seed}",
                "reference_baseline=true",
                f"out_dir={out / 'eval'}",
                *data_overrides(cfg),
                *cfg.eval_overrides,
            ]
        )
        stage(len(stages))
        total = time.perf_counter() - t_start
        table = (out / "eval" / "table.md").read_text()
        timing = "\n".join(f"| {name} | {(b - a) / 60:.1f} |" for (name, _), a, b in zip(stages, starts, starts[1:]))
        summary = (
            f"# DanceLCM demo\n\nStage times (minutes):\n\n| stage | min |\n|---|---|\n{timing}\n"
            f"| **total** | **{total / 60:.1f}** |\n\n{table}\n"
        )
        (out / "demo.md").write_text(summary)
        log.info("\n%s", summary)
        log.info(
            "side-by-side video: %s\ntable: %s\nplot: %s\ntotal time: %.1f min",
            out / "eval" / "samples.mp4",
            out / "eval" / "table.md",
            out / "eval" / "quality_vs_nfe.png",
            total / 60,
        )

    _run()


if __name__ == "__main__":
    main()
