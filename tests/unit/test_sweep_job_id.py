"""Sweep job folder names: readable swept values and seed, a hash of the rest (dancelcm.train.sweep_job_id)."""

from omegaconf import OmegaConf

from dancelcm import train


def _job_id(monkeypatch, task, params):
    hc = OmegaConf.create(
        {
            "sweeper": {"params": params},
            "job": {"config": {"override_dirname": {"exclude_keys": ["trainer.max_steps", "+ablation"]}}},
            "overrides": {"task": task},
        }
    )
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.get", staticmethod(lambda: hc))
    return train.sweep_job_id()


def test_seed_swept_on_the_command_line_is_named_not_hashed(monkeypatch):
    params = {"+variant": "baseline,full"}
    rest = ["data.batch_size=4", "trainer.max_steps=150", "+ablation=removal"]
    s0 = _job_id(monkeypatch, ["+variant=full", "seed=0", *rest], params)
    s1 = _job_id(monkeypatch, ["+variant=full", "seed=1", *rest], params)
    assert s0.split("__")[0] == "variant=full,seed=0"
    assert s1.split("__")[0] == "variant=full,seed=1"
    assert s0.split("__")[1] == s1.split("__")[1]  # the other overrides hash alike
    # excluded keys (the step budget) do not change the folder, so a longer run resumes the same job
    longer = _job_id(monkeypatch, ["+variant=full", "seed=0", "data.batch_size=4", "trainer.max_steps=900"], params)
    assert longer == s0
    # a science override does
    other = _job_id(monkeypatch, ["+variant=full", "seed=0", "data.batch_size=8", "trainer.max_steps=150"], params)
    assert other.split("__")[0] == s0.split("__")[0] and other != s0


def test_no_overrides_beyond_the_swept_ones_gives_no_hash(monkeypatch):
    assert _job_id(monkeypatch, ["method.face.enabled=true"], {"method.face.enabled": "true,false"}) == (
        "method.face.enabled=true"
    )
