"""Checkpoints that survive any kill, and the choice of the one to resume from.

- :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file *in the target's folder*, flushes it to
  disk, then renames it over the target (``os.replace``: atomic on one filesystem). Lightning's own save writes
  its temporary file in ``$TMPDIR``; on a cluster that is a node-local disk while runs live on NFS / Lustre, the
  final "rename" becomes a copy, and a kill during the copy leaves a truncated target with the previous good
  checkpoint already gone.
- :func:`resume_checkpoint` picks, among a run's checkpoints, the readable one with the highest recorded
  ``global_step`` (``last.ckpt`` is not always the newest: a preemption handler, another launch or a copy may
  have written another file), warning about every file that cannot be read instead of stopping on it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file beside it, fsynced, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with the temporary file on the checkpoint's own filesystem (see the module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` a Lightning checkpoint records (memory-mapped: the weights are not read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"])


def resume_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint to resume from in ``directory``: the readable ``*.ckpt`` with the highest recorded step
    (``last.ckpt`` on a tie). Unreadable files are skipped with a warning naming them; None when none is usable."""
    d = Path(directory)
    found: list[tuple[int, bool, Path]] = []
    for path in sorted(d.glob("*.ckpt")) if d.is_dir() else []:
        if path.name.startswith("."):  # an unfinished temporary file of an atomic save
            continue
        try:
            step = checkpoint_step(path)
        except Exception as e:  # a truncated or corrupt file: never stop the resume on it
            log.warning(
                "ckpt_path=auto: %s cannot be read (%s: %s); looking at the other checkpoints",
                path,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
            continue
        found.append((step, path.name == "last.ckpt", path))
    if not found:
        return None
    step, _, best = max(found)
    others = ", ".join(f"{p.name}: step {s}" for s, _, p in sorted(found) if p != best)
    log.info("resuming from %s (step %d%s)", best, step, f"; also found {others}" if others else "")
    return best


class FinalCheckpoint(L.Callback):
    """Writes ``last.ckpt`` at the last step when no regular checkpoint falls on it (``trainer.max_steps`` not a
    multiple of ``callbacks.checkpoint_every_n_steps``). Lightning's ``ModelCheckpoint`` saves the final state
    only if it never saved one, so a run extended later (a larger ``max_steps``) would resume from an older step.

    The file is written after the last optimizer step, like a regular checkpoint (not at ``on_train_end``, whose
    loop state marks the epoch finished and would make a resumed run start a new epoch), so an extended run
    continues exactly."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not 0 < trainer.max_steps <= trainer.global_step:
            return
        every = getattr(trainer.checkpoint_callback, "_every_n_train_steps", 0) or 0
        if every and trainer.global_step % every == 0:
            return  # the regular checkpoint of this step (written after this hook) is the last one
        trainer.save_checkpoint(str(self.path))
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and hasattr(ckpt, "_last_checkpoint_saved"):
            # else its on_train_end, finding no last.ckpt of its own, would overwrite this one with the end state
            ckpt._last_checkpoint_saved, ckpt._last_global_step_saved = str(self.path), trainer.global_step
        log.info("training ends at step %d: checkpoint written to %s", trainer.global_step, self.path)
