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


def main(out: str) -> None:
    o = Path(out)
    lines = ["| sampler | " + " | ".join(h for _, h, _ in COLS) + " |", "|---|" + "---|" * len(COLS)]
    for name in ("eval_teacher", "eval_students"):
        f = o / name / "metrics.json"
        if f.is_file():
            for sampler, row in json.loads(f.read_text()).items():
                lines.append(f"| {sampler} | " + " | ".join(cell(row, k, p) for k, _, p in COLS) + " |")
    (o / "table.md").write_text("\n".join(lines) + "\n")
    print((o / "table.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1])
