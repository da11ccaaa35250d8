"""``python -m dancelcm.tools.bench`` end to end at micro size: every section measured, ratios consistent."""

import json

import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.slow  # the real CLI in a subprocess; tests/unit/test_commands.py runs it in-process


def test_bench_writes_consistent_ratios(synthetic_root, tmp_path):
    out = tmp_path / "bench" / "bench.json"
    proc = run_module(
        [
            "dancelcm.tools.bench",
            "model=animator_micro",
            f"data.root={synthetic_root}",
            "data.resolution=32",
            "data.face_size=16",
            "data.num_frames=4",
            "data.batch_size=2",
            "data.num_workers=0",
            "bench.teacher_steps=4",
            "bench.num_grid=8",
            "bench.train_steps=2",
            "bench.repeats=1",
            "bench.data_clips=8",
            f"output={out}",
        ],
        tmp_path,
    )
    r = json.loads(out.read_text())
    inf = r["inference"]
    assert inf["teacher"]["nfe"] == 8 and inf["student_4"]["nfe"] == 4
    for k in (4, 2, 1):
        s = inf[f"student_{k}"]
        assert s["s_per_clip"] > 0 and s["nfe_bound"] == 8 / k
        assert abs(s["speedup"] - inf["teacher"]["s_per_clip"] / s["s_per_clip"]) < 1e-9
    assert inf["student_1"]["s_per_clip"] < inf["teacher"]["s_per_clip"]  # 1 NFE against 8
    tr = r["training"]
    assert abs(tr["ratio"] - tr["distill_step_s"] / tr["plain_step_s"]) < 1e-9 and tr["ratio"] > 1.0
    c = tr["components"]
    assert c["forward_2B_s"] > 0 and c["forward_B_s"] > 0 and c["forward_backward_B_s"] > 0
    assert (
        abs(
            c["ratio_bound"]
            - (c["forward_2B_s"] + c["forward_B_s"] + c["forward_backward_B_s"]) / c["forward_backward_B_s"]
        )
        < 1e-9
    )
    da = r["data"]
    assert abs(da["consumed_clips_s"] - 2 / tr["distill_step_s"]) < 1e-9 and da["loader_clips_s"] > 0
    assert set(r["targets"]) == {"inference_4_step", "train_step_ratio", "loader_over_consumption"}
    assert r["targets"]["train_step_ratio"]["met"] == (tr["ratio"] <= 1.8)
    table = out.with_suffix(".md").read_text()
    assert "| student 4 steps | 4 |" in table and "| (c) data |" in table
    assert "| (a) inference |" in proc.stdout
