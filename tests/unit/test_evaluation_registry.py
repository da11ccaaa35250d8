"""The metric registry is the only list of metrics: what evaluate computes and writes, evaluate's table and
plot, and the report's tables all take their names, headers and directions from it."""

import csv
import json

import pytest
import torch
import yaml

from dancelcm.evaluation import runner
from dancelcm.evaluation.metrics import BY_KEY, COMPARED, HEADLINE, METRICS, NFE_PANELS, TABLE_COLUMNS
from dancelcm.evaluation.runner import evaluate
from dancelcm.evaluation.study import report
from dancelcm.evaluation.tables import write_outputs
from dancelcm.sampling import Sampler


class _Loader(list):
    @property
    def dataset(self):
        return range(sum(len(b["clip_index"]) for b in self))


def _batch(b=2, f=4, size=16):
    """A synthetic-style batch: every region the quality metrics know (figure, turned frames, face, motion)."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(b, f, 3, size, size, generator=g) * 2 - 1
    figure = torch.zeros(b, f, 1, size, size)
    figure[..., 4:12, 6:10] = 1
    return {
        "video": video,
        "figure_mask": figure,
        "turned": torch.tensor([[False, True, True, False]] * b),
        "face_boxes": torch.tensor([0.3, 0.2, 0.6, 0.5]).expand(b, f, 4).clone(),
        "face_boxes_valid": torch.ones(b, f, dtype=torch.bool),
        "clip_index": torch.arange(b),
        "video_id": [f"v{i}" for i in range(b)],
    }


def _samplers():
    def teacher(batch, noise):
        return (batch["video"] + 0.1 * noise).clamp(-1, 1)

    def student(batch, noise):
        return (batch["video"] + 0.3 * noise).clamp(-1, 1)

    return [Sampler("teacher DDIM-2", 2, teacher), Sampler("student 1-step", 1, student)]


def _evaluation(tmp_path):
    loader = _Loader([_batch()])
    result = evaluate(_samplers(), loader, lambda batch: (4, 3, 16, 16), reference="teacher DDIM-2")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "samples.png").write_bytes(b"an earlier run's")  # not listed: this run kept no clips
    written = write_outputs(result, tmp_path)
    assert written == ["metrics.json", "table.md", "per_clip.csv", "quality_vs_nfe.png"]  # what evaluate logs
    assert all((tmp_path / n).is_file() for n in written)
    return result


def test_the_registry_has_one_entry_per_metric_and_consistent_views():
    keys = [m.key for m in METRICS]
    assert len(keys) == len(set(keys)) and BY_KEY.keys() == set(keys)
    headers = [m.header for m in TABLE_COLUMNS]
    assert len(headers) == len(set(headers))
    assert set(NFE_PANELS) <= {m for m in METRICS if m.headline}
    assert set(COMPARED) == {m.key for m in METRICS if m.kind != "cost"} and COMPARED[: len(HEADLINE)] == HEADLINE
    assert all(m.title for m in METRICS if m.headline or m.nfe_panel)  # every plotted metric has a panel title


def test_every_metric_evaluate_writes_is_a_registry_key(tmp_path):
    result = _evaluation(tmp_path)
    with open(tmp_path / "per_clip.csv") as fh:
        columns = next(csv.reader(fh))
    assert columns[:3] == ["sampler", "clip", "video_id"]
    # every region of the batch was scored, against the ground truth and against the teacher
    assert {"psnr_turned_figure", "ssim_face", "psnr_vs_teacher_motion", "sharpness", "l1"} <= set(columns)
    assert set(columns[3:]) <= BY_KEY.keys()
    for row in json.loads((tmp_path / "metrics.json").read_text()).values():
        assert set(row) - {"clips"} <= BY_KEY.keys()
        # a per-clip metric is summarised over clips ({mean, std, n}), a cost or a distribution metric is a number
        assert all(isinstance(v, dict) == (BY_KEY[k].kind == "clip") for k, v in row.items() if k != "clips")
    # table.md: the registry's headers of the metrics present, in the registry's order
    header = (tmp_path / "table.md").read_text().splitlines()[0]
    present = [m.header for m in TABLE_COLUMNS if any(m.key in v for v in result["samplers"].values())]
    assert header == "| sampler | " + " | ".join(present) + " |"


def test_a_metric_missing_from_the_registry_stops_the_evaluation(monkeypatch):
    def with_a_new_metric(video, batch, regions):
        return {"psnr": torch.zeros(len(video)), "new_metric": torch.zeros(len(video))}

    monkeypatch.setattr(runner, "clip_metrics", with_a_new_metric)
    with pytest.raises(KeyError, match=r"new_metric.*dancelcm/evaluation/metrics.py"):
        evaluate(_samplers(), _Loader([_batch()]), lambda batch: (4, 3, 16, 16))


def test_report_headers_and_directions_come_from_the_registry(tmp_path):
    evaluation = tmp_path / "evaluation"
    _evaluation(evaluation)
    for variant, seed in (("full", 0), ("baseline", 0)):
        run = tmp_path / "runs" / f"{variant}_s{seed}"
        (run / "csv" / "version_0").mkdir(parents=True)
        (run / "csv" / "version_0" / "metrics.csv").write_text("step,train/loss_cd\n0,1.0\n")
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+variant={variant}", f"seed={seed}"]))
        (run / "eval").mkdir()
        for name in ("metrics.json", "per_clip.csv"):
            (run / "eval" / name).write_bytes((evaluation / name).read_bytes())
    table = report(tmp_path / "runs", compare="variant=full")["table"]

    def columns(prefix: str) -> list[str]:
        line = next(line for line in table.splitlines() if line.startswith(prefix))
        return line.strip("| ").split(" | ")[prefix.count("|") - 1 :]

    # the per-run and over-seeds tables: headline metrics, in the registry's order
    for prefix in ("| run | sampler |", "| runs | sampler | seeds |"):
        cols = columns(prefix)
        assert cols and cols == [k for k in HEADLINE if k in cols]
    # every metric the runs share is compared, with the registry's direction, in the registry's report order
    every = table.split("Every metric")[1].splitlines()
    rows = [line.strip("| ").split(" | ")[:2] for line in every if line.startswith("| ")][1:]
    keys = [k for k, _ in rows]
    assert keys == [k for k in COMPARED if k in keys]
    assert all(better == BY_KEY[k].better for k, better in rows)
    assert {"ssim_turned_figure", "sharpness", "l1", "psnr_vs_teacher"} <= set(keys)
