"""Every command's shape and its error boundary.

Each command is ``main()`` -> a plain ``run(cfg)`` that a test can call in-process with a composed config::

    def run(cfg: DictConfig) -> Result: ...
    main = command("evaluate", run, __doc__)

``main`` composes the command's primary config (``conf/<name>.yaml``) with Hydra, so every command takes the same
arguments: ``key=value`` overrides, ``--cfg job`` (print the composed config), ``-m`` where sweeps make sense, and
``--help``, which prints the command's own description and options with their YAML comments.

The error boundary: a user's mistake (a :class:`UserError`: a missing file or folder, a bad option value, unusable
data, a missing teacher; or a config Hydra cannot compose: an unknown experiment or override) prints one message
naming what to change and exits with status 2, without a traceback (``HYDRA_FULL_ERROR=1`` shows it). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parent.parent / "conf"
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix (the message says how): reported in one line, exit status 2."""


class ConfigError(UserError, ValueError):
    """An option value out of its range or a combination that cannot work (names the option)."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder an option names does not exist or holds the wrong thing (names the option)."""


class PathExistsError(UserError, FileExistsError):
    """A folder a command would write into already holds other files (it never writes over them)."""


def user_error(exc: BaseException) -> UserError | None:
    """The user error behind ``exc`` (Hydra wraps errors of instantiated targets), or None for a bug."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report(exc: UserError, name: str) -> None:
    """Print a user error as one message on stderr."""
    print(f"dancelcm.{name}: error: {exc}", file=sys.stderr)


def quiet_library_handlers() -> None:
    """Lightning gives its loggers a console handler of their own when imported before logging is configured;
    Hydra's root handler prints (and files) the same records: keep one, Hydra's, so every line prints once."""
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True


def help_text(name: str, doc: str | None, added_groups: tuple[str, ...] = ()) -> str:
    """The command's description, then its own options: ``conf/<name>.yaml`` with its comments, without the
    ``defaults`` list and Hydra's settings; then the config groups it composes (and ``added_groups``, the ones
    added with ``+group=option``)."""
    lines, skip = [], False
    for line in (CONF / f"{name}.yaml").read_text().splitlines():
        top = re.match(r"^(\w[\w.]*):", line)
        if top:
            skip = top.group(1) in ("defaults", "hydra")
        if not skip and not line.startswith("# @package"):
            lines.append(line)
    groups = []
    for d in sorted(p for p in CONF.iterdir() if p.is_dir()):
        if re.search(rf"^\s*-\s*\+?{d.name}\s*:", (CONF / f"{name}.yaml").read_text(), re.M):
            groups.append(f"  {d.name}: " + ", ".join(sorted(p.stem for p in d.glob("*.yaml"))))
    while lines and not lines[-1].strip():
        lines.pop()
    out = [(doc or f"python -m dancelcm.{name}").strip(), "", f"Options (conf/{name}.yaml; set any with key=value):"]
    out += ["  " + line if line else "" for line in lines]
    if groups:
        out += ["", "Config groups (choose with group=option; set their keys with group.key=value):", *groups]
    if added_groups:
        out += ["", "Added with +group=option:"]
        out += [f"  {g}: " + ", ".join(sorted(p.stem for p in (CONF / g).glob("*.yaml"))) for g in added_groups]
    out += [
        "",
        "--cfg job prints the composed config; HYDRA_FULL_ERROR=1 shows the traceback of an error;",
        "--hydra-help shows Hydra's own options.",
    ]
    return "\n".join(out)


def command(
    name: str,
    run: Callable[[Any], Any],
    doc: str | None = None,
    config_name: str | None = None,
    added_groups: tuple[str, ...] = (),
):
    """``main()`` for ``python -m dancelcm.<name>``: Hydra composes ``conf/<config_name or name>.yaml``, ``run(cfg)``
    does the work, and user errors end in one message with exit status 2."""
    config = config_name or name

    def main() -> None:
        import hydra

        if any(a in ("--help", "-h") for a in sys.argv[1:]):
            print(help_text(config, doc, added_groups))
            return
        started = False

        @hydra.main(version_base="1.3", config_path=str(CONF), config_name=config)
        def task(cfg) -> None:
            nonlocal started
            started = True
            quiet_library_handlers()
            try:
                run(cfg)
            except Exception as e:
                err = user_error(e)
                if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                report(err, name)
                sys.exit(EXIT_USER_ERROR)

        try:
            task()
        except SystemExit as e:
            # Hydra reports a config it cannot compose (an unknown experiment, a bad override) in one message and
            # exits with 1 before the task starts: that is a user's mistake too
            if e.code == 1 and not started:
                sys.exit(EXIT_USER_ERROR)
            raise

    main.__doc__ = doc
    return main
