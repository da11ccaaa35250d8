"""A self-contained model folder: the animator, its noise schedule, its autoencoder and data settings.

::

    DIR/bundle.json                      kind (teacher | student), scheduler, autoencoder, data geometry,
                                         sampling defaults (a student: its segments, no CFG)
    DIR/animator_config.json             the animator's architecture
    DIR/unet/                            the backbone in diffusers format (UNet3DConditionModel)
    DIR/conditioners.safetensors         pose guider, reference and face embedders
    DIR/scheduler/scheduler_config.json  the noise schedule as a diffusers DDIMScheduler
    DIR/vae/                             a learned autoencoder (diffusers AutoencoderKL), copied in so the
                                         folder is self-contained (``bundle.json`` then names it ``vae``)

Teachers are shipped and loaded this way; the distillation rebuilds its frozen teacher from such a
folder instead of storing it, and exports its student the same way (``<run>/export``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dancelcm.diffusion import NoiseSchedule
from dancelcm.models.animator import Animator
from dancelcm.models.autoencoder import build_autoencoder


@dataclass
class Bundle:
    animator: Animator
    schedule: NoiseSchedule
    autoencoder: object  # a VideoAutoencoder (an nn.Module)
    meta: dict

    def to(self, device) -> Bundle:
        """The animator and the autoencoder on ``device`` (the schedule moves with the tensors it meets)."""
        self.animator.to(device)
        self.autoencoder.to(device)
        return self


def save_bundle(directory: str | Path, animator: Animator, meta: dict, autoencoder=None) -> Path:
    """Write the bundle. A learned ``autoencoder`` (``DiffusersAutoencoder``) is saved into ``DIR/vae`` and
    ``meta['autoencoder']['pretrained']`` rewritten to that relative name; the patch autoencoder has no weights."""
    for key in ("scheduler", "autoencoder", "data"):
        if key not in meta:
            raise ValueError(f"bundle meta needs {key!r}")
    d = animator.save_pretrained(directory)
    from diffusers import DDIMScheduler

    from dancelcm.models.autoencoder import DiffusersAutoencoder

    if isinstance(autoencoder, DiffusersAutoencoder):
        autoencoder.vae.save_pretrained(str(d / "vae"), safe_serialization=True)
        meta = {**meta, "autoencoder": {**meta["autoencoder"], "pretrained": "vae", "subfolder": None}}

    DDIMScheduler.from_config(meta["scheduler"]).save_pretrained(str(d / "scheduler"))
    (d / "bundle.json").write_text(json.dumps(meta, indent=1))
    return d


# How the embedded-default teacher (checkpoints/synthetic_teacher) is made: the hint of a missing-bundle error.
TEACHER_COMMAND = (
    "make teacher (python -m dancelcm.train +experiment=synthetic_teacher, then "
    "+experiment=synthetic_teacher_refine; hours on a CPU)"
)


def load_bundle(directory: str | Path, make_command: str | None = None) -> Bundle:
    d = Path(directory)
    if not (d / "bundle.json").is_file():
        hint = f" Make it with `{make_command}`." if make_command else ""
        raise FileNotFoundError(f"{d}: no model bundle here (bundle.json missing).{hint}")
    meta = json.loads((d / "bundle.json").read_text())
    animator = Animator.from_pretrained(d)
    schedule = NoiseSchedule.from_scheduler_config(meta["scheduler"])
    ae = dict(meta["autoencoder"])
    inside = d / str(ae.get("pretrained") or "")
    if ae.get("kind") == "diffusers" and ae.get("pretrained") and (inside / "config.json").is_file():
        ae["pretrained"] = str(inside)  # the copy inside the bundle (see save_bundle)
    return Bundle(animator, schedule, build_autoencoder(**ae), meta)
