"""``table.py RUNS OUT name ...``: run.sh's stage 4. The evaluation (RUNS/eval/metrics.json) with each student's
resources (RUNS/<name>.params.json from count.py, peak RSS from /usr/bin/time -v) -> OUT/table.md, OUT/results.json."""

import json
import re
import sys
from pathlib import Path

runs, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
metrics = json.loads((runs / "eval" / "metrics.json").read_text())


def mean(row: dict, key: str) -> float | None:
    v = row.get(key)
    return v["mean"] if isinstance(v, dict) else v


def rss_gib(name: str) -> float:
    text = (runs / f"{name}.time").read_text()
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 2**20


teacher = next(k for k in metrics if k.startswith("teacher"))
rows = []
for name in names:
    params = json.loads((runs / f"{name}.params.json").read_text())
    for steps in (4, 2, 1):
        m = metrics[f"{name} {steps}-step"]
        rows.append(
            {
                "student": name,
                "steps": steps,
                "psnr_vs_teacher": mean(m, "psnr_vs_teacher"),
                "psnr_figure": mean(m, "psnr_figure"),
                "sharpness": mean(m, "sharpness"),
                "fd": mean(m, "fd"),
                "trained_M": params["trained"] / 1e6,
                "held_M": params["held"] / 1e6,
                "peak_rss_GiB": rss_gib(name),
            }
        )
t = metrics[teacher]
lines = [
    "| student | steps | PSNR vs teacher | figure PSNR | sharpness | FD | trained (M) | held in memory (M) "
    "| peak RSS (GiB) |",
    "|---|---|---|---|---|---|---|---|---|",
    f"| {teacher} | 100 NFE | - | {mean(t, 'psnr_figure'):.2f} | {mean(t, 'sharpness'):.3f} | {mean(t, 'fd'):.1f} "
    "| - | - | - |",
]
for r in rows:
    lines.append(
        f"| {r['student']} | {r['steps']} | {r['psnr_vs_teacher']:.2f} | {r['psnr_figure']:.2f} | {r['sharpness']:.3f} "
        f"| {r['fd']:.1f} | {r['trained_M']:.2f} | {r['held_M']:.2f} | {r['peak_rss_GiB']:.2f} |"
    )
(out / "table.md").write_text("\n".join(lines) + "\n")
(out / "results.json").write_text(json.dumps({"teacher": teacher, "rows": rows}, indent=1))
print("\n".join(lines))
