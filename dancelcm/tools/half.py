"""A float16 copy of a model bundle (half the size: what ships in git): ``python -m dancelcm.tools.half src=DIR
dst=DIR`` (options in ``conf/bundle_half.yaml``; see :func:`dancelcm.models.bundle.half_copy`)."""

from __future__ import annotations

from dancelcm.cli import ConfigError, command
from dancelcm.models.bundle import half_copy


def run(cfg) -> dict[str, list[str]]:
    """Copy ``cfg.src`` to ``cfg.dst`` with float16 weights; returns the tensors kept float32 per file."""
    for key in ("src", "dst"):
        if not cfg.get(key):
            raise ConfigError(f"{key}=DIR is required (python -m dancelcm.tools.half src=DIR dst=DIR)")
    kept = half_copy(cfg.src, cfg.dst, float(cfg.max_rel_error))
    for name, names in kept.items():
        print(f"{cfg.dst}/{name}: float16, {len(names)} tensors kept float32 {names[:4]}")
    return kept


main = command("tools.half", run, __doc__, config_name="bundle_half")

if __name__ == "__main__":
    main()
