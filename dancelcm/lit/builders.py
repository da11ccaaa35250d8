"""Builders from a composed config to typed objects (called by the entry points only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(cfg: Any) -> Any:
    """OmegaConf -> plain Python containers (what goes into hparams and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def latent_geometry(model_cfg: dict, resolution) -> tuple[int, int, tuple[int, int]]:
    """(latent channels, factor, latent size) without loading any weights."""
    ae = model_cfg["autoencoder"]
    if ae["kind"] == "patch":
        factor = int(ae.get("factor", 8))
        channels = 3 * factor * factor
    else:
        factor = int(ae.get("factor", 8))
        channels = int(model_cfg.get("latent_channels", 4))
        config = Path(ae.get("pretrained") or "") / (ae.get("subfolder") or "") / "config.json"
        if ae.get("pretrained") and config.is_file():  # the folder's own geometry wins over the yaml's
            from dancelcm.models.autoencoder import vae_geometry

            factor, channels = vae_geometry(json.loads(config.read_text()))
    h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if h % factor or w % factor:
        raise ValueError(f"data.resolution={resolution} is not divisible by the autoencoder factor {factor}")
    return channels, factor, (h // factor, w // factor)


def animator_kwargs(model_cfg: dict, resolution) -> dict:
    channels, factor, size = latent_geometry(model_cfg, resolution)
    animator = dict(model_cfg["animator"])
    if animator.get("input_skip") is not None:  # its gain follows the noise schedule
        animator["input_skip"] = {"scheduler": dict(model_cfg["scheduler"]), **animator["input_skip"]}
    if animator.get("pixel_refiner") is not None:
        animator["pixel_refiner"] = {"scheduler": dict(model_cfg["scheduler"]), **animator["pixel_refiner"]}
    return dict(latent_channels=channels, latent_size=list(size), factor=factor, **animator)


def data_geometry(data_cfg: dict) -> dict:
    """What a model bundle records of its training clips (``bundle.json`` ``data``): the dataset's geometry, or for
    clips precomputed from a large teacher the geometry and prompt ``precompute`` made them with."""
    if str(data_cfg.get("_target_", "")).endswith("PrecomputedDataModule"):
        from dancelcm.data.precomputed import clip_geometry

        return clip_geometry(data_cfg["root"])
    keys = ("resolution", "num_frames", "stride", "face_size", "face_scale")
    return {k: data_cfg[k] for k in keys if k in data_cfg}


def build_module(cfg: DictConfig):
    """The LightningModule of ``cfg.method.kind``: teacher pretraining or distillation."""
    method = plain(cfg.method)
    data = plain(cfg.data)
    kind = method.pop("kind", None)
    if kind == "teacher":
        from dancelcm.lit.teacher import TeacherModule

        model = plain(cfg.model)
        return TeacherModule(
            model=animator_kwargs(model, data["resolution"]),
            autoencoder=model["autoencoder"],
            scheduler=model["scheduler"],
            method=method,
            data=data_geometry(data),
            seed=int(cfg.seed),
        )
    if kind == "distill":
        from dancelcm.lit.distill import DistillModule

        return DistillModule(method=method, data=data_geometry(data), seed=int(cfg.seed))
    raise ValueError(f"method.kind={kind!r}: unknown (available: teacher, distill)")
