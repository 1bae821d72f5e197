"""``--threads`` on every command that runs a model: explicit value, else $OMP_NUM_THREADS, else 1."""

from __future__ import annotations

import pytest
import torch

from infosam.cli import DEFAULT_THREADS, build_parser, main

MODEL_COMMANDS = ("train", "eval", "experiment", "report", "predict", "export", "serve", "demo")


def _subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_has_threads_and_says_why(command):
    help_text = _subparser(command).format_help()
    assert "--threads" in help_text
    assert "OMP_NUM_THREADS" in help_text and "bench_threads.py" in help_text


@pytest.fixture
def seen_threads(monkeypatch):
    """Replace `infosam report`'s work by a probe recording torch's thread count while the command runs."""
    import infosam.cli.report as report_cli

    seen = []
    monkeypatch.setattr(report_cli, "run", lambda args: seen.append(torch.get_num_threads()) or 0)
    return seen


def test_threads_option_wins_over_environment_and_is_restored(seen_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    assert main(["report", "exp", "--threads", "3"]) == 0
    assert seen_threads == [3]
    assert torch.get_num_threads() == before


def test_environment_is_honoured_without_the_option(seen_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert main(["report", "exp"]) == 0
    assert seen_threads == [2]


def test_default_is_one_thread(seen_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert main(["report", "exp"]) == 0
    assert seen_threads == [DEFAULT_THREADS] == [1]


@pytest.mark.parametrize(
    ("argv", "env", "needle"), [(["--threads", "0"], None, "--threads"), ([], "many", "OMP_NUM_THREADS")]
)
def test_bad_thread_counts_are_one_line_errors(seen_threads, monkeypatch, capsys, argv, env, needle):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert main(["report", "exp", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert seen_threads == []
