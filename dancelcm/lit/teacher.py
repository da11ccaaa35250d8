"""Teacher training: the standard diffusion objective with condition dropout (so CFG works)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from dancelcm.diffusion import schedule_from_config
from dancelcm.lit.common import (
    NonFinite,
    batch_random,
    lr_factor,
    parse_anneal,
    sample_timesteps,
    value_at,
)
from dancelcm.lit.config import TeacherConfig
from dancelcm.models.animator import Animator
from dancelcm.models.autoencoder import build_autoencoder
from dancelcm.models.bundle import Bundle
from dancelcm.models.conditioning import random_condition_dropout
from dancelcm.models.ema import EMA
from dancelcm.sampling import batch_noise, latent_shape, teacher_sampler

log = logging.getLogger(__name__)


class TeacherModule(L.LightningModule):
    """Trains an :class:`Animator` to denoise video latents given pose, reference (and more) conditions.

    All constructor arguments are plain dicts / numbers (checkpoints load with ``weights_only=True``).
    Validation logs a deterministic loss (fixed noise and timesteps), and ``sample`` runs DDIM + CFG
    with the EMA weights; the sample-video callback calls it.
    """

    def __init__(
        self,
        model: dict[str, Any],
        autoencoder: dict[str, Any],
        scheduler: dict[str, Any],
        method: dict[str, Any],
        data: dict[str, Any] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = cfg = TeacherConfig.parse(method)  # every option in its range, before anything is built
        self.nonfinite = NonFinite(cfg.nonfinite)
        self.lr_anneal = parse_anneal(cfg.lr_anneal, "method.lr_anneal")
        self.autoencoder = build_autoencoder(**autoencoder)
        self.animator = Animator(**model)
        init_from = cfg.init_from
        if init_from:  # continue from a bundle's weights (e.g. a shipped teacher) with a fresh optimizer
            from dancelcm.models.bundle import load_bundle

            state = load_bundle(init_from).animator.state_dict()
            try:
                missing, unexpected = self.animator.load_state_dict(state, strict=False)
            except RuntimeError as e:  # shape mismatches
                raise ValueError(f"method.init_from={init_from}: its animator does not fit model.animator: {e}") from e
            # only the input skip and pixel refiner may start fresh (a bundle trained without them: they start at init)
            fresh = [k for k in missing if not k.startswith(("input_skip.", "pixel_refiner."))]
            if fresh or unexpected:
                raise ValueError(
                    f"method.init_from={init_from}: its animator does not fit model.animator "
                    f"(missing {fresh[:5]}, unexpected {unexpected[:5]})"
                )
            if missing:
                log.info(
                    "init_from %s: %s start at their init (not in the bundle)",
                    init_from,
                    sorted({k.split(".")[0] for k in missing}),
                )
        self.ema = EMA(self.animator, cfg.ema_decay, warmup=True) if cfg.ema_decay > 0 else None
        self.schedule = schedule_from_config(scheduler)
        self.condition_dropout = dict(cfg.condition_dropout)
        unknown = set(self.condition_dropout) - set(self.animator.condition_names)
        if unknown:
            names = self.animator.condition_names
            raise ValueError(f"condition_dropout names {sorted(unknown)} are not conditions of the model {names}")
        self.sampling = dataclasses.asdict(cfg.sampling)
        self.timestep_power = cfg.timestep_powers()  # [(start_step, power)]: the power from each global step on

    # -- pieces ----------------------------------------------------------------------------------------
    def conditions(self, batch: dict) -> dict:
        return self.animator.conditions(batch, self.autoencoder)

    @property
    def sampling_net(self) -> torch.nn.Module:
        return self.ema.shadow if self.ema is not None else self.animator

    def diffusion_loss(self, net, z0: torch.Tensor, cond: dict, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """MSE on the raw output's target; with ``loss_weight_gamma`` the error is measured on x0 with
        weight ``min(SNR + 1, gamma)`` (the v-prediction weighting, truncated), whatever the output type."""
        x_t = self.schedule.add_noise(z0, eps, t)
        out = net(x_t, self.schedule.network_timestep(t), cond)
        gamma = self.cfg.loss_weight_gamma
        if not gamma:
            return F.mse_loss(out.float(), self.schedule.target(z0, eps, t))
        x0_pred, _ = self.schedule.to_x0_eps(out, x_t, t)
        w = (self.schedule.snr(t).to(z0.device) + 1).clamp(max=gamma)
        return (w * (x0_pred - z0.float()).square().flatten(1).mean(1)).mean() / gamma

    # -- Lightning -------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        with torch.no_grad():
            z0 = self.autoencoder.encode(batch["video"])
            rng = batch_random(self, z0.shape[0])
            cond = random_condition_dropout(self.conditions(batch), self.condition_dropout, rng)
        power = value_at(self.timestep_power, self.global_step, 1.0)
        t = sample_timesteps(z0.shape[0], self.schedule.num_train_timesteps, power, z0.device, rng)
        eps = rng.randn(z0.shape).to(z0.device, z0.dtype)
        loss = self.diffusion_loss(self.animator, z0, cond, t, eps)

        def details() -> str:  # only formatted when something is wrong (no device sync per step)
            return f" (timesteps {t.tolist()}, videos {batch.get('video_id')})"

        if not self.nonfinite.check(self, loss, "training loss", details):
            return None
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # the global-batch mean
        if len(self.timestep_power) > 1:
            self.log("train/timestep_power", power)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.nonfinite.check_gradients(self, self.animator.parameters(), optimizer)

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer step, then the EMA update (once per real step, also under gradient accumulation)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.animator)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        z0 = self.autoencoder.encode(batch["video"])
        cond = self.conditions(batch)
        g = torch.Generator().manual_seed(1000 + batch_idx)  # the same noise at every validation
        for t_val in (100, 500, 900):
            eps = torch.randn(z0.shape, generator=g).to(z0.device)
            t = torch.full((z0.shape[0],), t_val, device=z0.device, dtype=torch.long)
            loss = self.diffusion_loss(self.sampling_net, z0, cond, t, eps)
            self.log(f"val/loss_t{t_val}", loss, sync_dist=True, batch_size=z0.shape[0])

    @torch.no_grad()
    def sample(
        self, batch: dict, steps: int | None = None, guidance: float | None = None, seed: int = 0
    ) -> torch.Tensor:
        """DDIM (+ CFG) samples for a batch with the sampling weights (EMA), decoded to video (B, F, 3, H, W)."""
        steps = steps or self.sampling["steps"]
        guidance = self.sampling["guidance"] if guidance is None else guidance
        bundle = Bundle(self.sampling_net, self.schedule, self.autoencoder, {})
        shape = latent_shape(bundle, batch)
        noise = batch_noise(batch["pose"].shape[0], shape, seed).to(self.device)
        return teacher_sampler(bundle, steps, guidance, list(self.sampling["uncond"]))(batch, noise)

    def sample_for_logging(self, batch: dict, seed: int = 0) -> dict[str, torch.Tensor]:
        """The validation videos: the reference sampler (DDIM N + CFG) and a 4-step DDIM for contrast."""
        n, g = self.sampling["steps"], self.sampling["guidance"]
        return {f"ddim{n}_cfg{g:g}": self.sample(batch, n, g, seed), "ddim4": self.sample(batch, 4, 1.0, seed)}

    def configure_optimizers(self):
        lr = self.cfg.lr
        proj = self.animator.input_skip.proj if self.animator.input_skip is not None else None
        fast = list(proj.parameters()) if proj is not None else []
        rest = [p for p in self.animator.parameters() if all(p is not q for q in fast)]
        groups = [{"params": rest, "lr": lr}]
        if fast:
            groups.append({"params": fast, "lr": lr * self.cfg.skip_lr_scale})
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(self.cfg.warmup_steps, self.lr_anneal))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def bundle_meta(self) -> dict:
        return {
            "kind": "teacher",
            "scheduler": dict(self.hparams.scheduler),
            "autoencoder": dict(self.hparams.autoencoder),
            "data": dict(self.hparams.data or {}),
            "sampling": dict(self.sampling),
            "training": {"global_step": int(self.global_step)},
        }
