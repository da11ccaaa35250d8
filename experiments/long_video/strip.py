"""The frames around the first window border of one held-out video (frames 5 to 10; windows 0-7 and 8-15 meet between
7 and 8): ground truth, and the student at 4 steps with independent windows and with 2 and 4 frames of overlap, all
from the same noise.

    python experiments/long_video/strip.py STUDENT_EXPORT OUT.png
"""

from __future__ import annotations

import sys

import torch


def main(student: str, out: str, clip: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from dancelcm.cli import CONF
    from dancelcm.models.bundle import load_bundle
    from dancelcm.sampling import clip_noise, latent_shape, long_video_sampler

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", ["data.num_frames=24", "data.val_clips_per_video=1", "data.num_workers=0"])
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in dm.val_dataset[clip].items()}
    bundle = load_bundle(student)
    noise = clip_noise(batch["clip_index"], latent_shape(bundle, batch), 0)
    rows = {"ground truth": batch["video"][0]}
    for overlap in (0, 2, 4):
        label = "independent windows" if overlap == 0 else f"overlap {overlap}"
        rows[f"4 steps, {label}"] = long_video_sampler(bundle, 4, window=8, overlap=overlap)(batch, noise)[0]
    frames = range(5, 11)
    fig, axes = plt.subplots(len(rows), len(frames), figsize=(1.6 * len(frames), 1.7 * len(rows)))
    for r, (name, video) in enumerate(rows.items()):
        for c, f in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(((video[f].permute(1, 2, 0).clamp(-1, 1) + 1) / 2).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}" + (" | border" if f == 8 else ""), fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"{batch['video_id'][0]}: windows 0-7 and 8-15 meet between frames 7 and 8", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
