"""experiments/long_video/table.md from the evaluations of run.sh (eval_students/, eval_teacher/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLS = (("seam", "seam ratio", 3), ("psnr_figure", "figure PSNR", 2), ("fd", "FD", 1),
        ("nfe_per_frame", "NFE/frame", 2), ("seconds_per_frame", "s/frame", 3), ("clips", "videos", 0))  # fmt: skip


def cell(row: dict, key: str, places: int) -> str:
    v = row.get(key)
    if v is None:
        return ""
    if isinstance(v, dict):
        return f"{v['mean']:.{places}f} ± {v['std']:.{places}f}"
    return f"{v:.{places}f}"


def per_clip(f: Path) -> dict[str, dict[str, dict[str, float]]]:
    """sampler -> video id -> {seam, psnr_figure} from an evaluation's per_clip.csv."""
    import csv

    out: dict = {}
    if f.is_file():
        with f.open() as fh:
            for r in csv.DictReader(fh):
                out.setdefault(r["sampler"], {})[r["video_id"]] = {k: float(r[k]) for k in ("seam", "psnr_figure")}
    return out


def same_videos(o: Path) -> list[str]:
    """The students' seam ratios and figure PSNR on the videos the teacher was run on (it sees fewer: its rows take
    hours), so teacher and students compare on the same videos."""
    teacher, students = per_clip(o / "eval_teacher" / "per_clip.csv"), per_clip(o / "eval_students" / "per_clip.csv")
    if not teacher:
        return []
    ids = sorted(next(iter(teacher.values())))
    lines = ["", f"On the teacher's {len(ids)} videos only (mean over the same videos):", "",
             "| sampler | seam ratio | clips with seam > 1.1 | figure PSNR |", "|---|---|---|---|"]  # fmt: skip
    for sampler, rows in {**teacher, **students}.items():
        vals = [rows[i] for i in ids if i in rows]
        if len(vals) != len(ids):
            continue
        seam = [v["seam"] for v in vals]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        lines.append(f"| {sampler} | {mean(seam):.3f} | {sum(x > 1.1 for x in seam)} / {len(ids)} | "
                     f"{mean([v['psnr_figure'] for v in vals]):.2f} |")  # fmt: skip
    return lines


def main(out: str) -> None:
    o = Path(out)
    lines = ["| sampler | " + " | ".join(h for _, h, _ in COLS) + " |", "|---|" + "---|" * len(COLS)]
    for name in ("eval_teacher", "eval_students"):
        f = o / name / "metrics.json"
        if f.is_file():
            for sampler, row in json.loads(f.read_text()).items():
                lines.append(f"| {sampler} | " + " | ".join(cell(row, k, p) for k, _, p in COLS) + " |")
    # the goal: the student at 4 steps with a seam ratio within 10 % of the ground truth's (|seam - 1| <= 0.1)
    # at no more than 1.5x the NFE per frame of independent windows
    f = o / "eval_students" / "metrics.json"
    if f.is_file():
        rows = json.loads(f.read_text())
        lines += [
            "",
            "Goal (4 steps: seam ratio within 10 % of the ground truth's, NFE/frame <= 1.5 x independent):",
            "",
        ]
        for name, row in rows.items():
            if "4-step" not in name or "seam" not in row:
                continue
            base = rows.get(name.rsplit(" w", 1)[0] + " w8o0", {}).get("nfe_per_frame")
            ok_seam = abs(row["seam"]["mean"] - 1) <= 0.1
            ok_nfe = base is not None and row["nfe_per_frame"] <= 1.5 * base
            verdict = "met" if ok_seam and ok_nfe else "not met"
            lines.append(
                f"- {name}: seam {row['seam']['mean']:.3f}, NFE/frame {row['nfe_per_frame']:.2f} "
                f"({row['nfe_per_frame'] / base:.2f}x independent): {verdict}"
                if base
                else f"- {name}: no baseline"
            )
    lines += same_videos(o)
    (o / "table.md").write_text("\n".join(lines) + "\n")
    print((o / "table.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1])
