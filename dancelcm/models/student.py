"""The student: the teacher's network (plus the paper's face path when asked) with an auxiliary head.

The auxiliary head (DanceLCM's light-weight head supervised by real video latents) is a copy of the backbone's
output block reading the student's last shared features; its output then passes through the animator's own
output stages, so at initialisation it equals the main prediction. Used in training only: the exported student
is the animator alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dancelcm.models.animator import Animator


class AuxHead(nn.Module):
    """The light-weight auxiliary head: a copy of the backbone's output block (norm, activation, conv_out),
    initialised from it, reading the student's last shared features (the input of ``conv_norm_out``). Its
    output then passes through the animator's own output stages (:meth:`Animator.output_stages`), so at
    initialisation it equals the main prediction; it is read like the main output (same parameterisation)
    and supervised towards the real latents' x0. Used in training only."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.norm = copy.deepcopy(backbone.conv_norm_out)
        self.act = copy.deepcopy(backbone.conv_act)
        self.conv = copy.deepcopy(backbone.conv_out)

    def forward(self, features: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The output block on the features, laid out like the backbone's sample: (B, C, F, h, w)."""
        x = self.conv(self.act(self.norm(features)))  # (B*F, C, h, w)
        return x.reshape(-1, num_frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class Student(nn.Module):
    """The student animator with an optional auxiliary head; ``forward`` returns ``(out, aux_out)`` when
    the head exists and ``return_aux`` is set, else ``out`` (so it is a plain denoiser for samplers)."""

    def __init__(self, animator: Animator, aux_head: bool):
        super().__init__()
        self.animator = animator
        self._features: torch.Tensor | None = None
        self._tap = None  # a transformer family's hooks (what its auxiliary head reads)
        self.return_aux = False
        self.aux_head = None
        if aux_head and getattr(animator, "family", None) == "wan_animate":
            from dancelcm.models.wan.network import WanAuxHead, WanAuxTap

            self.aux_head, self._tap = WanAuxHead(animator.backbone).float(), WanAuxTap(animator.backbone)
        elif aux_head:
            self.aux_head = AuxHead(animator.backbone).float()  # trained in fp32 whatever the frozen base's dtype
            animator.backbone.conv_norm_out.register_forward_pre_hook(self._grab)

    def _grab(self, module, inputs):
        self._features = inputs[0]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict):
        if self._tap is not None:  # a transformer family: its hooks keep the head's inputs for this forward only
            tap = self._tap
            tap.active = self.aux_head is not None and self.return_aux
            try:
                out = self.animator(x_t, t, cond)
                if not tap.active:
                    return out
                aux = self.aux_head(tap.block_args, tap.temb, tap.motion_vec, tuple(x_t.shape)).to(x_t.dtype)
            finally:
                tap.active = False
                tap.clear()
            return out, aux
        out = self.animator(x_t, t, cond)
        if self.aux_head is None or not self.return_aux:
            return out
        aux = self.aux_head(self._features, x_t.shape[2])
        self._features = None
        return out, self.animator.output_stages(aux, x_t, t, cond)


def student_from_teacher(teacher: Animator, face: dict | None, aux_head: bool) -> Student:
    """A student initialised from ``teacher`` (every teacher weight copied; the face path's new weights start at
    zero output), optionally with the face path (``face``: the face embedder's arguments) and the aux head."""
    if getattr(teacher, "family", None) == "wan_animate":
        animator = copy.deepcopy(teacher).float().train().requires_grad_(True)
        if face is not None:
            animator.add_face_path()
        return Student(animator, aux_head)
    config = dict(teacher.config)
    if face is not None:
        config["face"] = face
    animator = Animator(**config)
    missing, unexpected = animator.load_state_dict(teacher.state_dict(), strict=False)
    bad = [k for k in missing if "face" not in k and "_ip" not in k]
    if bad or unexpected:
        raise RuntimeError(
            f"student initialisation from the teacher failed: missing {bad[:5]}, unexpected {unexpected[:5]}"
        )
    return Student(animator, aux_head)


def lora_student(teacher: Animator, face: dict | None, aux_head: bool, spec) -> Student:
    """The LoRA student (``method.student=lora``, :mod:`dancelcm.models.lora`): ``teacher``'s own network (no copy
    when there is no face path; with one, the teacher's weights moved into a network that has it) with LoRA
    adapters (``spec``: a :class:`dancelcm.models.lora.LoraSpec`) on the backbone. Trainable: the adapters, the
    face path and the auxiliary head; frozen: every base weight. The teacher is then
    ``SharedTeacher(student.animator, teacher.condition_names)``."""
    from dancelcm.models.face import is_face_parameter
    from dancelcm.models.lora import add_lora

    if face is None:
        animator = teacher
    elif getattr(teacher, "family", None) == "wan_animate":  # the path is added to the one network, not a copy
        animator = teacher
        animator.add_face_path()
        animator.face_path.float()
    else:
        animator = student_from_teacher(teacher, face, aux_head=False).animator
    add_lora(animator.backbone, spec)  # freezes the backbone's base weights
    for name, p in animator.named_parameters():
        p.requires_grad_(("lora_A" in name or "lora_B" in name) or is_face_parameter(name))
    student = Student(animator, aux_head)
    if student.aux_head is not None:
        student.aux_head.requires_grad_(True)
    return student
