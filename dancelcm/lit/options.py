"""Range checks of the method options, in one table per method.

Every bad value stops the run when the LightningModule is built, with a message that names the option as it is
typed on the command line (``method.loss.motion_weight=-1: must be >= 0 (...)``). Without them some values were
used silently (a negative motion weight acted as 0, a negative CFG scale inverted the guidance) and others failed
later, or without the option's name (``num_segments=0``). A typo in a key of a nested option (``method.loss.*``)
is refused too: it would otherwise be ignored. Checks that need the teacher bundle (condition names, its number
of timesteps) stay next to where the bundle is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from dancelcm.diffusion.segments import Segments
from dancelcm.lit.common import parse_step_schedule

# option -> (test of its value, the rule the message states); ``a.b`` is key ``b`` of the mapping option ``a``
# (its other keys are refused), ``a.*`` every key of ``a`` (names checked elsewhere, e.g. against the conditions)
Rules = dict[str, tuple[Callable[[Any], bool], str]]


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


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _integer(v) and v >= low


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def _probability(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def _decay(v: Any) -> bool:
    return _number(v) and 0 <= v < 1


def _guidance(v: Any) -> bool:
    return _number(v) and v >= 1


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _names(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) > 0 and all(isinstance(n, str) for n in v)


# CFG in Imagen form, o_u + g (o_c - o_u): g = 1 is the conditional output alone (no guidance), g < 1 moves it
# towards the unconditional output (g = 0: unconditional), which no pose-guided model wants, and a negative g
# inverts the guidance. So the rule is g >= 1.
GUIDANCE = "must be >= 1 (the CFG scale: 1 = no guidance; below 1 moves towards the unconditional output)"
PROBABILITY = "must be in [0, 1] (the per-sample probability of dropping that condition in training)"
NONFINITE = (_one_of("raise", "skip"), "choose raise or skip")

DISTILL_RULES: Rules = {
    "teacher": (lambda v: isinstance(v, str) and v != "", "must be a teacher bundle folder"),
    "segments.num_segments": (_int_at_least(1), "must be an integer >= 1 (K, the student's sampling steps)"),
    "segments.num_grid": (_int_at_least(1), "must be an integer >= 1 (N, the teacher's ODE steps; K divides it)"),
    "segments.num_train_timesteps": (_int_at_least(1), "must be an integer >= 1 (T, the teacher's timesteps)"),
    "guidance": (_guidance, GUIDANCE),
    "uncond": (lambda v: v is None or _names(v), "must be null (the teacher bundle's) or a list, e.g. [reference]"),
    "target.kind": (_one_of("ema", "student"), "choose ema or student"),
    "target.decay": (_decay, "must be in [0, 1) (the EMA target's decay per optimizer step)"),
    "loss.distance": (_one_of("huber", "l2"), "choose huber or l2"),
    "loss.huber_c": (_positive, "must be > 0 (the Pseudo-Huber scale; l2 for a plain squared error)"),
    "loss.aux_weight": (_non_negative, "must be >= 0 (0 leaves the auxiliary head without gradient)"),
    "loss.aux_weighted": (_bool, "must be true or false"),
    "loss.motion_weight": (_non_negative, "must be >= 0 (0 turns the motion-focused loss off)"),
    "loss.motion_delta": (
        lambda v: _number(v) and 0 < v < 1,
        "must be in (0, 1) (the frame difference on [0, 1] pixels that marks a moving pixel)",
    ),
    "aux_head": (_bool, "must be true or false"),
    "condition_dropout.*": (_probability, PROBABILITY),
    "lr": (_positive, "must be > 0"),
    "face_lr_scale": (_positive, "must be > 0 (1 trains the face path at method.lr)"),
    "weight_decay": (_non_negative, "must be >= 0"),
    "warmup_steps": (_int_at_least(0), "must be an integer >= 0 (0: no warmup)"),
    "teacher_dtype": (_one_of("auto", "float32", "bfloat16"), "choose auto, float32 or bfloat16 (never fp16)"),
    "validation.student_steps": (
        lambda v: isinstance(v, list | tuple) and all(_integer(k) and k >= 1 for k in v),
        "must be a list of integers >= 1 (those <= K are sampled)",
    ),
    "validation.teacher_steps": (_int_at_least(1), "must be an integer >= 1 (the teacher's DDIM steps)"),
    "validation.num_clips": (_int_at_least(1), "must be an integer >= 1"),
    "nonfinite": NONFINITE,
}

TEACHER_RULES: Rules = {
    "init_from": (lambda v: v is None or (isinstance(v, str) and v != ""), "must be null or a bundle folder"),
    "lr": (_positive, "must be > 0"),
    "skip_lr_scale": (_positive, "must be > 0 (1 trains the input skip's channel map at method.lr)"),
    "weight_decay": (_non_negative, "must be >= 0"),
    "warmup_steps": (_int_at_least(0), "must be an integer >= 0 (0: no warmup)"),
    "ema_decay": (_decay, "must be in [0, 1) (0: no EMA; samples and exports then use the trained weights)"),
    "condition_dropout.*": (_probability, PROBABILITY),
    "loss_weight_gamma": (lambda v: v is None or _positive(v), "must be null (plain MSE) or > 0 (Min-SNR-gamma)"),
    "sampling.steps": (_int_at_least(1), "must be an integer >= 1 (the reference sampler's DDIM steps)"),
    "sampling.guidance": (_guidance, GUIDANCE),
    "sampling.uncond": (_names, "must be a non-empty list of conditions, e.g. [reference]"),
    "nonfinite": NONFINITE,
}


def check_rules(options: Mapping[str, Any], rules: Rules) -> None:
    """Raise a ValueError naming ``method.<option>=<value>`` at the first value outside its rule."""
    children: dict[str, set[str]] = {}
    for name in rules:
        head, _, key = name.partition(".")
        if key:
            children.setdefault(head, set()).add(key)
    for head, keys in children.items():  # nested options: a mapping (or null: the defaults), no unknown keys
        value = options.get(head)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"method.{head}={show(value)}: must be a mapping {{key: value, ...}} or null")
        unknown = sorted(set(value) - keys) if "*" not in keys else []
        if unknown:
            raise ValueError(
                f"method.{head}.{unknown[0]}={show(value[unknown[0]])}: unknown option "
                f"(method.{head} has {', '.join(sorted(keys))})"
            )
    for name, (ok, rule) in rules.items():
        head, _, key = name.partition(".")
        if not key:
            found = [(name, options.get(head))] if head in options else []
        elif key == "*":
            found = [(f"{head}.{k}", v) for k, v in (options.get(head) or {}).items()]
        else:
            sub = options.get(head) or {}
            found = [(name, sub[key])] if key in sub else []
        for option, value in found:
            if not ok(value):
                raise ValueError(f"method.{option}={show(value)}: {rule}")


def validate_distill(options: Mapping[str, Any]) -> None:
    """Every option of the distillation (``conf/method/distill.yaml``) before anything is built: each value in
    its range, then the ones that depend on each other (K divides N, N divides T, the curriculum's K)."""
    check_rules(options, DISTILL_RULES)
    segments = options.get("segments")
    if not isinstance(segments, Mapping):
        raise ValueError(
            f"method.segments={show(segments)}: must be {{num_segments: K, num_grid: N, num_train_timesteps: T}}"
        )
    try:
        seg = Segments(**segments)
    except ValueError as e:
        raise ValueError(f"method.segments={show(segments)}: {e}") from e
    curriculum = options.get("curriculum")
    schedule = parse_step_schedule(curriculum or [], "method.curriculum")
    bad = [k for _, k in schedule if k != int(k) or k < 1]
    if bad:
        raise ValueError(f"method.curriculum={show(curriculum)}: K must be a positive integer, got {bad}")
    for _, k in schedule:  # every K of the curriculum must fit the grid now, not at its step
        try:
            Segments(**{**segments, "num_segments": int(k)})
        except ValueError as e:
            raise ValueError(f"method.curriculum={show(curriculum)}: K={int(k)}: {e}") from e
    steps = (options.get("validation") or {}).get("teacher_steps", 1)
    if steps > seg.num_train_timesteps:
        raise ValueError(
            f"method.validation.teacher_steps={steps}: must be <= the {seg.num_train_timesteps} timesteps "
            "(method.segments.num_train_timesteps)"
        )


def validate_teacher(options: Mapping[str, Any]) -> None:
    """The numeric and choice options of teacher training (``conf/method/teacher.yaml``); the timestep power and
    the lr anneal are checked where they are parsed."""
    check_rules(options, TEACHER_RULES)
