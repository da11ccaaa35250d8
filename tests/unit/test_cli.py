"""Every command's error boundary and --help, in-process: a user's mistake is one message and exit status 2, no
traceback; a bug keeps its traceback."""

from __future__ import annotations

import sys

import pytest

from tests.configs.test_experiment_configs import _save_micro_teacher


def _main(monkeypatch, module: str, args: list[str]):
    """Run ``python -m dancelcm.<module> ARGS`` in this process: (exit code, stdout, stderr) via capsys."""
    import importlib

    main = importlib.import_module(f"dancelcm.{module}").main
    monkeypatch.setattr(sys, "argv", [f"dancelcm.{module}", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        main()
    except SystemExit as e:
        return e.code
    return 0


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory):
    return _save_micro_teacher(tmp_path_factory.mktemp("cli") / "teacher")[0]


def _train_args(root, teacher, tmp_path):
    return [
        "+experiment=synthetic_k4",
        "model=animator_micro",
        "data.resolution=32",
        "data.num_frames=4",
        "data.face_size=16",
        "data.num_workers=0",
        f"data.root={root}",
        f"method.teacher={teacher}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.max_steps=1",
    ]


def _one_message(capsys, command: str, *expected: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if f"dancelcm.{command}: error:" in line]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.loss.motion_weight=-1", "method.loss.motion_weight=-1: must be >= 0"),  # a negative weight
        ("method.segments.num_segments=3", "method.segments="),  # K does not divide N
        ("method.teacher=/nowhere/teacher", "method.teacher=/nowhere/teacher: no such folder"),  # missing teacher
        ("data.num_frames=20", "no usable video"),  # unusable data: every video is shorter than the clip
        ("data.root=/nowhere/data", "data.root=/nowhere/data"),  # a missing data folder
    ],
)
def test_train_mistakes_are_one_message_and_exit_2(
    override, expected, synthetic_root, micro_teacher, tmp_path, monkeypatch, capsys
):
    args = [
        a for a in _train_args(synthetic_root, micro_teacher, tmp_path) if a.split("=")[0] != override.split("=")[0]
    ]
    assert _main(monkeypatch, "train", [*args, override]) == 2
    _one_message(capsys, "train", expected)


def test_an_unknown_experiment_exits_2_with_the_available_ones(monkeypatch, capsys):
    assert _main(monkeypatch, "train", ["+experiment=tiktok_k5"]) == 2
    err = capsys.readouterr().err
    assert "Could not find 'experiment/tiktok_k5'" in err and "tiktok_k4" in err and "Traceback" not in err


def test_other_commands_name_the_option(micro_teacher, tmp_path, monkeypatch, capsys):
    assert _main(monkeypatch, "evaluate", ["teacher=/nowhere/t", f"out_dir={tmp_path / 'e'}"]) == 2
    _one_message(capsys, "evaluate", "teacher=/nowhere/t: no such folder")
    args = [f"model_dir={micro_teacher}", f"reference={tmp_path / 'missing.png'}", f"pose={tmp_path}", "out=x.mp4"]
    assert _main(monkeypatch, "animate", args) == 2
    _one_message(capsys, "animate", "reference=")
    assert _main(monkeypatch, "tools.half", ["src=/nowhere", f"dst={tmp_path / 'half'}"]) == 2
    _one_message(capsys, "tools.half", "/nowhere")
    assert not (tmp_path / "e").exists() and not (tmp_path / "half").exists()


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import dancelcm.report as report

    def broken(cfg):
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setattr(report, "main", report.command("report", broken, report.__doc__))
    code = _main(monkeypatch, "report", ["runs=/tmp"])
    assert code not in (0, 2)
    assert "KeyError" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "option"),
    [
        ("train", "ckpt_path"),
        ("evaluate", "student_steps"),
        ("animate", "model_dir"),
        ("report", "compare"),
        ("tools.probe", "timesteps"),
        ("tools.bench", "bench"),
        ("data.synthesize", "num_videos"),
        ("data.prepare", "source"),
        ("data.benchmark", "workers"),
        ("tools.feature_net", "steps"),
        ("tools.half", "src"),
        ("precompute", "max_sequence_length"),
    ],
)
def test_help_describes_the_command_and_its_own_options(module, option, monkeypatch, capsys):
    assert _main(monkeypatch, module, ["--help"]) == 0
    out = capsys.readouterr().out
    assert f"{option}:" in out and "Options (conf/" in out
    assert ("experiment:" in out) == (module == "train")  # the training groups only where they apply
