"""One distillation step of Wan2.2-Animate-14B at real size on a GPU, random weights: memory and seconds per step.

    python -m dancelcm.tools.wan_step [layers=40] [frames=77] [height=480] [width=832] [rank=64] [steps=4] \
        [checkpointing=1] [out=wan_step.json] [device=cuda] [tiny=0]

The transformer is built with the 14B configuration (``layers`` < 40 for a smaller card) directly on the GPU in
bf16 with diffusers' random initialisation (no download, no disk): the LoRA student and its shared frozen base, the
fp32 auxiliary head (a copy of the last block and output head), the fp32 EMA of the trained weights; a random batch
of one clip (``frames`` x ``height`` x ``width``). Each step is what ``DistillModule.training_step`` does, through
the same functions: the teacher's flow step (adapters off, no grad), the EMA target's jump (no grad), the student's
forward and backward with the auxiliary loss, AdamW, the EMA update; under bf16 autocast, activation checkpointing
on. Prints and writes peak memory and the median seconds of the steps after the first. One GPU, no FSDP: the
per-GPU plan of ``python -m dancelcm.models.wan.sizes`` (sharded base) is then the measured peak minus
(1 - 1/gpus) x the base's bytes. ``device=cpu tiny=1`` runs the same code at the tiny test size (a CPU test
keeps the script working between GPU sessions).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch


def build_transformer(config: dict, device: torch.device):
    """The transformer with diffusers' own random initialisation, made directly on ``device`` in bf16 (a 15 B model:
    30 GB, never an fp32 copy); the modules diffusers keeps in fp32 are put back to fp32."""
    from diffusers import WanAnimateTransformer3DModel

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = WanAnimateTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(default)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(k in name.split(".") for k in keep):
            module.float()
    return model


def main(argv: list[str] | None = None) -> dict:
    from dancelcm.diffusion import FlowMatchSchedule, Segments
    from dancelcm.distill.consistency import LossWeights, consistency_targets, distillation_loss
    from dancelcm.models.ema import ParameterEMA
    from dancelcm.models.lora import LoraSpec, SharedTeacher
    from dancelcm.models.student import lora_student
    from dancelcm.models.wan.network import WanAnimator
    from dancelcm.models.wan.sizes import DEFAULT_TARGETS
    from dancelcm.models.wan.tiny import TINY_TRANSFORMER

    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    layers, frames = int(args.get("layers", 40)), int(args.get("frames", 77))
    height, width, rank = int(args.get("height", 480)), int(args.get("width", 832)), int(args.get("rank", 64))
    steps, checkpointing = int(args.get("steps", 4)), bool(int(args.get("checkpointing", 1)))
    dev = torch.device(args.get("device", "cuda"))
    tiny = bool(int(args.get("tiny", 0)))
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    config = {**TINY_TRANSFORMER, "num_layers": layers} if tiny else {"num_layers": layers}
    transformer = build_transformer(config, dev)
    dims = transformer.config
    teacher = WanAnimator(transformer).eval().requires_grad_(False)
    student = lora_student(teacher, None, True, LoraSpec(rank, rank, DEFAULT_TARGETS, 0.0)).to(dev)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    shared = SharedTeacher(student.animator, teacher.condition_names)
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    ema = ParameterEMA(trainable, 0.95).to(dev)
    opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-5)
    schedule, segments = FlowMatchSchedule(1000, 5.0), Segments(num_segments=4, num_grid=40)
    t_lat, h, w, c = (frames - 1) // 4 + 1, height // 8, width // 8, 16
    b = lambda *s: torch.randn(1, *s, device=dev)  # noqa: E731
    face, text, image = dims.motion_encoder_size, dims.text_dim, dims.image_dim
    cond = {
        "reference_latents": b(c + 4, 1 + t_lat, h, w), "image_embeds": b(257, image),
        "pose_latents": b(c, t_lat, h, w),
        "face_pixel_values": b(3, frames, face, face).clamp(-1, 1), "prompt_embeds": b(512, text),
        "negative_prompt_embeds": b(512, text), "drop": {},
    }  # fmt: skip
    x0 = b(c, 1 + t_lat, h, w)

    def target(x_t, t, cnd):
        student.eval()
        with ema.swapped_in(student):
            out = student(x_t, t, cnd)
        student.train()
        return out

    times, losses = [], []
    torch.autograd.set_detect_anomaly(bool(int(args.get("anomaly", 0))))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            n = torch.randint(0, 40, (1,), device=dev)
            with torch.no_grad():
                targets = consistency_targets(shared, target, schedule, segments, x0, cond, n, torch.randn_like(x0))
            student.return_aux = True
            out = distillation_loss(student, targets, schedule, x0, cond, LossWeights("huber", 1e-3, 1.0))
            student.return_aux = False
        if args.get("debug"):
            print("loss", out.loss_cd.item(), out.loss_aux.item(), out.pred.abs().max().item())
            for name, part in (("cd", out.loss_cd), ("aux", out.loss_aux)):
                opt.zero_grad(set_to_none=True)
                part.backward(retain_graph=True)
                bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
                print(name, "non-finite grads in", len(bad), "of", len(trainable))
            opt.zero_grad(set_to_none=True)
        out.loss.backward()
        bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            print("non-finite gradients:", bad[:5])
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(student)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(out.loss))
    base = sum(p.numel() * p.element_size() for p in transformer.parameters() if not p.requires_grad)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "layers": layers, "frames": frames, "height": height, "width": width, "rank": rank,
        "tokens": (1 + t_lat) * (h // 2) * (w // 2), "checkpointing": checkpointing,
        "parameters": sum(p.numel() for p in transformer.parameters()),
        "trainable": sum(p.numel() for _, p in trainable),
        "frozen_base_gb": base / 1e9,
        "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "seconds_per_step": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "first_step_seconds": times[0], "losses": losses,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    with open(args.get("out", "wan_step.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
