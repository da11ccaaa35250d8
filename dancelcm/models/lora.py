"""The LoRA student: the teacher's own network with low-rank adapters, sharing one copy of the base weights.

With ``method.student=lora`` the student is the teacher's network with peft LoRA adapters on its attention and
feed-forward linears; the teacher is *the same module with the adapters (and the student's face path) switched
off* (:class:`SharedTeacher`), and the EMA target is an fp32 EMA of the trainable weights only
(:class:`dancelcm.models.ema.ParameterEMA`), swapped in for the target's forward. So one copy of the base weights
sits in memory, where the full student needs three (teacher, student, target): what makes a 14 B teacher fit.

What trains: the adapters, plus the parts that are the student's own (the auxiliary head and the face path, in
full). Everything else (the backbone's base weights, the pose guider, the reference embedder) stays frozen.

The adapters come from peft (``inject_adapter_in_model``: any ``nn.Module``, so the same code serves diffusers'
UNets and video transformers); switching them off is peft's ``BaseTunerLayer.enable_adapters(False)``, as
diffusers' ``PeftAdapterMixin.disable_adapters`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

ADAPTER = "dancelcm"
# attention (q, k, v, out) and feed-forward (GEGLU in, out) linears, as diffusers names them in UNets and video
# transformers ("net.0.proj" / "net.2" match both ``ff.net`` and Wan's ``ffn.net``)
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 64
    alpha: float = 64.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0


def add_lora(backbone: nn.Module, spec: LoraSpec) -> int:
    """Inject LoRA adapters (B zero-initialised, so the output is unchanged) into ``backbone``'s linears named
    by ``spec.target_modules`` (suffixes of module names); every base weight of ``backbone`` is frozen. Returns the
    number of adapted layers; a target that matches nothing stops with the names it could have matched."""
    from peft import LoraConfig, inject_adapter_in_model

    names = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    unmatched = [t for t in spec.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        examples = sorted({n.rsplit(".", 1)[-1] for n in names})[:12]
        raise ValueError(
            f"method.lora.target_modules: {unmatched} match no linear layer of the backbone "
            f"({type(backbone).__name__}; its linear layers end in e.g. {examples})"
        )
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        init_lora_weights=True,  # A: Kaiming, B: zero -> the adapted network starts as the base network
    )
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER)
    for name, p in backbone.named_parameters():  # peft marks only the adapters trainable; say it explicitly
        p.requires_grad_(False)
        if ("lora_A" in name or "lora_B" in name) and p.dtype != torch.float32:
            p.data = p.data.float()  # trained in fp32 on a bf16 base (peft gives them the base layer's dtype)
    layers = lora_layers(backbone)
    for layer in layers:
        for p in adapter_parameters(layer):
            p.requires_grad_(True)
    return len(layers)


def lora_layers(module: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The LoRA weights (``lora_A`` / ``lora_B``) under ``module``."""
    return [p for n, p in module.named_parameters() if "lora_A" in n or "lora_B" in n]


def has_lora(module: nn.Module) -> bool:
    return bool(lora_layers(module))


@contextlib.contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as its base network: every LoRA layer off (restored afterwards, also on error)."""
    layers = lora_layers(module)
    before = [layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, off in zip(layers, before):
            layer.enable_adapters(not off)


class SharedTeacher:
    """The frozen teacher as a view of the LoRA student's animator: adapters off, the student's face path off,
    and only the teacher's own conditions read. It owns no weights (so it is never saved or trained) and is a
    denoiser like the teacher animator: ``(x_t, t, cond) -> output``, ``condition_names``, ``conditions``."""

    def __init__(self, animator: nn.Module, condition_names: list[str]):
        extra = [n for n in animator.condition_names if n not in condition_names]
        if [n for n in animator.condition_names if n in condition_names] != list(condition_names):
            raise ValueError(
                f"the LoRA student's conditions {animator.condition_names} do not extend the teacher's "
                f"{condition_names}"
            )
        self.animator, self.condition_names, self.student_only = animator, list(condition_names), extra

    def conditions(self, batch: dict, autoencoder) -> dict:
        from dancelcm.models.animator import batch_conditions

        if getattr(self.animator, "family", None):  # a transformer family reads its precomputed inputs itself
            return self.animator.conditions(batch, autoencoder)
        return batch_conditions(batch, autoencoder, self.condition_names)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The animator as the teacher: adapters and the student's own conditions off, eval mode (the frozen
        teacher never runs dropout); everything restored afterwards."""
        was_training = self.animator.training
        self.animator.eval()
        try:
            with adapters_disabled(self.animator), self.animator.without_conditions(self.student_only):
                yield
        finally:
            self.animator.train(was_training)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        with self.active():
            return self.animator(x_t, t, cond)

    # what samplers and the distillation module call on a teacher network
    def eval(self) -> SharedTeacher:
        return self

    def to(self, *args, **kwargs) -> SharedTeacher:  # the weights move with the student
        return self


# -- export: the adapters in the diffusers / peft format, next to a reference to the base bundle --------------------
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file name diffusers' load_lora_weights looks for
OWN_WEIGHTS = "student_weights.safetensors"  # the student's own full weights (its face path), not in the base


def lora_prefix(backbone: nn.Module) -> str:
    """The component name diffusers' LoRA loaders key the weights by: ``transformer`` or ``unet``."""
    return "transformer" if "Transformer" in type(backbone).__name__ else "unet"


def lora_state_dicts(animator: nn.Module, state: dict[str, torch.Tensor] | None = None):
    """``(adapters, own)`` of a LoRA student animator: the adapter weights in peft's format, keyed as diffusers'
    LoRA loaders read them (``unet.<module>.lora_A.weight``), and the student's own trained weights that its base
    lacks (the face path). ``state``: the animator's full state dict when it is gathered elsewhere (FSDP)."""
    from dancelcm.models.face import is_face_parameter

    state = animator.state_dict() if state is None else state
    prefix = lora_prefix(animator.backbone)
    tag = f".{ADAPTER}."
    adapters = {
        f"{prefix}.{k.removeprefix('backbone.').replace(tag, '.')}": v.detach().float().contiguous()
        for k, v in state.items()
        if k.startswith("backbone.") and ("lora_A" in k or "lora_B" in k)
    }
    own = {k: v.detach().float().contiguous() for k, v in state.items() if is_face_parameter(k)}
    if not adapters:
        raise ValueError("lora_state_dicts: the animator has no LoRA adapters")
    return adapters, own
