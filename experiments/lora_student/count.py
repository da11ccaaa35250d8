"""Parameters a distillation trains and holds in memory: ``count.py OUT.json [override ...]`` (run.sh's stage 2).

Builds the distillation module of ``+experiment=synthetic_k4 +budget=cpu150 <overrides>`` (the shipped teacher) and
counts every tensor once, by storage: the teacher, the student (+ aux head) and the EMA target of the full student
are three networks; the LoRA student's teacher is its own base and its target only the averaged trainable weights.
"""

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from dancelcm.lit.builders import build_module

out, overrides = Path(sys.argv[1]), sys.argv[2:]
conf = Path(__file__).resolve().parents[2] / "conf"
with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
    cfg = compose(config_name="train", overrides=["+experiment=synthetic_k4", "+budget=cpu150", *overrides])
module = build_module(cfg)
tensors = {}
teacher = module.teacher if not module.lora else None  # the full student's separate frozen teacher
for part in [module, teacher]:
    if part is None:
        continue
    for t in [*part.parameters(), *part.buffers()]:
        tensors[t.untyped_storage().data_ptr()] = t
held = sum(t.numel() for t in tensors.values())
held_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
trained = sum(p.numel() for p in module.student.parameters() if p.requires_grad)
result = {"overrides": overrides, "trained": trained, "held": held, "held_bytes": held_bytes}
out.write_text(json.dumps(result, indent=1))
print(f"{out}: trained {trained / 1e6:.2f} M, held {held / 1e6:.2f} M ({held_bytes / 2**20:.0f} MiB)")
