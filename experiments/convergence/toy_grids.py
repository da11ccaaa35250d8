"""The grid question on the exact-teacher toy (tests/unit/toy.py), before the benchmark runs:

    PYTHONPATH=. python experiments/convergence/toy_grids.py [steps=8000] > experiments/convergence/toy_grids.md

For each ``method.segments.grid`` (uniform N=40 as today, fine_end and log_snr at N=40, uniform N=200): the teacher's
DDIM trajectory on that grid against the exact flow (all T timesteps), and a K=4 student distilled on it (``steps``
toy steps, lr 5e-3, one seed) against both its own grid's trajectory and the exact flow. Distances are mean
Euclidean distances in % of the data scale (modes on the unit circle), VP schedule (the benchmark's zero-SNR
scaled-linear) and rectified flow with shift 3. Writes toy_grids.json beside this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dancelcm.diffusion import FlowMatchSchedule, NoiseSchedule
from tests.unit.toy import SCHEDULER, distill_toy, grid_trajectory_errors

GRIDS = [("uniform", 40), ("fine_end", 40), ("log_snr", 40), ("uniform", 200)]


def main(steps: int = 8000) -> dict:
    torch.set_num_threads(1)
    out: dict = {"steps": steps, "teacher": {}, "student": {}}
    for name, schedule, shift in (
        ("vp", NoiseSchedule.from_scheduler_config(dict(SCHEDULER)), None),
        ("flow3", FlowMatchSchedule(1000, 3.0), 3.0),
    ):
        errors = grid_trajectory_errors(schedule, GRIDS, num=512)
        out["teacher"][name] = {f"{g}-{n}": 100 * e for (g, n), e in zip(GRIDS, errors)}
        if name == "vp":  # the benchmark's schedule: students on each grid
            for g, n in GRIDS:
                r = distill_toy(4, steps=steps, lr=5e-3, eval_every=steps // 4, grid=g, num_grid=n, flow_shift=shift)
                out["student"][f"{g}-{n}"] = {
                    "vs_own_grid": 100 * r["final_error"],
                    "vs_exact_flow": 100 * r["exact_error"],
                    "curve_vs_own_grid": [(s, 100 * e) for s, e in r["curve"]],
                }
    print("| grid | teacher vs exact, VP | teacher vs exact, flow shift 3 | K=4 student vs its grid | vs exact flow |")
    print("|---|---|---|---|---|")
    for g, n in GRIDS:
        key = f"{g}-{n}"
        s = out["student"][key]
        print(
            f"| {g} N={n} | {out['teacher']['vp'][key]:.2f} | {out['teacher']['flow3'][key]:.2f} | "
            f"{s['vs_own_grid']:.2f} | {s['vs_exact_flow']:.2f} |"
        )
    (Path(__file__).parent / "toy_grids.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(*(int(a.split("=", 1)[1]) for a in sys.argv[1:]))
