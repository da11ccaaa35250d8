"""How well a model denoises at each noise level: ``python -m dancelcm.tools.probe model_dir=DIR``.

For held-out clips and each timestep t, the ground truth is noised to ``x_t`` (fixed noise per clip) and the
model's single-step x0 estimate is scored against the ground truth (PSNR, figure PSNR, sharpness ratio), next
to the naive estimate ``x_t / a_t``. A denoiser worth sampling from beats ``x_t / a_t`` at every t; where it
does not (typically the low-noise end while a teacher is young), DDIM's last steps add the model's error
instead of removing noise. This diagnosis found the blur and the residual noise of the embedded-default
teacher (README, "The embedded-default teacher"); the sampler-level view is ``python -m dancelcm.evaluate``.
Writes ``probe.json`` and ``probe.md`` into ``out_dir``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from dancelcm.cli import command

log = logging.getLogger(__name__)


@torch.no_grad()
def probe(bundle, loader, timesteps: list[int], max_clips: int | None, seed: int) -> list[dict]:
    """Mean metrics per timestep over up to ``max_clips`` clips: the model's x0 estimate and ``x_t / a_t``."""
    from tqdm.auto import tqdm

    from dancelcm.metrics.quality import clip_metrics
    from dancelcm.sampling import clip_noise

    bad = [t for t in timesteps if not 0 <= int(t) < bundle.schedule.num_train_timesteps]
    if bad:
        raise ValueError(f"timesteps={bad}: must lie in [0, {bundle.schedule.num_train_timesteps - 1}]")
    net, ae, sched = bundle.animator.eval(), bundle.autoencoder, bundle.schedule
    device = next(net.parameters()).device
    sums: dict[int, dict[str, float]] = {int(t): {} for t in timesteps}
    seen = 0
    bar = tqdm(total=max_clips or len(loader.dataset), desc="probing", unit="clip")
    for batch in loader:
        if max_clips is not None and seen >= max_clips:
            break
        if max_clips is not None:
            batch = {k: v[: max_clips - seen] for k, v in batch.items()}
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        b = batch["video"].shape[0]
        z = ae.encode(batch["video"])
        cond = net.conditions(batch, ae)
        eps = clip_noise(batch["clip_index"].cpu(), tuple(z.shape[1:]), seed).to(device)
        for t in sums:
            tt = torch.full((b,), t, device=device)
            a, _ = sched.coefficients(tt, like=z)
            x_t = sched.add_noise(z, eps, tt)
            x0, _ = sched.to_x0_eps(net(x_t, tt, cond), x_t, tt)
            rows = {"model": ae.decode(x0).clamp(-1, 1)}
            if float(a.min()) > 0.05:  # at the top x_t / a_t is pure amplified noise
                rows["x_t / a_t"] = ae.decode(x_t / a).clamp(-1, 1)
            for name, video in rows.items():
                m = clip_metrics(video, batch)
                for key in ("psnr", "psnr_figure", "sharpness"):
                    if key in m:
                        v = m[key].float()
                        v = v[~torch.isnan(v)]
                        sums[t][f"{name}|{key}"] = sums[t].get(f"{name}|{key}", 0.0) + float(v.sum())
                        sums[t][f"{name}|{key}|n"] = sums[t].get(f"{name}|{key}|n", 0.0) + len(v)
        seen += b
        bar.update(b)
    bar.close()
    if seen == 0:
        raise ValueError("probe: the data split has no clips")
    out = []
    for t, s in sums.items():
        row = {"t": t, "clips": seen}
        for k in s:
            if not k.endswith("|n"):
                row[k] = s[k] / max(s[k + "|n"], 1)
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    cols = [("model|psnr", "x0 PSNR"), ("model|psnr_figure", "x0 figure PSNR"), ("model|sharpness", "x0 sharpness")]
    cols += [("x_t / a_t|psnr", "x_t/a PSNR"), ("x_t / a_t|sharpness", "x_t/a sharpness")]
    lines = ["| t | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [f"{r[k]:.2f}" if k in r else "" for k, _ in cols]
        lines.append(f"| {r['t']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg) -> None:
    """The command's work on a composed config (``conf/probe.yaml``): callable in-process."""
    from hydra.utils import instantiate

    from dancelcm.models.bundle import load_bundle

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else str(cfg.device)
    bundle = load_bundle(cfg.model_dir, option="model_dir")
    bundle.to(device)
    dm = instantiate(cfg.data)
    dm.setup("validate")
    rows = probe(bundle, dm.val_dataloader(), [int(t) for t in cfg.timesteps], cfg.max_clips, int(cfg.seed))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"model_dir": str(cfg.model_dir), "rows": rows}, indent=1))
    md = table(rows)
    command = f"python -m dancelcm.tools.probe model_dir={cfg.model_dir} max_clips={cfg.max_clips} seed={cfg.seed}"
    (out / "probe.md").write_text(f"`{command}` ({rows[0]['clips']} clips)\n\n{md}\n")
    log.info("\n%s\nwritten: %s", md, out / "probe.md")


main = command("tools.probe", run, __doc__, config_name="probe")


if __name__ == "__main__":
    main()
