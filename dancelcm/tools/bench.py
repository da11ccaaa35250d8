"""``python -m dancelcm.tools.bench`` (``make bench``): the speed claims as ratios measured side by side in one run.

(a) inference  teacher DDIM-N + CFG vs the student at 4 / 2 / 1 steps, same network, end to end per clip
               (conditions, sampling, decoding), next to the NFE-ratio bound;
(b) training   a distillation step (teacher CFG step + EMA target + student forward/backward + aux head)
               over a plain diffusion step of the same network and batch, both through Lightning;
(c) data       the loader's clips/s (cold: every clip decoded) over what a distillation step consumes.

Weights are random (speed does not depend on them); the data is the configured datamodule's. Prints a
table and writes JSON. Timings on a shared or throttled CPU are noisy; the ratios are what to read.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dancelcm.cli import CONF, command

log = logging.getLogger(__name__)

# name: (target, direction) -- the 4-step student >= 22x the teacher end to end, a distillation step <= 1.8x a
# plain step, the loader >= 3x what training consumes
TARGETS = {"inference_4_step": (22.0, ">="), "train_step_ratio": (1.8, "<="), "loader_over_consumption": (3.0, ">=")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _teacher_bundle(cfg, directory: Path):
    from dancelcm.lit.builders import animator_kwargs, data_geometry, plain
    from dancelcm.models.animator import Animator
    from dancelcm.models.bundle import load_bundle, save_bundle

    model = plain(cfg.model)
    torch.manual_seed(0)
    animator = Animator(**animator_kwargs(model, cfg.data.resolution))
    meta = {
        "kind": "teacher",
        "scheduler": model["scheduler"],
        "autoencoder": model["autoencoder"],
        "data": data_geometry(plain(cfg.data)),
        "sampling": {"steps": cfg.bench.teacher_steps, "guidance": cfg.bench.guidance, "uncond": ["reference"]},
    }
    save_bundle(directory, animator, meta)
    return load_bundle(directory)


def bench_inference(cfg, bundle, batch: dict, device: torch.device) -> dict:
    from dancelcm.diffusion import Segments
    from dancelcm.sampling import latent_shape, student_sampler, teacher_sampler

    bundle.to(device)
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    noise = torch.randn(b["video"].shape[0], *latent_shape(bundle, b), device=device)
    n, g = int(cfg.bench.teacher_steps), float(cfg.bench.guidance)
    segments = Segments(num_segments=4, num_grid=int(cfg.bench.num_grid))  # the teacher's network as a K=4 student

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bench.bf16)

    def timed(sampler):
        def run():
            with torch.no_grad():
                sampler(b, noise)

        return run

    teacher = timed(teacher_sampler(bundle, n, g, ["reference"], autocast=autocast))

    def student(k):
        return timed(student_sampler(bundle, k, segments=segments, autocast=autocast))

    clips = b["video"].shape[0]
    out = {"teacher": {"nfe": 2 * n, "s_per_clip": _timed(teacher, cfg.bench.repeats, device) / clips}}
    for k in (4, 2, 1):
        s = _timed(student(k), cfg.bench.repeats, device) / clips
        out[f"student_{k}"] = {
            "nfe": k,
            "s_per_clip": s,
            "speedup": out["teacher"]["s_per_clip"] / s,
            "nfe_bound": 2 * n / k,
        }
    return out


class _StepTimer:
    def __init__(self, skip: int):
        import lightning as L

        parent = self

        class Cb(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                _sync(pl_module.device)
                parent.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                _sync(pl_module.device)
                if batch_idx >= skip:
                    parent.times.append(time.perf_counter() - parent.t0)

        self.callback, self.times, self.t0 = Cb(), [], 0.0


class _Repeat:
    """The same in-memory batch ``n`` times (step time without data loading)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __iter__(self):
        return (self.batch for _ in range(self.n))

    def __len__(self) -> int:
        return self.n


def _fit_steps(module, batch: dict, steps: int, cfg) -> float:
    """Median step time of ``module`` through a Lightning Trainer on one repeated in-memory batch."""
    import lightning as L

    timer = _StepTimer(skip=2)
    trainer = L.Trainer(
        accelerator=cfg.bench.accelerator,
        devices=1,
        precision="bf16-mixed" if cfg.bench.bf16 else "32-true",
        max_steps=steps + 2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer.callback],
    )
    trainer.fit(module, train_dataloaders=_Repeat(batch, steps + 2))
    return statistics.median(timer.times)


def bench_training(cfg, teacher_dir: Path, batch: dict) -> dict:
    from omegaconf import OmegaConf, open_dict

    from dancelcm.lit.builders import build_module

    plain_cfg, distill_cfg = cfg.copy(), cfg.copy()
    with open_dict(plain_cfg), open_dict(distill_cfg):
        # the same network trained with the plain diffusion objective (the teacher method's defaults)
        plain_cfg.method = OmegaConf.load(CONF / "method" / "teacher.yaml")
        distill_cfg.method.teacher = str(teacher_dir)
        distill_cfg.method.validation = {"teacher_steps": 2, "student_steps": [1]}
        distill_cfg.method.segments.num_grid = int(cfg.bench.num_grid)
    plain_module, distill = build_module(plain_cfg), build_module(distill_cfg)
    steps = int(cfg.bench.train_steps)
    t_plain = _fit_steps(plain_module, batch, steps, cfg)
    t_distill = _fit_steps(distill, batch, steps, cfg)
    out = {"plain_step_s": t_plain, "distill_step_s": t_distill, "ratio": t_distill / t_plain}
    out["components"] = _components(plain_module, batch, cfg)
    return out


def _components(module, batch: dict, cfg) -> dict:
    """Where a distillation step's time goes, in units of the same network: a forward at batch 2B (the
    teacher's batched CFG), a forward at B (the EMA target) and a forward + backward at B (the student,
    which is all a plain step runs). The step-time ratio cannot beat (f_2B + f_B + fb_B) / fb_B."""
    device = torch.device("cuda" if cfg.bench.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    net = module.animator.to(device).train()
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bench.bf16)
    with torch.no_grad():
        z = module.autoencoder.encode(b["video"])
        cond = net.conditions(b, module.autoencoder)
    t = torch.full((z.shape[0],), 500, device=device)
    cond2 = {k: (torch.cat([v, v]) if torch.is_tensor(v) else v) for k, v in cond.items()}
    cond2["drop"] = {}
    z2, t2 = torch.cat([z, z]), torch.cat([t, t])

    def fwd(x, tt, c):
        def run():
            with torch.no_grad(), autocast:
                net(x, tt, c)

        return run

    def fwd_bwd():
        with autocast:
            loss = net(z, t, cond).float().square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    r = int(cfg.bench.repeats)
    f2, f1, fb = _timed(fwd(z2, t2, cond2), r, device), _timed(fwd(z, t, cond), r, device), _timed(fwd_bwd, r, device)
    return {"forward_2B_s": f2, "forward_B_s": f1, "forward_backward_B_s": fb, "ratio_bound": (f2 + f1 + fb) / fb}


def bench_data(dm, clips: int) -> float:
    """Cold loader throughput (clips/s): a fresh train loader, every clip decoded."""
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up and first decode are not throughput
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += batch["video"].shape[0]
        if n >= clips:
            break
    return n / (time.perf_counter() - t0)


def markdown(result: dict) -> str:
    inf, tr, da = result["inference"], result["training"], result["data"]
    lines = [
        f"device: {result['device']}, clip: {result['clip']}, batch {result['batch_size']}",
        "",
        "| (a) inference | NFE | s / clip | speed-up vs teacher | NFE bound |",
        "|---|---|---|---|---|",
        f"| teacher DDIM-{inf['teacher']['nfe'] // 2} + CFG | {inf['teacher']['nfe']} "
        f"| {inf['teacher']['s_per_clip']:.4f} | 1.0x | |",
    ]
    for k in (4, 2, 1):
        s = inf[f"student_{k}"]
        lines.append(
            f"| student {k} steps | {k} | {s['s_per_clip']:.4f} | {s['speedup']:.1f}x | {s['nfe_bound']:.0f}x |"
        )
    lines += [
        "",
        "| (b) training | s / step |",
        "|---|---|",
        f"| plain diffusion step | {tr['plain_step_s']:.3f} |",
        f"| distillation step | {tr['distill_step_s']:.3f} |",
        f"| ratio | {tr['ratio']:.2f}x |",
        "",
        "| (b) where a distillation step goes (same network) | s |",
        "|---|---|",
        f"| teacher CFG forward, batch 2B | {tr['components']['forward_2B_s']:.3f} |",
        f"| EMA target forward, batch B | {tr['components']['forward_B_s']:.3f} |",
        f"| student forward + backward, batch B (= a plain step) | {tr['components']['forward_backward_B_s']:.3f} |",
        f"| ratio bound (sum / forward + backward) | {tr['components']['ratio_bound']:.2f}x |",
        "",
        "| (c) data | clips / s |",
        "|---|---|",
        f"| loader (cold, {result['num_workers']} workers) | {da['loader_clips_s']:.1f} |",
        f"| consumed by distillation | {da['consumed_clips_s']:.1f} |",
        f"| ratio | {da['ratio']:.1f}x |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, t in result["targets"].items():
        lines.append(f"| {name} | {t['value']:.2f} (target {t['direction']} {t['target']}) | {t['met']} |")
    return "\n".join(lines)


def measure(cfg) -> dict:
    """The three side-by-side measurements and their targets."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # two short fits: no banners
    if cfg.bench.accelerator == "cpu" or not torch.cuda.is_available():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "clip": f"{cfg.data.num_frames} x {cfg.data.resolution} x {cfg.data.resolution}",
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.num_workers),
        "model": cfg.model_name,
        "bf16": bool(cfg.bench.bf16),
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _teacher_bundle(cfg, Path(tmp) / "teacher")
        one = {k: v[: cfg.bench.inference_batch] for k, v in batch.items()}
        log.info("(a) inference: teacher DDIM-%d + CFG vs student 4/2/1 steps", cfg.bench.teacher_steps)
        result["inference"] = bench_inference(cfg, bundle, one, device)
        log.info("(b) training: distillation step vs plain diffusion step, %d steps each", cfg.bench.train_steps)
        result["training"] = bench_training(cfg, Path(tmp) / "teacher", batch)
    log.info("(c) data: cold loader throughput")
    loader = bench_data(dm, int(cfg.bench.data_clips))
    consumed = cfg.data.batch_size / result["training"]["distill_step_s"]
    result["data"] = {"loader_clips_s": loader, "consumed_clips_s": consumed, "ratio": loader / consumed}
    values = {
        "inference_4_step": result["inference"]["student_4"]["speedup"],
        "train_step_ratio": result["training"]["ratio"],
        "loader_over_consumption": result["data"]["ratio"],
    }
    result["targets"] = {}
    for name, (target, direction) in TARGETS.items():
        v = values[name]
        met = v >= target if direction == ">=" else v <= target
        result["targets"][name] = {"value": v, "target": target, "direction": direction, "met": bool(met)}
    return result


def run(cfg) -> dict:
    """Measure, print the table, write ``cfg.output`` (JSON) and its ``.md``: callable in-process."""
    result = measure(cfg)
    table = markdown(result)
    print(table)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return result


main = command("tools.bench", run, __doc__, config_name="bench")


if __name__ == "__main__":
    main()
