"""The method configurations, typed: dataclasses that mirror ``conf/method/distill.yaml`` and ``teacher.yaml``.

The YAML files are the one place the defaults live (with a comment per option, which ``--help`` shows); these
classes are their schema. :meth:`MethodConfig.parse` reads the composed ``method`` node once, when the
LightningModule is built, and refuses every value outside its range, every unknown key and every missing one,
with a message naming the option as it is typed on the command line
(``method.loss.motion_weight=-1: must be >= 0 (0 turns the motion-focused loss off)``). Checks that need the
teacher bundle (its condition names, its number of timesteps) stay next to where the bundle is loaded.

One switch per concept: the auxiliary head exists when ``loss.aux_weight > 0``; face injection is ``face.enabled``
and its condition dropout ``face.dropout``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dancelcm.cli import ConfigError
from dancelcm.diffusion.schedule import Schedule
from dancelcm.diffusion.segments import GRIDS, Segments
from dancelcm.lit.common import parse_step_schedule


def show(value: Any) -> str:
    """A value as it is written in a Hydra override (``-1``, ``null``, ``[1,2]``, ``{kind:ema}``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    return repr(value)


# -- value rules ----------------------------------------------------------------------------------------------------
def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _integer(v) and v >= low


def one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def positive(v: Any) -> bool:
    return _number(v) and v > 0


def non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def probability(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def decay(v: Any) -> bool:
    return _number(v) and 0 <= v < 1


def guidance(v: Any) -> bool:
    return _number(v) and v >= 1


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def names(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) > 0 and all(isinstance(n, str) for n in v)


def mapping_or_null(v: Any) -> bool:
    return v is None or isinstance(v, Mapping)


def option(check: Callable[[Any], bool], rule: str) -> Any:
    """A dataclass field with its range check and the rule its error message states."""
    return field(metadata={"check": check, "rule": rule})


# CFG in Imagen form, o_u + g (o_c - o_u): g = 1 is the conditional output alone (no guidance), g < 1 moves it
# towards the unconditional output (g = 0: unconditional), which no pose-guided model wants, and a negative g
# inverts the guidance. So the rule is g >= 1.
GUIDANCE = "must be >= 1 (the CFG scale: 1 = no guidance; below 1 moves towards the unconditional output)"
PROBABILITY = "must be in [0, 1] (the per-sample probability of dropping that condition in training)"
NONFINITE = option(one_of("raise", "skip"), "choose raise or skip")
LR_ANNEAL = option(mapping_or_null, "must be null or {start: STEP, end: STEP, floor: 0.1}")


# -- parsing --------------------------------------------------------------------------------------------------------
class MethodConfig:
    """Base of the method dataclasses: :meth:`parse` builds one from a plain mapping, checking it on the way."""

    @classmethod
    def parse(cls, options: Mapping[str, Any], prefix: str = "method") -> Any:
        if not isinstance(options, Mapping):
            raise ConfigError(f"{prefix}={show(options)}: must be a mapping {{key: value, ...}}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields) - {"kind"})
        if unknown:
            raise ConfigError(
                f"{prefix}.{unknown[0]}={show(options[unknown[0]])}: unknown option "
                f"({prefix} has {', '.join(sorted(fields))})"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for name, f in fields.items():
            key = f"{prefix}.{name}"
            if name not in options:
                raise ConfigError(f"{key}: missing (every option of conf/method/ must be set; see its YAML file)")
            value = options[name]
            nested = _nested_class(hints[name])
            if nested is not None:
                value = nested.parse(value, key)
            elif "each" in f.metadata:  # a mapping name -> value, each value checked and named on its own
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{key}={show(value)}: must be a mapping {{name: value, ...}}")
                for k, v in value.items():
                    if not f.metadata["each"](v):
                        raise ConfigError(f"{key}.{k}={show(v)}: {f.metadata['rule']}")
            elif "check" in f.metadata and not f.metadata["check"](value):
                raise ConfigError(f"{key}={show(value)}: {f.metadata['rule']}")
            values[name] = value
        config = cls(**values)
        config.check(prefix)
        return config

    def check(self, prefix: str) -> None:
        """Checks across options, after each one is in its range (overridden where there are any)."""


def _nested_class(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and issubclass(hint, MethodConfig) else None


# -- distillation ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentsConfig(MethodConfig):
    num_segments: int = option(int_at_least(1), "must be an integer >= 1 (K, the student's sampling steps)")
    num_grid: int = option(int_at_least(1), "must be an integer >= 1 (N, the teacher's ODE steps; K divides it)")
    num_train_timesteps: int = option(int_at_least(1), "must be an integer >= 1 (T, the teacher's timesteps)")
    grid: str = option(one_of(*GRIDS), f"choose one of {', '.join(GRIDS)} (the teacher's grid, finer at the clean end)")

    def check(self, prefix: str) -> None:
        try:
            self.build()
        except ValueError as e:
            raise ConfigError(f"{prefix}={show(dataclasses.asdict(self))}: {e}") from e

    def build(self, num_segments: int | None = None, schedule: Schedule | None = None) -> Segments:
        """The Segments object (with another K for a curriculum step); a non-uniform grid reads ``schedule``'s
        log-SNR (without it, only the sizes are checked)."""
        k = self.num_segments if num_segments is None else num_segments
        sizes = dict(num_segments=k, num_grid=self.num_grid, num_train_timesteps=self.num_train_timesteps)
        if schedule is None:
            return Segments(grid_kind=self.grid, **sizes)
        return Segments.for_schedule(schedule, self.grid, **sizes)


@dataclass(frozen=True)
class TargetConfig(MethodConfig):
    kind: str = option(one_of("ema", "student"), "choose ema or student")
    decay: float = option(decay, "must be in [0, 1) (the EMA target's decay per optimizer step)")


@dataclass(frozen=True)
class LossConfig(MethodConfig):
    distance: str = option(one_of("huber", "l2"), "choose huber or l2")
    huber_c: float = option(positive, "must be > 0 (the Pseudo-Huber scale; l2 for a plain squared error)")
    aux_weight: float = option(non_negative, "must be >= 0 (0: no auxiliary head)")
    aux_weighted: bool = option(boolean, "must be true or false")
    motion_weight: float = option(non_negative, "must be >= 0 (0 turns the motion-focused loss off)")
    motion_delta: float = option(
        lambda v: _number(v) and 0 < v < 1,
        "must be in (0, 1) (the frame difference on [0, 1] pixels that marks a moving pixel)",
    )
    motion_latent_delta: float = option(
        positive, "must be > 0 (latent frame difference, in the clip's latent std, that marks a moving cell)"
    )


@dataclass(frozen=True)
class FaceConfig(MethodConfig):
    enabled: bool = option(boolean, "must be true or false")
    dropout: float = option(probability, PROBABILITY)


@dataclass(frozen=True)
class LoraConfig(MethodConfig):
    rank: int = option(int_at_least(1), "must be an integer >= 1 (the adapters' rank r)")
    alpha: float = option(positive, "must be > 0 (the adapters' scale is alpha / rank)")
    target_modules: list[str] = option(names, "must be a non-empty list of module-name suffixes, e.g. [to_q,to_v]")
    dropout: float = option(lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1) (dropout on the adapters' input)")

    def spec(self):
        from dancelcm.models.lora import LoraSpec

        return LoraSpec(self.rank, float(self.alpha), tuple(self.target_modules), float(self.dropout))


@dataclass(frozen=True)
class ValidationConfig(MethodConfig):
    student_steps: list[int] = option(
        lambda v: isinstance(v, list | tuple) and all(_integer(k) and k >= 1 for k in v),
        "must be a list of integers >= 1 (those <= K are sampled)",
    )
    teacher_steps: int = option(int_at_least(1), "must be an integer >= 1 (the teacher's DDIM steps)")


@dataclass(frozen=True)
class DistillConfig(MethodConfig):
    """``conf/method/distill.yaml``: DanceLCM's segmented consistency distillation and its extras."""

    teacher: str = option(lambda v: isinstance(v, str) and v != "", "must be a teacher bundle folder")
    student: str = option(
        one_of("full", "lora"), "choose full (a trainable copy of the teacher) or lora (adapters on the teacher)"
    )
    lora: LoraConfig = field()
    segments: SegmentsConfig = field()
    guidance: float = option(guidance, GUIDANCE)
    uncond: list[str] | None = option(
        lambda v: v is None or names(v), "must be null (the teacher bundle's) or a list, e.g. [reference]"
    )
    target: TargetConfig = field()
    loss: LossConfig = field()
    face: FaceConfig = field()
    lr: float = option(positive, "must be > 0")
    face_lr_scale: float = option(positive, "must be > 0 (1 trains the face path at method.lr)")
    weight_decay: float = option(non_negative, "must be >= 0")
    warmup_steps: int = option(int_at_least(0), "must be an integer >= 0 (0: no warmup)")
    lr_anneal: dict | None = LR_ANNEAL
    teacher_dtype: str = option(one_of("auto", "float32", "bfloat16"), "choose auto, float32 or bfloat16 (never fp16)")
    gradient_checkpointing: bool = option(boolean, "must be true or false (recompute the student's blocks in backward)")
    frozen_dtype: str = option(
        one_of("float32", "bfloat16"), "choose float32 or bfloat16 (the frozen teacher / LoRA base weights' dtype)"
    )
    curriculum: list | None = option(lambda v: v is None or isinstance(v, list | tuple), "must be null or a list")
    validation: ValidationConfig = field()
    nonfinite: str = NONFINITE

    @property
    def aux_head(self) -> bool:
        """The auxiliary head exists when its loss has a weight."""
        return self.loss.aux_weight > 0

    def check(self, prefix: str) -> None:
        schedule = parse_step_schedule(self.curriculum or [], f"{prefix}.curriculum")
        bad = [k for _, k in schedule if k != int(k) or k < 1]
        if bad:
            raise ConfigError(f"{prefix}.curriculum={show(self.curriculum)}: K must be a positive integer, got {bad}")
        for _, k in schedule:  # every K of the curriculum must fit the grid now, not at its step
            try:
                self.segments.build(int(k))
            except ValueError as e:
                raise ConfigError(f"{prefix}.curriculum={show(self.curriculum)}: K={int(k)}: {e}") from e
        t = self.segments.num_train_timesteps
        if self.validation.teacher_steps > t:
            raise ConfigError(
                f"{prefix}.validation.teacher_steps={self.validation.teacher_steps}: must be <= the {t} timesteps "
                f"({prefix}.segments.num_train_timesteps)"
            )

    @property
    def curriculum_schedule(self) -> list[tuple[int, float]]:
        return parse_step_schedule(self.curriculum or [], "method.curriculum")


# -- teacher pretraining --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingConfig(MethodConfig):
    steps: int = option(int_at_least(1), "must be an integer >= 1 (the reference sampler's DDIM steps)")
    guidance: float = option(guidance, GUIDANCE)
    uncond: list[str] = option(names, "must be a non-empty list of conditions, e.g. [reference]")


@dataclass(frozen=True)
class TeacherConfig(MethodConfig):
    """``conf/method/teacher.yaml``: the standard diffusion objective with condition dropout so CFG works."""

    init_from: str | None = option(
        lambda v: v is None or (isinstance(v, str) and v != ""), "must be null or a bundle folder"
    )
    lr: float = option(positive, "must be > 0")
    skip_lr_scale: float = option(positive, "must be > 0 (1 trains the input skip's channel map at method.lr)")
    weight_decay: float = option(non_negative, "must be >= 0")
    warmup_steps: int = option(int_at_least(0), "must be an integer >= 0 (0: no warmup)")
    lr_anneal: dict | None = LR_ANNEAL
    ema_decay: float = option(decay, "must be in [0, 1) (0: no EMA; samples and exports then use the trained weights)")
    condition_dropout: dict = field(metadata={"each": probability, "rule": PROBABILITY})
    timestep_power: Any = option(
        lambda v: positive(v) or isinstance(v, list | tuple), "must be a number > 0 (1 = uniform) or [[step, p], ...]"
    )
    loss_weight_gamma: float | None = option(
        lambda v: v is None or positive(v), "must be null (plain MSE) or > 0 (Min-SNR-gamma)"
    )
    sampling: SamplingConfig = field()
    nonfinite: str = NONFINITE

    def check(self, prefix: str) -> None:
        powers = self.timestep_powers(prefix)
        if any(p <= 0 for _, p in powers):
            raise ConfigError(f"{prefix}.timestep_power={show(self.timestep_power)}: powers must be > 0 (1 = uniform)")

    def timestep_powers(self, prefix: str = "method") -> list[tuple[int, float]]:
        """``[(start_step, power), ...]``: the power from each global step on."""
        if _number(self.timestep_power):
            return [(0, float(self.timestep_power))]
        return parse_step_schedule(self.timestep_power, f"{prefix}.timestep_power")
