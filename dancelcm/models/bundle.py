"""A self-contained model folder: the animator, its noise schedule, its autoencoder and data settings.

::

    DIR/bundle.json                      kind (teacher | student), scheduler, autoencoder, data geometry,
                                         sampling defaults (a student: its segments, no CFG)
    DIR/animator_config.json             the animator's architecture
    DIR/unet/                            the backbone in diffusers format (UNet3DConditionModel)
    DIR/conditioners.safetensors         pose guider, reference and face embedders
    DIR/scheduler/scheduler_config.json  a diffusers sampler: a teacher's DDIMScheduler, a student's TCDScheduler
                                         (flow-matching teachers: their own flow scheduler; students: Euler)
    DIR/vae/                             a learned autoencoder (diffusers AutoencoderKL), copied in so the
                                         folder is self-contained (``bundle.json`` then names it ``vae``)

Teachers are shipped and loaded this way; the distillation rebuilds its frozen teacher from such a
folder instead of storing it, and exports its student the same way (``<run>/export``). The project itself
reads the noise schedule from ``bundle.json`` (``scheduler``: the teacher's config) and samples a student
with ``consistency_sample``; ``scheduler/`` is for diffusers-style loops.

A student's ``scheduler/`` is a ``TCDScheduler`` that reproduces ``consistency_sample`` (see
:func:`student_scheduler`): with ``eta = 0`` a TCD step is the segment sampler's jump from one segment edge to
the next, given custom timesteps on the edges (``bundle.json``: ``sampling.timesteps[str(steps)]``)::

    sched = TCDScheduler.from_pretrained(DIR, subfolder="scheduler")
    sched.set_timesteps(timesteps=meta["sampling"]["timesteps"][str(steps)])
    x = noise
    for t in sched.timesteps:
        x = sched.step(student(x, t, cond), t, x, eta=0.0).prev_sample

One adaptation: TCD's last step lands on timestep 0, the segment sampler's on the clean end. The exported
betas are the teacher's with ``alphas_cumprod[0] = 1`` (``trained_betas``; every other ``alphas_cumprod`` is
unchanged), so timestep 0 *is* the clean end. The student never evaluates timestep 0 (its lowest sampling
timestep is ``T / K - 1``); only a K = T student does, and it keeps the teacher's betas (its last step then
ends at timestep 0, not on the clean end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dancelcm.cli import ConfigError, MissingPathError
from dancelcm.diffusion import Schedule, Segments, schedule_from_config
from dancelcm.models.animator import Animator
from dancelcm.models.autoencoder import build_autoencoder

if TYPE_CHECKING:
    from diffusers import TCDScheduler


@dataclass
class Bundle:
    animator: Animator
    schedule: Schedule
    autoencoder: object  # a VideoAutoencoder (an nn.Module)
    meta: dict

    def to(self, device) -> Bundle:
        """The animator and the autoencoder on ``device`` (the schedule moves with the tensors it meets)."""
        self.animator.to(device)
        self.autoencoder.to(device)
        return self


def bundle_uncond(bundle, override: list[str] | None = None) -> list[str]:
    """The conditions the unconditional half of CFG drops: ``override`` when given, else the setting the
    teacher was trained and validated with (its bundle's ``sampling.uncond``). Names are checked against the
    model's conditions, since dropping an unknown name would silently leave CFG without effect."""
    default = bundle.meta.get("sampling", {}).get("uncond", ["reference"])
    names = list(override if override is not None else default)
    known = list(bundle.animator.condition_names)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"uncond={names}: CFG's unconditional half must drop one or more of this model's conditions {known}"
            + (f"; {unknown} is not one" if unknown else "")
            + " (guidance=1.0 samples without CFG)"
        )
    return names


def flow_student_scheduler(meta: dict):
    """A flow-matching student's diffusers sampler: ``FlowMatchEulerDiscreteScheduler`` with ``shift = 1`` and
    custom sigmas on the segment edges. One Euler step of the student's velocity from one edge's sigma to the next
    *is* the segment sampler's jump, so the plain loop reproduces ``consistency_sample``; the sigmas are the
    teacher's shifted ones (``bundle.json``: ``sampling.sigmas[str(steps)]``), passed as given (shift 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from dancelcm.diffusion import schedule_from_config

    seg = Segments(**meta["segments"])
    schedule = schedule_from_config(meta["scheduler"])
    sigmas = {
        str(n): [float(schedule.sigma(t)) for t, _ in seg.sampling_steps(n)] for n in range(1, seg.num_segments + 1)
    }
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        {"num_train_timesteps": schedule.num_train_timesteps, "shift": 1.0}
    )
    sampling = {
        "scheduler": "FlowMatchEulerDiscreteScheduler",
        "sigmas": sigmas,
        "diffusers": "FlowMatchEulerDiscreteScheduler.from_pretrained(DIR, subfolder='scheduler'); "
        "set_timesteps(sigmas=sigmas[str(steps)]); step(velocity, t, x).prev_sample",
    }
    return scheduler, sampling


def student_scheduler(meta: dict) -> tuple[TCDScheduler, dict]:
    """A student bundle's diffusers sampler and what ``bundle.json`` records about it: a ``TCDScheduler`` (eta 0)
    on the teacher's noise schedule, with ``alphas_cumprod[0] = 1`` so its last step lands on the clean end (see
    the module docstring), and the custom timesteps of 1..K steps: the top edges of ``Segments.sampling_steps``."""
    from diffusers import DDPMScheduler, TCDScheduler

    seg = Segments(**meta["segments"])
    teacher = DDPMScheduler.from_config(meta["scheduler"])  # the teacher's betas (zero-SNR rescaled if it says so)
    timesteps = {str(n): [t for t, _ in seg.sampling_steps(n)] for n in range(1, seg.num_segments + 1)}
    betas = teacher.betas.clone()
    if min(min(ts) for ts in timesteps.values()) > 0:  # timestep 0 is never evaluated: make it the clean end
        betas[1] = 1 - teacher.alphas_cumprod[1]  # alphas_cumprod[1] unchanged (then every later one)
        betas[0] = 0.0
    scheduler = TCDScheduler.from_config(
        {
            "num_train_timesteps": teacher.config.num_train_timesteps,
            "trained_betas": betas.tolist(),
            "prediction_type": teacher.config.prediction_type,
            "rescale_betas_zero_snr": False,  # already in the betas
            "clip_sample": False,
            "thresholding": False,
            "set_alpha_to_one": True,
            "original_inference_steps": seg.num_grid,  # the distillation grid: the edges lie on it
            "timestep_spacing": "trailing",
        }
    )
    sampling = {
        "scheduler": "TCDScheduler",
        "eta": 0.0,
        "timesteps": timesteps,
        "diffusers": "TCDScheduler.from_pretrained(DIR, subfolder='scheduler'); "
        "set_timesteps(timesteps=timesteps[str(steps)]); step(output, t, x, eta=0.0).prev_sample",
    }
    return scheduler, sampling


def bundle_fingerprint(directory: str | Path) -> str:
    """A cheap identity of a bundle folder's contents: every file's relative name and size, and a hash of its first
    and last MiB (a retrained or re-exported bundle changes it; reading 28 GB of weights is not needed). Stored
    with what depends on the exact weights of a base bundle: a LoRA student's export and checkpoints."""
    import hashlib

    d = Path(directory)
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(d)}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(2**20))
            if size > 2**21:
                fh.seek(-(2**20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


def student_scheduler_for(meta: dict):
    """A student's diffusers sampler and its ``bundle.json`` record, for its teacher's kind of schedule."""
    from dancelcm.diffusion.schedule import is_flow_config

    return flow_student_scheduler(meta) if is_flow_config(meta["scheduler"]) else student_scheduler(meta)


def save_bundle(directory: str | Path, animator: Animator, meta: dict, autoencoder=None) -> Path:
    """Write the bundle. A learned ``autoencoder`` (``DiffusersAutoencoder``) is saved into ``DIR/vae`` and
    ``meta['autoencoder']['pretrained']`` rewritten to that relative name; the patch autoencoder has no weights.
    ``DIR/scheduler`` is the teacher's DDIM scheduler for a teacher, the segment sampler as a TCD scheduler for a
    student (``meta['kind'] == 'student'`` with ``meta['segments']``; recorded in ``meta['sampling']``)."""
    for key in ("scheduler", "autoencoder", "data"):
        if key not in meta:
            raise ValueError(f"bundle meta needs {key!r}")
    d = animator.save_pretrained(directory)
    from diffusers import DDIMScheduler

    from dancelcm.models.autoencoder import DiffusersAutoencoder

    if isinstance(autoencoder, DiffusersAutoencoder):
        autoencoder.vae.save_pretrained(str(d / "vae"), safe_serialization=True)
        meta = {**meta, "autoencoder": {**meta["autoencoder"], "pretrained": "vae", "subfolder": None}}

    from dancelcm.diffusion.schedule import is_flow_config

    flow = is_flow_config(meta["scheduler"])
    if meta.get("kind") == "student" and "segments" in meta:
        scheduler, sampling = flow_student_scheduler(meta) if flow else student_scheduler(meta)
        meta = {**meta, "sampling": {**meta.get("sampling", {}), **sampling}}
    elif flow:  # the teacher's own flow scheduler (Euler, or Wan's UniPC with flow sigmas)
        import diffusers

        cfg = dict(meta["scheduler"])
        scheduler = getattr(diffusers, cfg.get("_class_name", "FlowMatchEulerDiscreteScheduler")).from_config(cfg)
    else:
        # as the project's DDIM samples: no clipping of x0, the last step lands on the clean end
        scheduler = DDIMScheduler.from_config({**meta["scheduler"], "clip_sample": False, "set_alpha_to_one": True})
    scheduler.save_pretrained(str(d / "scheduler"))
    (d / "bundle.json").write_text(json.dumps(meta, indent=1))
    return d


# -- LoRA students: the adapters in the diffusers / peft format + the base bundle's path --------------------------
def save_lora_bundle(directory, animator, spec, meta: dict, base: str, state=None):
    """A LoRA student's export: ``pytorch_lora_weights.safetensors`` (peft format with the diffusers prefix),
    ``adapter_config.json`` (peft's LoraConfig), ``student_weights.safetensors`` (its face path), the student's
    ``animator_config.json``, ``bundle.json`` (``lora``: rank, alpha, targets, prefix; ``base``: the teacher bundle
    whose weights it adapts, as an absolute path) and ``scheduler/`` as for any student. A few MB, whatever the base's
    size. :func:`dancelcm.models.bundle.load_bundle` reads it back (base + adapters)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from dancelcm.models.lora import LORA_WEIGHTS, OWN_WEIGHTS, lora_prefix, lora_state_dicts

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    adapters, own = lora_state_dicts(animator, state)
    save_file(adapters, str(d / LORA_WEIGHTS), metadata={"format": "pt"})
    if own:
        save_file(own, str(d / OWN_WEIGHTS))
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.target_modules)
    )
    (d / "adapter_config.json").write_text(json.dumps(config.to_dict(), indent=1, default=list))
    (d / "animator_config.json").write_text(json.dumps(dict(animator.config), indent=1))
    lora = {
        "rank": spec.rank,
        "alpha": spec.alpha,
        "target_modules": list(spec.target_modules),
        "dropout": spec.dropout,
        "prefix": lora_prefix(animator.backbone),
        "weights": LORA_WEIGHTS,
    }
    meta = {
        **meta,
        "format": "lora",
        "base": str(Path(base).resolve()),
        "base_fingerprint": bundle_fingerprint(base),
        "lora": lora,
    }
    scheduler, sampling = student_scheduler_for(meta)
    meta = {**meta, "sampling": {**meta.get("sampling", {}), **sampling}}
    scheduler.save_pretrained(str(d / "scheduler"))
    (d / "bundle.json").write_text(json.dumps(meta, indent=1))
    return d


def load_lora_animator(directory, meta: dict, base_animator: Animator) -> Animator:
    """The student animator of a LoRA export: ``base_animator`` (the loaded base bundle's; with a face path, its
    weights moved into a network that has one) with the exported adapters and own weights loaded (strictly)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from dancelcm.models.lora import ADAPTER, OWN_WEIGHTS, LoraSpec, add_lora

    d = Path(directory)
    config = json.loads((d / "animator_config.json").read_text())
    if config.get("face") and getattr(base_animator, "family", None) == "wan_animate":
        animator = base_animator
        animator.add_face_path(config["face"])  # its weights come with the student's own (below)
    elif config.get("face") and not base_animator.config.get("face"):
        animator = Animator(**config)
        missing, unexpected = animator.load_state_dict(base_animator.state_dict(), strict=False)
        if unexpected or [k for k in missing if "face" not in k and "_ip" not in k]:
            raise ValueError(f"{d}: the base bundle {meta['base']} does not fit this student's architecture")
    else:
        animator = base_animator
    lora = meta["lora"]
    spec = LoraSpec(int(lora["rank"]), float(lora["alpha"]), tuple(lora["target_modules"]), float(lora["dropout"]))
    add_lora(animator.backbone, spec)
    prefix = lora["prefix"] + "."
    weights = {k.removeprefix(prefix): v for k, v in load_file(str(d / lora["weights"])).items()}
    result = set_peft_model_state_dict(animator.backbone, weights, adapter_name=ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{d / lora['weights']}: weights for no layer of the base: {result.unexpected_keys[:3]}")
    loaded = {n for n, _ in animator.backbone.named_parameters() if ("lora_A" in n or "lora_B" in n)}
    if len(weights) != len(loaded):
        raise ValueError(f"{d / lora['weights']}: {len(weights)} adapter tensors for {len(loaded)} adapter weights")
    if (d / OWN_WEIGHTS).is_file():
        own = load_file(str(d / OWN_WEIGHTS))
        missing, unexpected = animator.load_state_dict(own, strict=False)
        if unexpected:
            raise ValueError(f"{d / OWN_WEIGHTS}: weights for no parameter of the student: {unexpected[:3]}")
    return animator.eval().requires_grad_(False)


# How the embedded-default teacher (checkpoints/synthetic_teacher) is made: the hint of a missing-bundle error.
TEACHER_COMMAND = (
    "make teacher (python -m dancelcm.train +experiment=synthetic_teacher, then "
    "+experiment=synthetic_teacher_refine; hours on a CPU)"
)


SHIPPED_TEACHER = Path(__file__).resolve().parents[2] / "checkpoints" / "synthetic_teacher"


def missing_bundle_hint(directory: str | Path) -> str:
    """How to get the bundle a command looked for: the shipped teacher's recipe, or a teacher for one's own data."""
    if Path(directory).resolve() == SHIPPED_TEACHER:
        return f"Make it with `{TEACHER_COMMAND}`."
    return (
        "Point it at a bundle folder: a run's export/ (a teacher trained on your data, e.g. `python -m "
        "dancelcm.train +experiment=tiktok_teacher data.root=DIR` writes runs/tiktok_teacher/export) or a shipped one."
    )


def load_bundle(directory: str | Path, option: str = "model_dir", torch_dtype=None) -> Bundle:
    """Load a bundle folder; ``option`` names the setting that pointed here in a missing-folder error. A local
    Wan2.2-Animate repository (its ``model_index.json``) is a teacher bundle as it is (:mod:`dancelcm.models.wan`)."""
    d = Path(directory)
    from dancelcm.models.wan.bundle import is_wan_folder

    if is_wan_folder(d):
        from dancelcm.models.wan.bundle import load_wan_teacher

        animator, codec, meta = load_wan_teacher(d, option, torch_dtype=torch_dtype)
        return Bundle(animator, schedule_from_config(meta["scheduler"]), codec, meta)
    if not (d / "bundle.json").is_file():
        if "wan" in d.name.lower():  # most likely a Wan2.2-Animate folder: say what it must hold
            from dancelcm.models.wan.inputs import check_model_folder

            check_model_folder(d, option)
        hint = missing_bundle_hint(d)
        what = "no such folder" if not d.exists() else "no model bundle there (bundle.json missing)"
        raise MissingPathError(f"{option}={d}: {what}. {hint}")
    meta = json.loads((d / "bundle.json").read_text())
    if meta.get("format") == "lora":  # a LoRA student: its base bundle + the adapters in this folder
        from dancelcm.models.wan.bundle import is_wan_folder

        if not (Path(meta["base"]) / "bundle.json").is_file() and not is_wan_folder(meta["base"]):
            raise MissingPathError(
                f"{option}={d}: this LoRA student adapts the bundle {meta['base']} (bundle.json 'base'), which is "
                "not there: put the teacher bundle back there or edit 'base' to where it is now"
            )
        base = load_bundle(meta["base"], option=f"{d}/bundle.json base")
        found = bundle_fingerprint(meta["base"])
        if meta.get("base_fingerprint") and found != meta["base_fingerprint"]:
            raise ConfigError(
                f"{option}={d}: this LoRA student adapts the bundle {meta['base']} as it was when trained "
                f"(fingerprint {meta['base_fingerprint']}), but the folder there has changed ({found}): its adapters "
                "would sit on other weights. Point bundle.json 'base' at the original teacher bundle"
            )
        animator = load_lora_animator(d, meta, base.animator)
        return Bundle(animator, schedule_from_config(meta["scheduler"]), base.autoencoder, meta)
    if meta.get("family") == "wan_animate":  # a Wan student: its transformer/, the teacher folder's VAE
        from dancelcm.models.wan.bundle import WanVideoCodec, load_wan_student

        ae = meta["autoencoder"]
        codec = WanVideoCodec(ae["pretrained"], ae.get("subfolder", "vae"))
        return Bundle(load_wan_student(d, meta), schedule_from_config(meta["scheduler"]), codec, meta)
    animator = Animator.from_pretrained(d)
    schedule = schedule_from_config(meta["scheduler"])
    ae = dict(meta["autoencoder"])
    inside = d / str(ae.get("pretrained") or "")
    if ae.get("kind") == "diffusers" and ae.get("pretrained") and (inside / "config.json").is_file():
        ae["pretrained"] = str(inside)  # the copy inside the bundle (see save_bundle)
    if torch_dtype is not None:
        animator.to(torch_dtype)
    return Bundle(animator, schedule, build_autoencoder(**ae), meta)


def half_copy(src: str | Path, dst: str | Path, max_rel_error: float = 1e-3) -> dict[str, list[str]]:
    """Copy a bundle folder with its float weights stored as float16 (half the size: what ships in git).

    A tensor stays float32 when float16 would change it by more than ``max_rel_error`` (RMS error relative
    to its RMS; e.g. near-zero layers that fall into float16's subnormal range) or overflow. Loading casts
    back to the model's float32. ``dst`` is written beside as ``<dst>.tmp`` and renamed, so an interrupted
    copy never leaves half a bundle. Returns ``{weights file: [names kept float32]}``."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    if not (src / "bundle.json").is_file():
        raise MissingPathError(f"{src}: no model bundle here (bundle.json missing)")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors"))  # the weights are written below
    kept: dict[str, list[str]] = {}
    for f in sorted(src.rglob("*.safetensors")):
        out, names = {}, []
        for k, v in load_file(str(f)).items():
            h = v.half() if v.is_floating_point() else v
            if v.is_floating_point() and v.dtype != torch.float16:
                rms = v.float().square().mean().sqrt()
                err = (h.float() - v.float()).square().mean().sqrt()
                if not torch.isfinite(h).all() or (rms > 0 and err > max_rel_error * rms):
                    h = v
                    names.append(k)
            out[k] = h
        save_file(out, str(tmp / f.relative_to(src)))
        kept[str(f.relative_to(src))] = names
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return kept
