"""Evaluate samplers on held-out clips: ``python -m dancelcm.evaluate teacher=DIR [key=value ...]``.

Every sampler starts from the same initial noise per clip (seeded by the clip index), so rows are
comparable clip by clip. Per clip: L1, PSNR, SSIM, and region PSNR / SSIM (figure, face, motion,
turned frames: what whole-frame PSNR hides), the sharpness ratio, NFE and seconds; over all frames,
the Frechet distance in the shipped feature network's space (``fd``). Writes ``metrics.json``,
``table.md``, ``per_clip.csv`` and ``quality_vs_nfe.png`` into ``out_dir`` (:mod:`dancelcm.evaluation`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from dancelcm.cli import command
from dancelcm.evaluation.runner import build_samplers, evaluate, reference_cache
from dancelcm.evaluation.tables import markdown_table, write_outputs
from dancelcm.sampling import latent_shape

log = logging.getLogger(__name__)


def _command() -> str:
    """The command line that ran this evaluation (its overrides; none when called in-process)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return "python -m dancelcm.evaluate " + " ".join(overrides)


def run(cfg: DictConfig) -> dict:
    """Evaluates what ``cfg`` (conf/evaluate.yaml) asks for and writes the outputs into ``cfg.out_dir``; returns
    :func:`dancelcm.evaluation.runner.evaluate`'s result."""
    from hydra.utils import instantiate

    from dancelcm.metrics.features import FrameEncoder
    from dancelcm.metrics.perceptual import PerceptualMetrics
    from dancelcm.models.bundle import load_bundle

    torch.manual_seed(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else str(cfg.device)
    bundle = load_bundle(cfg.teacher, option="teacher")
    bundle.to(device)
    dm = instantiate(cfg.data)
    dm.setup("validate")
    loader = dm.val_dataloader()
    samplers, reference = build_samplers(cfg, bundle, device)
    feature_net = FrameEncoder.load(cfg.feature_net) if cfg.feature_net else None
    perceptual = PerceptualMetrics(cfg.get("perceptual"), device)
    result = evaluate(
        samplers,
        loader,
        lambda batch: latent_shape(bundle, batch),
        feature_net,
        cfg.seed,
        cfg.max_clips,
        device=device,
        reference=reference,
        perceptual=perceptual,
        keep_clips=int(cfg.get("sample_clips") or 0),
        reference_cache=reference_cache(cfg, reference),
    )
    header = (
        f"Teacher `{cfg.teacher}` on `{cfg.data.root}` [{cfg.data.val_split}], "
        f"{result['samplers'][samplers[0].name]['clips']} clips, seed {cfg.seed}.\n"
        f"Command: `{_command()}`"
    )
    written = write_outputs(result, Path(cfg.out_dir), header)
    log.info("\n%s", markdown_table(result["samplers"]))
    log.info("wrote %s/{%s}", cfg.out_dir, ",".join(written))
    return result


main = command("evaluate", run, __doc__)


if __name__ == "__main__":
    main()
