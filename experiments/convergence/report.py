"""The convergence study's table and figure from the kept evaluation records (``run.sh`` stage ``report``).

    python experiments/convergence/report.py experiments/convergence/jobs experiments/convergence

Reads ``jobs/<variant>_<grid>/step_<N>/metrics.json`` (``python -m dancelcm.evaluate`` output: every student row
scored against the teacher's DDIM-50 + CFG 2 from the same noise, on the same held-out clips) and writes
``table.md``, ``results.json`` and ``quality_vs_steps.png``: PSNR against the teacher, sharpness and Frechet distance
of the 1-, 2- and 4-step students against training steps, with the teacher's sharpness and FD and the issue's goal
(4 steps: FD within 25 % of the teacher's, sharpness within 10 %) marked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (("psnr_vs_teacher", "PSNR vs teacher"), ("sharpness", "sharpness"), ("fd", "FD"))


def value(row: dict, key: str) -> float:
    v = row[key]
    return float(v["mean"] if isinstance(v, dict) else v)


def collect(jobs: Path) -> tuple[dict, dict]:
    """(results[job][train_step][student_steps][metric], teacher[metric]) from the kept records."""
    results: dict = {}
    teacher: dict = {}
    for m in sorted(jobs.glob("*/step_*/metrics.json")):
        job, step = m.parent.parent.name, int(m.parent.name.removeprefix("step_"))
        rows = json.loads(m.read_text())
        for name, row in rows.items():
            if name.startswith("teacher"):
                teacher = {"name": name, **{k: value(row, k) for k in ("sharpness", "fd") if k in row}}
            elif name.startswith("student "):
                k = int(name.split()[1].split("-")[0])
                results.setdefault(job, {}).setdefault(step, {})[k] = {c: value(row, c) for c, _ in COLUMNS if c in row}
    return results, teacher


def table(results: dict, teacher: dict) -> str:
    lines = [
        f"Teacher ({teacher.get('name', '?')}): sharpness {teacher.get('sharpness', float('nan')):.3f}, "
        f"FD {teacher.get('fd', float('nan')):.1f}. Goal at 4 steps: FD <= {1.25 * teacher.get('fd', 0):.1f}, "
        f"sharpness >= {0.9 * teacher.get('sharpness', 0):.3f}.",
        "",
        "| job | train steps | " + " | ".join(f"{label} {k}-step" for _, label in COLUMNS for k in (1, 2, 4)) + " |",
        "|---|---|" + "---|" * (3 * len(COLUMNS)),
    ]
    for job in sorted(results):
        for step in sorted(results[job]):
            cells = []
            for col, _ in COLUMNS:
                for k in (1, 2, 4):
                    v = results[job][step].get(k, {}).get(col)
                    cells.append(
                        ""
                        if v is None
                        else (f"{v:.1f}" if col == "fd" else f"{v:.2f}" if "psnr" in col else f"{v:.3f}")
                    )
            lines.append(f"| {job} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(results: dict, teacher: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (col, label) in zip(axes, COLUMNS):
        for i, job in enumerate(sorted(results)):
            steps = sorted(results[job])
            for k, style in ((4, "-"), (2, "--"), (1, ":")):
                ys = [results[job][s].get(k, {}).get(col) for s in steps]
                if any(y is not None for y in ys):
                    ax.plot(steps, ys, style, marker="o", color=colors[i % len(colors)], label=f"{job} {k}-step")
        if col in teacher:
            ax.axhline(teacher[col], color="k", lw=1, label="teacher")
            goal = 1.25 * teacher[col] if col == "fd" else 0.9 * teacher[col]
            ax.axhline(goal, color="k", lw=1, ls="--", label="goal (4 steps)")
        ax.set_xscale("log")
        all_steps = sorted({s for job in results.values() for s in job})
        ax.set_xticks(all_steps, [str(s) for s in all_steps])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if col != "psnr_vs_teacher":
            ax.set_yscale("log")  # a collapsing run (FD in the hundreds) must not flatten the others
        ax.set_xlabel("training steps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    refs = [h for h in axes[1].get_lines() if h.get_label() in ("teacher", "goal (4 steps)")]
    if refs:  # the black lines: the teacher's level and the 4-step goal
        axes[1].legend(handles=refs, fontsize=7, loc="upper left")
    axes[1].set_title("sharpness (log scale)")
    axes[2].set_title("FD (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(jobs: str, out: str) -> None:
    results, teacher = collect(Path(jobs))
    if not results:
        raise SystemExit(f"{jobs}: no evaluated snapshots (run.sh stages evaluate and keep first)")
    o = Path(out)
    (o / "table.md").write_text(table(results, teacher))
    (o / "results.json").write_text(json.dumps({"teacher": teacher, "students": results}, indent=1))
    figure(results, teacher, o / "quality_vs_steps.png")
    print((o / "table.md").read_text())


if __name__ == "__main__":
    main(*sys.argv[1:3])
