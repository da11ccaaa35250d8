"""The evaluation's reference cache: many students against one teacher run the teacher once."""

import pytest
import torch

from dancelcm.evaluation.runner import ReferenceCache, evaluate
from dancelcm.sampling import Sampler


def _loader(n_batches=2, b=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_batches):
        video = torch.rand(b, 4, 3, 16, 16, generator=g) * 2 - 1
        out.append({"video": video, "clip_index": torch.arange(i * b, (i + 1) * b), "video_id": [f"v{i}"] * b})
    return out


class _Loader(list):
    @property
    def dataset(self):
        return range(sum(len(b["clip_index"]) for b in self))


def _samplers(calls):
    def teacher(batch, noise):
        calls.append(len(batch["video"]))
        return (batch["video"] + 0.1 * noise[:, :, :, :16, :16]).clamp(-1, 1)

    def student(batch, noise):
        return (batch["video"] + 0.2 * noise[:, :, :, :16, :16]).clamp(-1, 1)

    return [Sampler("teacher", 4, teacher), Sampler("student", 1, student)]


def test_the_cached_reference_gives_the_same_rows_without_running_the_teacher(tmp_path):
    loader = _Loader(_loader())
    shape = lambda batch: (4, 3, 16, 16)  # noqa: E731  (noise shaped like the frames for the fake samplers)
    key = {"teacher": "t", "seed": 0}
    calls = []
    first = evaluate(
        _samplers(calls), loader, shape, reference="teacher", reference_cache=ReferenceCache(tmp_path / "c.pt", key)
    )
    assert calls == [3, 3] and (tmp_path / "c.pt").exists()
    calls.clear()
    again = evaluate(
        _samplers(calls), loader, shape, reference="teacher", reference_cache=ReferenceCache(tmp_path / "c.pt", key)
    )
    assert calls == []  # read back, not recomputed
    a, b = first["samplers"]["student"], again["samplers"]["student"]
    # the run that fills the cache scores the float16 videos it stores, so both runs agree exactly
    assert a["psnr_vs_teacher"]["mean"] == b["psnr_vs_teacher"]["mean"]
    assert first["samplers"]["teacher"]["psnr"]["mean"] == again["samplers"]["teacher"]["psnr"]["mean"]
    assert a["psnr"]["mean"] == b["psnr"]["mean"]
    assert again["samplers"]["teacher"]["seconds_per_clip"] == first["samplers"]["teacher"]["seconds_per_clip"]
    # a cache made under another key (another teacher, seed or data) is not used
    evaluate(
        _samplers(calls), loader, shape, reference="teacher", reference_cache=ReferenceCache(tmp_path / "c.pt", {})
    )
    assert calls == [3, 3]


def test_an_interrupted_evaluation_keeps_the_reference_batches_it_finished(tmp_path):
    loader = _Loader(_loader(n_batches=3))
    shape = lambda batch: (4, 3, 16, 16)  # noqa: E731
    key = {"teacher": "t", "seed": 0}
    calls = []
    samplers = _samplers(calls)

    def student_dies_on_the_second_batch(batch, noise):
        if int(batch["clip_index"][0]) >= 3:
            raise KeyboardInterrupt
        return batch["video"]

    samplers[1] = Sampler("student", 1, student_dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(samplers, loader, shape, reference="teacher", reference_cache=ReferenceCache(tmp_path / "c.pt", key))
    assert calls == [3, 3]  # the teacher ran on two batches before the student died on the second
    cache = ReferenceCache(tmp_path / "c.pt", key)
    assert sorted(cache.videos) == [0, 1, 2, 3, 4, 5]  # both are on disk
    calls.clear()
    evaluate(_samplers(calls), loader, shape, reference="teacher", reference_cache=cache)
    assert calls == [3]  # only the third batch is new


def test_the_cache_key_follows_the_teachers_contents_not_its_path_or_time(tmp_path):
    """A copy of the teacher elsewhere (a git worktree) shares the cache; a changed teacher does not."""
    import os
    import shutil

    from omegaconf import OmegaConf

    from dancelcm.evaluation.runner import reference_cache
    from tests.configs.test_experiment_configs import _save_micro_teacher

    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    copy = tmp_path / "worktree" / "teacher"
    shutil.copytree(teacher, copy)
    for f in copy.rglob("*"):
        os.utime(f, (1, 1))  # other times, same bytes

    def key(t):
        data = {"root": str(tmp_path), "val_split": "test", "val_clips_per_video": 1, "num_frames": 4}
        cfg = OmegaConf.create({"teacher": str(t), "reference_cache": str(tmp_path / "c.pt"), "seed": 0, "data": data})
        return reference_cache(cfg, "teacher DDIM-50 CFG 2").key

    assert key(teacher) == key(copy)
    (copy / "bundle.json").write_text((copy / "bundle.json").read_text().replace('"kind"', '"kind" ', 1))
    assert key(teacher) != key(copy)
