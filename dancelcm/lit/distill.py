"""DanceLCM distillation: frozen teacher, EMA target and student (+ auxiliary head, + face injection).

Step order: everything without grad first (the teacher's CFG ODE step and the target), then the
student's forward and backward, so their activations never coexist. The teacher and the target run
under an explicit autocast dtype (``teacher_dtype``: ``auto`` = bf16 under a bf16-mixed trainer, else
float32); the EMA weights and the solver arithmetic stay float32. The teacher is rebuilt from its bundle
folder and never saved in checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch
from torch import nn

from dancelcm.cli import ConfigError
from dancelcm.diffusion import Segments
from dancelcm.distill.consistency import LossWeights, consistency_targets, distillation_loss
from dancelcm.distill.losses import motion_mask_from_latents, motion_mask_latent, motion_weight
from dancelcm.lit.common import (
    NonFinite,
    batch_random,
    lr_factor,
    parse_anneal,
    value_at,
)
from dancelcm.lit.config import DistillConfig
from dancelcm.models.animator import Animator, batch_conditions, enable_gradient_checkpointing
from dancelcm.models.bundle import Bundle, bundle_fingerprint, bundle_uncond, load_bundle
from dancelcm.models.conditioning import random_condition_dropout, with_dropped
from dancelcm.models.ema import EMA, ParameterEMA
from dancelcm.models.face import face_config, face_parameters
from dancelcm.models.lora import SharedTeacher
from dancelcm.models.student import lora_student, student_from_teacher
from dancelcm.sampling import batch_noise, latent_shape, student_sampler, teacher_sampler


def list_or_value(v):
    return list(v) if isinstance(v, list | tuple) else v


class DistillModule(L.LightningModule):
    """DanceLCM's distillation. ``method``: the composed ``conf/method/distill.yaml`` node (plain; parsed and
    checked into a :class:`DistillConfig`, ``self.cfg``); ``data``: the data geometry the student is trained at
    (``resolution``, ``num_frames``, ``face_size``, ...); ``seed``: the training randomness (with the batch number)."""

    def __init__(self, method: dict[str, Any], data: dict[str, Any] | None = None, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()  # plain dicts and numbers: checkpoints load with weights_only=True
        self.cfg = cfg = DistillConfig.parse(method)  # every option in its range, before the teacher is loaded
        self.nonfinite = NonFinite(cfg.nonfinite)
        self.lr_anneal = parse_anneal(cfg.lr_anneal, "method.lr_anneal")
        bundle = load_bundle(cfg.teacher, option="method.teacher", torch_dtype=getattr(torch, cfg.frozen_dtype))
        # a LoRA student's checkpoints and exports hold no base weights: they name the base by this fingerprint
        self.teacher_fingerprint = bundle_fingerprint(cfg.teacher) if cfg.student == "lora" else None
        self.schedule, self.autoencoder, self.teacher_meta = bundle.schedule, bundle.autoencoder, bundle.meta
        steps = self.schedule.num_train_timesteps
        if cfg.segments.num_train_timesteps != steps:  # the grid would miss (or overrun) the teacher's timesteps
            raise ValueError(
                f"method.segments.num_train_timesteps={cfg.segments.num_train_timesteps}: the teacher's noise "
                f"schedule ({cfg.teacher}) has {steps} timesteps; set it to {steps}"
            )
        self._segments = cfg.segments.build(schedule=self.schedule)
        self._segments_by_k = {self._segments.num_segments: self._segments}  # a curriculum's, built once each
        teacher_net = bundle.animator.eval().requires_grad_(False)
        # Not a registered submodule: the teacher is frozen, never trained, never saved.
        self.__dict__["teacher"] = teacher_net
        face = None
        if cfg.face.enabled and self.family == "wan_animate":  # the extra path on the transformer (models/wan/face.py)
            face = {}
        elif cfg.face.enabled:  # the crop in pixels -> latent tokens through the teacher bundle's autoencoder
            face = face_config(
                {"face_size": int((data or {}).get("face_size", 32))}, self.autoencoder.factor, cfg.teacher
            )
        if cfg.student == "lora":  # one copy of the base weights: the teacher is the student with its adapters off
            teacher_conditions = list(teacher_net.condition_names)  # before a face path joins the (shared) network
            self.student = lora_student(teacher_net, face, cfg.aux_head, cfg.lora.spec())
            self.__dict__["teacher"] = SharedTeacher(self.student.animator, teacher_conditions)
            trainable = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
            self.target = ParameterEMA(trainable, cfg.target.decay) if cfg.target.kind == "ema" else None
        else:
            self.student = student_from_teacher(teacher_net, face, cfg.aux_head)
            self.target = EMA(self.student, cfg.target.decay) if cfg.target.kind == "ema" else None
        # activation checkpointing of the student's blocks (the teacher runs without grad: nothing to recompute)
        self.checkpointed_blocks = 0
        if cfg.gradient_checkpointing:
            self.checkpointed_blocks = enable_gradient_checkpointing(self.student.animator.backbone)
        loss = cfg.loss
        self.weights = LossWeights(loss.distance, loss.huber_c, loss.aux_weight, loss.aux_weighted)
        try:  # the teacher bundle's setting unless method.uncond is given; names checked against its conditions
            self.uncond = bundle_uncond(bundle, cfg.uncond or None)
        except ValueError as e:
            raise ValueError(f"method.{e}") from e
        face_name = "face_vae" if self.family == "wan_animate" else "face"  # Wan's own "face" is the driving video
        self.condition_dropout = {face_name: cfg.face.dropout} if cfg.face.enabled and cfg.face.dropout > 0 else {}
        self.curriculum = cfg.curriculum_schedule
        self._teacher_samples: dict | None = None

    # -- state ---------------------------------------------------------------------------------------
    @property
    def segments(self) -> Segments:
        """The segment object for the current step (a progressive K curriculum may change it)."""
        k = int(value_at(self.curriculum, self.global_step, self._segments.num_segments))
        if k not in self._segments_by_k:
            self._segments_by_k[k] = self.cfg.segments.build(k, self.schedule)
        return self._segments_by_k[k]

    @property
    def lora(self) -> bool:
        return self.cfg.student == "lora"

    @property
    def sharded(self) -> bool:
        """Whether FSDP sharded the networks (``trainer=fsdp``): every forward is then a collective that all
        ranks must make, and the weights are gathered to be exported."""
        return getattr(self, "_sharded", False)

    @property
    def target_net(self):
        if self.target is None:
            return self.student
        if isinstance(self.target, ParameterEMA):
            return self._swapped_target
        return self.target.shadow

    def _swapped_target(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """The LoRA student's EMA target: the student (eval mode, as the full target's shadow) with the averaged
        trainable weights swapped in."""
        was_training = self.student.training
        self.student.eval()
        try:
            with self.target.swapped_in(self.student):
                return self.student(x_t, t, cond)
        finally:
            self.student.train(was_training)

    @property
    def sampling_net(self) -> Animator:
        """The student animator (the aux head is for training only; a LoRA student's with its adapters)."""
        return self.student.animator

    def write_export(self, directory) -> None:
        """The export (``ExportBundle``): every rank calls it (under FSDP the weights are gathered, a collective);
        rank 0 writes. A full student: a plain bundle. A LoRA student: its adapters in the diffusers / peft format,
        its face path, and a reference to the teacher bundle it adapts (``models.lora.save_lora_bundle``)."""
        from dancelcm.models.bundle import save_bundle, save_lora_bundle

        state = None
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            # a LoRA export needs the trained weights only: never gather the frozen base to one rank
            options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=self.lora)
            state = get_model_state_dict(self.student.animator, options=options)
        if self.global_rank != 0:
            return
        meta = self.bundle_meta()
        if self.lora:
            save_lora_bundle(directory, self.student.animator, self.cfg.lora.spec(), meta, self.cfg.teacher, state)
            return
        net = self.student.animator
        if state is not None:  # a plain copy to hold the gathered weights
            net = like(self.student.animator)
            net.load_state_dict(state)
        save_bundle(directory, net, meta, autoencoder=self.autoencoder)

    def configure_model(self) -> None:
        """Under ``trainer=fsdp`` (Lightning's ModelParallelStrategy): shard the networks with FSDP2
        (:mod:`dancelcm.lit.fsdp`). Other strategies: nothing to do."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self.sharded or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        from dancelcm.lit.fsdp import shard_distillation

        if self.lora:  # the checkpoint holds no base weights; on_load_checkpoint checks the trainable ones
            self.strict_loading = False
        shard_distillation(self, self.device_mesh["data_parallel"], str(self.trainer.precision))
        self._sharded = True

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision) if getattr(self, "_trainer", None) is not None else ""
        if self.cfg.frozen_dtype == "bfloat16" and not precision.startswith("bf16"):
            raise ConfigError(
                f"method.frozen_dtype=bfloat16 with trainer.precision={precision}: bf16 frozen weights compute under "
                "bf16 autocast only; set trainer.precision=bf16-mixed (or method.frozen_dtype=float32)"
            )
        self.teacher.to(self.device)

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    @property
    def teacher_dtype(self) -> torch.dtype:
        """``auto``: bfloat16 under a bf16 trainer precision, else float32."""
        name = self.cfg.teacher_dtype
        if name == "auto":
            trainer = getattr(self, "_trainer", None)
            name = "bfloat16" if trainer is not None and str(trainer.precision).startswith("bf16") else "float32"
        return getattr(torch, name)

    def _autocast(self):
        if self.teacher_dtype == torch.float32:
            # explicit: no autocast region leaks in from a mixed-precision trainer
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.teacher_dtype)

    @property
    def family(self) -> str | None:
        """The teacher's model family (``wan_animate``), None for the project's own animators."""
        return self.teacher_meta.get("family")

    def conditions(self, batch: dict, names: list[str]) -> dict:
        if self.family is not None:  # precomputed inputs, read as they are (the network knows its keys)
            return self.student.animator.conditions(batch)
        return batch_conditions(batch, self.autoencoder, names)

    @torch.no_grad()
    def clean_latents(self, batch: dict) -> torch.Tensor:
        """x0: the batch's precomputed latents (``precompute``), else its video through the autoencoder."""
        if "latents" in batch:
            return batch["latents"].float()
        return self.autoencoder.encode(batch["video"])

    @torch.no_grad()
    def motion_mask(self, batch: dict, x0: torch.Tensor) -> torch.Tensor:
        """The motion region on the latent grid: from the real frames, or (precomputed clips, no frames) from the
        latents' frame differences; frame 0 of a Wan clip (the reference slot) never moves."""
        if "video" in batch:
            return motion_mask_latent(batch["video"], tuple(x0.shape[-2:]), self.cfg.loss.motion_delta)
        skip = 1 if self.family == "wan_animate" else 0
        return motion_mask_from_latents(x0, self.cfg.loss.motion_latent_delta, skip_first=skip)

    # -- training --------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_targets(
        self,
        batch: dict,
        x0: torch.Tensor,
        seg: Segments,
        n: torch.Tensor,
        eps: torch.Tensor,
        train: bool,
        generator=None,
    ):
        """Student conditions (with condition dropout in training) and the no-grad consistency targets."""
        t_cond = self.conditions(batch, self.teacher.condition_names)
        s_cond = self.conditions(batch, self.student.animator.condition_names)
        if train:
            s_cond = random_condition_dropout(s_cond, self.condition_dropout, generator)
        uncond = with_dropped(t_cond, self.uncond) if self.cfg.guidance != 1.0 else None
        with self._autocast():
            targets = consistency_targets(
                self.teacher,
                self.target_net,
                self.schedule,
                seg,
                x0,
                t_cond,
                n,
                eps,
                uncond,
                self.cfg.guidance,
                target_cond=s_cond,
                every_sample=self.sharded,  # FSDP: every rank makes the same forward calls
            )
        return s_cond, targets

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        seg = self.segments
        with torch.no_grad():
            x0 = self.clean_latents(batch)
            rng = batch_random(self, x0.shape[0])
            n = rng.randint(seg.num_grid).to(x0.device)
            eps = rng.randn(x0.shape).to(x0.device, x0.dtype)
            s_cond, targets = self.make_targets(batch, x0, seg, n, eps, train=True, generator=rng)
            weight = None
            mask = None
            if self.cfg.loss.motion_weight > 0:
                mask = self.motion_mask(batch, x0)
                weight = motion_weight(mask, self.cfg.loss.motion_weight)
        self.student.return_aux = self.weights.aux > 0
        out = distillation_loss(self.student, targets, self.schedule, x0, s_cond, self.weights, weight)
        self.student.return_aux = False

        def details() -> str:  # only formatted when something is wrong (no device sync per step)
            aux = None if out.loss_aux is None else out.loss_aux.item()
            return f" (CD {out.loss_cd.item()}, aux {aux}, grid indices {n.tolist()}, videos {batch.get('video_id')})"

        if not self.nonfinite.check(self, out.loss, "distillation loss", details):
            return None
        b = x0.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b, sync_dist=True)  # the global-batch mean
        self.log("train/loss_cd", out.loss_cd, batch_size=b, sync_dist=True)
        if out.loss_aux is not None:
            self.log("train/loss_aux", out.loss_aux, batch_size=b)
        if mask is not None:
            self.log("train/motion_fraction", mask.mean(), batch_size=b)
        self.log("train/segments", float(seg.num_segments), batch_size=b)
        for o in range(seg.num_segments):
            sel = targets.segment == o
            if sel.any():
                self.log(f"train/loss_cd_seg{o}", out.per_sample_cd[sel].mean(), batch_size=int(sel.sum()))
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        total = self.nonfinite.check_gradients(self, self.student.parameters(), optimizer)
        if total is not None:
            self.log("train/grad_norm", total)

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer step, then the EMA target's update towards the weights it produced. Lightning calls
        this once per real step (once per window under gradient accumulation); ``on_before_zero_grad`` would
        run before the backward pass (Lightning 2.6) and leave the target one step behind."""
        super().optimizer_step(*args, **kwargs)
        if self.target is not None:
            self.target.update(self.student)

    def face_parameters(self) -> list[nn.Parameter]:
        """The face path's parameters in the student (see :func:`dancelcm.models.face.face_parameters`)."""
        return face_parameters(self.student)

    def configure_optimizers(self):
        lr, scale = self.cfg.lr, self.cfg.face_lr_scale
        face = self.face_parameters() if scale != 1 else []
        face_ids = {id(p) for p in face}
        rest = [p for p in self.student.parameters() if p.requires_grad and id(p) not in face_ids]
        groups = [{"params": rest, "lr": lr}] + ([{"params": face, "lr": lr * scale}] if face else [])
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(self.cfg.warmup_steps, self.lr_anneal))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints: never the teacher ----------------------------------------------------------------
    def _frozen_keys(self) -> set[str]:
        """A LoRA student's frozen base weights (state-dict keys): rebuilt from the teacher bundle, never saved."""
        if not self.lora:
            return set()
        return {f"student.{n}" for n, p in self.student.named_parameters() if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.teacher_fingerprint is not None:
            checkpoint["teacher_fingerprint"] = self.teacher_fingerprint
        frozen = self._frozen_keys()
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.") and k not in frozen
        }

    def check_checkpoint_keys(self, saved: set[str]) -> None:
        """Every weight a LoRA checkpoint must hold (all but the frozen base) is in ``saved``; else stop naming them
        (e.g. a checkpoint written without the EMA target would silently restart it)."""
        frozen = self._frozen_keys()
        missing = [k for k in self.state_dict() if k not in frozen and k not in saved]
        if missing:
            raise ConfigError(
                f"the checkpoint lacks {len(missing)} trained weights of this LoRA student: {missing[:3]} (was it "
                "written with other method.target / method.face / loss.aux_weight settings?)"
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A LoRA checkpoint holds no base weights: they are this module's, loaded from the teacher bundle, which
        must be the one it was trained on (fingerprint), with the same adapters; every trained weight must be in
        it. (Under FSDP the strategy loads the state itself, before this hook: ``FSDPStrategy`` checks the keys.)"""
        if not self.lora:
            return
        saved_fp = checkpoint.get("teacher_fingerprint")
        if saved_fp and saved_fp != self.teacher_fingerprint:
            raise ConfigError(
                f"method.teacher={self.cfg.teacher}: this LoRA run was trained on another version of that bundle "
                f"(fingerprint {saved_fp}, now {self.teacher_fingerprint}); its adapters only fit the original"
            )
        old = ((checkpoint.get("hyper_parameters") or {}).get("method") or {}).get("lora")
        now = dataclasses.asdict(self.cfg.lora)
        if old is not None:
            changed = [k for k in now if k in old and list_or_value(old[k]) != list_or_value(now[k])]
            if changed:
                raise ConfigError(
                    f"method.lora.{changed[0]}={now[changed[0]]}: the checkpoint's adapters were trained with "
                    f"{old[changed[0]]}; resume with the same method.lora settings (or start a new run)"
                )
        if "state_dict" not in checkpoint:  # FSDP's strategy loaded (and removed) it already
            return
        self.check_checkpoint_keys(set(checkpoint["state_dict"]))
        if not self.sharded:
            frozen = self._frozen_keys()
            own = self.state_dict()
            checkpoint["state_dict"] = {**{k: own[k] for k in frozen}, **checkpoint["state_dict"]}

    # -- validation and sampling -----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x0 = self.clean_latents(batch)
        seg = self.segments
        g = torch.Generator().manual_seed(2000 + batch_idx)
        n = torch.randint(0, seg.num_grid, (x0.shape[0],), generator=g).to(x0.device)
        eps = torch.randn(x0.shape, generator=g).to(x0.device)
        s_cond, targets = self.make_targets(batch, x0, seg, n, eps, train=False)
        out = distillation_loss(
            self.student, targets, self.schedule, x0, s_cond, LossWeights(self.weights.distance, self.weights.huber_c)
        )
        self.log("val/loss_cd", out.loss_cd, sync_dist=True, batch_size=x0.shape[0])

    def sampling_bundles(self) -> tuple[Bundle, Bundle]:
        """(teacher, student) as bundles for :mod:`dancelcm.sampling` (the student's current segments)."""
        teacher = Bundle(self.teacher, self.schedule, self.autoencoder, self.teacher_meta)
        meta = {"data": dict(self.hparams.data or {})}
        student = Bundle(self.student.animator, self.schedule, self.autoencoder, meta)
        return teacher, student

    @torch.no_grad()
    def sample_for_logging(self, batch: dict, seed: int = 0) -> dict[str, torch.Tensor]:
        """Ground truth | teacher (N steps, CFG) | student at 1/2/4 steps, all from the same noise. The
        teacher's samples are computed once (it is frozen) and reused at every validation."""
        teacher, student = self.sampling_bundles()
        noise = batch_noise(len(batch["clip_index"]), latent_shape(student, batch), seed).to(self.device)
        n, g = self.cfg.validation.teacher_steps, float(self.cfg.guidance)
        if self._teacher_samples is None:
            ref = teacher_sampler(teacher, n, g, self.uncond, autocast=self._autocast)
            self._teacher_samples = {f"teacher_ddim{n}_cfg{g:g}": ref(batch, noise)}
        out = dict(self._teacher_samples)
        seg = self.segments
        for k in self.cfg.validation.student_steps:
            if k <= seg.num_segments:
                out[f"student_{k}step"] = student_sampler(student, k, segments=seg)(batch, noise)
        return out

    def bundle_meta(self) -> dict:
        seg = self.segments
        family = {"family": self.family} if self.family else {}
        return {
            "kind": "student",
            **family,
            "scheduler": dict(self.teacher_meta["scheduler"]),
            "autoencoder": dict(self.teacher_meta["autoencoder"]),
            "data": dict(self.hparams.data or self.teacher_meta.get("data", {})),
            "segments": {
                "num_segments": seg.num_segments,
                "num_grid": seg.num_grid,
                "num_train_timesteps": seg.num_train_timesteps,
            },
            "sampling": {"steps": seg.num_segments, "guidance": 1.0},
            "teacher": str(self.cfg.teacher),
            "training": {"global_step": int(self.global_step), "grid": seg.grid_kind},
        }


def like(animator: nn.Module) -> nn.Module:
    """A fresh, unsharded network of ``animator``'s architecture (to hold weights gathered from FSDP shards)."""
    if getattr(animator, "family", None) == "wan_animate":
        from diffusers import WanAnimateTransformer3DModel

        from dancelcm.models.wan.network import WanAnimator

        config = {k: v for k, v in animator.config.items() if k != "family"}
        return WanAnimator(WanAnimateTransformer3DModel.from_config(dict(animator.backbone.config)), **config)
    return Animator(**animator.config)
