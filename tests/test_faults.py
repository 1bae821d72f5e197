"""Fault injection: what a user does wrong or what goes wrong around a run, and that the library neither serves
stale results nor loses the user's files. Tiny model, real ``train()`` runs of one or two steps, seconds each.

Cache cases (issue 13, point 4): a cache shared by datasets with the same file names, an image replaced in place,
a cache filled under bf16 reused in float32, ``infosam cache clear`` on a folder that also holds the user's files,
and a non-empty folder that is not a cache given as ``cache.dir``. Every case failed before content-keyed caches.

Run cases (issue 13, points 1-3, 5, 6): kill -9 at random points then resume, a damaged newest checkpoint, NaN
losses (diverging lr, an injected NaN), a full disk during a checkpoint, SIGTERM/SIGINT, two processes on one run
folder, failed starts that must leave nothing behind, predictions from an unfinished run. Every case failed before
the guards (infosam.guard, infosam.signals, infosam.lock, the checkpoint manifests of infosam.checkpoints).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file

from infosam import checkpoints, runs
from infosam.cli import main
from infosam.config import load_config
from infosam.data.synthetic import write_synthetic_dataset
from infosam.load import load_run
from infosam.peft import load_peft
from infosam.runtime import reset_accelerate_state
from infosam.train import train
from test_train_resume import _env, _final_weights

# Cached runs store the teacher embeddings as float16; measured on these tiny runs the loss terms then move by
# < 4e-4 relative (tests/test_train_cache.py). Stale embeddings of another image move L_r and L_d by far more than
# this bound (tens of percent here), so the bound separates the two cases.
LOSS_RTOL = 2e-3


def _dataset(root: Path, seed: int) -> Path:
    write_synthetic_dataset(root / "train", 2, domain="target", seed=seed)
    write_synthetic_dataset(root / "test", 2, domain="target", seed=seed, start=100)
    return root


def _run(tmp_path: Path, name: str, data: Path, cache: Path | None, *extra: str) -> list[dict[str, float]]:
    overrides = [
        "model.name=tiny",
        f"data.path={data}",
        "train.batch_size=2",
        "train.epochs=1",
        "train.cpu=true",
        "train.log_every_steps=1",
        "eval.last_epochs=0",
        f"output={tmp_path / 'runs' / name}",
        *extra,
    ]
    if cache is not None:
        overrides += ["cache.enabled=true", f"cache.dir={cache}"]
    # accelerate keeps the first run's mixed precision for the whole process; these runs switch it on purpose.
    reset_accelerate_state()
    run = train(load_config(None, overrides))
    with open(run / "metrics.csv", newline="") as f:
        return [{k: float(row[k]) for k in ("relation", "distill")} for row in csv.DictReader(f)]


def _assert_close(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert len(got) == len(expected) == 1
    for key in ("relation", "distill"):
        assert got[0][key] == pytest.approx(expected[0][key], rel=LOSS_RTOL, abs=1e-6), key


def test_cache_same_file_names_other_content_is_not_served(tmp_path):
    """Two datasets with the same file names share the default cache folder: the second gets its own embeddings."""
    first, second = _dataset(tmp_path / "a", seed=0), _dataset(tmp_path / "b", seed=1)
    assert (first / "train" / "images").iterdir().__next__().name in {
        p.name for p in (second / "train" / "images").iterdir()
    }
    cache = tmp_path / "cache"
    truth = _run(tmp_path, "b-uncached", second, None)
    _run(tmp_path, "a-cached", first, cache)
    _assert_close(_run(tmp_path, "b-cached", second, cache), truth)


def test_cache_image_replaced_in_place_is_not_served(tmp_path):
    data, other = _dataset(tmp_path / "data", seed=0), _dataset(tmp_path / "other", seed=1)
    cache = tmp_path / "cache"
    _run(tmp_path, "before", data, cache)
    for image in (data / "train" / "images").iterdir():  # same names, new pixels
        shutil.copyfile(other / "train" / "images" / image.name, image)
    truth = _run(tmp_path, "after-uncached", data, None)
    _assert_close(_run(tmp_path, "after-cached", data, cache), truth)


def test_cache_filled_under_bf16_is_refused_in_float32_and_back(tmp_path):
    data = _dataset(tmp_path / "data", seed=0)
    cache = tmp_path / "cache"
    # allow_slow_bf16: the point here is the cache's precision check, on any CPU (with or without bf16 instructions)
    bf16 = ("train.precision=bf16", "train.allow_slow_bf16=true")
    _run(tmp_path, "bf16", data, cache, *bf16)
    with pytest.raises(ValueError, match=r"fingerprint\.precision"):
        _run(tmp_path, "fp32", data, cache)
    other = tmp_path / "cache32"
    _run(tmp_path, "fp32-own", data, other)
    with pytest.raises(ValueError, match=r"fingerprint\.precision"):
        _run(tmp_path, "bf16-on-fp32", data, other, *bf16)


def test_cache_clear_leaves_the_users_files(tmp_path, capsys):
    data = _dataset(tmp_path / "data", seed=0)
    cache = tmp_path / "cache"
    _run(tmp_path, "fill", data, cache)
    filled = sorted(p.name for p in cache.iterdir())
    assert "manifest.json" in filled and len(filled) == 3  # manifest + two entries
    mine = {"lora.weight": torch.arange(6.0).reshape(2, 3)}
    save_file(mine, str(cache / "my_trained_weights.safetensors"))
    (cache / "notes.txt").write_text("mine")
    assert main(["cache", "clear", str(cache)]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["my_trained_weights.safetensors", "notes.txt"]
    assert torch.equal(
        load_file(str(cache / "my_trained_weights.safetensors"))["lora.weight"], mine["lora.weight"]
    )
    assert "removed 3 cache files" in capsys.readouterr().out


def test_non_empty_folder_that_is_no_cache_is_refused(tmp_path):
    data = _dataset(tmp_path / "data", seed=0)
    folder = tmp_path / "my-models"
    folder.mkdir()
    save_file({"w": torch.ones(3)}, str(folder / "my_trained_weights.safetensors"))
    with pytest.raises(ValueError, match=r"not empty .*not an infosam cache.*cache\.dir"):
        _run(tmp_path, "run", data, folder)
    assert [p.name for p in folder.iterdir()] == [
        "my_trained_weights.safetensors"
    ]  # nothing written or adopted


# --------------------------------------------------------------------------------------------- runs that go wrong

# The tiny run of these cases: 4 training images, batch 2, 2 epochs = 4 optimizer steps, a checkpoint every step.
STEPS = 4
# `infosam train` in a subprocess with a pause of $STEP_SLEEP seconds inside every step, so that a signal, a kill or
# a second process arrives mid-run however fast the machine. Subprocesses are few: each pays the imports (seconds);
# everything else (resumes, the second process of the lock case) runs in this process, one thread like them.
SLOW_CLI = [
    sys.executable,
    "-c",
    "import os, sys, time; import infosam.train as t; step = t.train_step; pause = float(os.environ['STEP_SLEEP']); "
    "t.train_step = lambda *a, **k: (time.sleep(pause), step(*a, **k))[1]; "
    "from infosam.cli import main; sys.exit(main(sys.argv[1:]))",
]


def _slow(args: list[str], pause: float = 1.0) -> subprocess.Popen:
    env = dict(_env(), STEP_SLEEP=str(pause))
    return subprocess.Popen([*SLOW_CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _tiny_data(root: Path) -> Path:
    write_synthetic_dataset(root / "train", 4, domain="target")
    write_synthetic_dataset(root / "test", 2, domain="target", start=100)
    return root


def _tiny_overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "model.name=tiny",
        "peft.methods=adapter+decoder",
        "peft.options={adapter: {init: torch}}",
        f"data.path={data}",
        "train.batch_size=2",
        "train.epochs=2",
        "train.save_every_steps=1",
        "train.log_every_steps=1",
        "train.cpu=true",
        "eval.last_epochs=0",
        f"output={out}",
        *extra,
    ]


def _cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--no-progress"]
    for item in _tiny_overrides(data, out, *extra):
        args += ["--set", item]
    return args


class _Stop(Exception):
    """Raised by an on_step callback: the run stops as if killed after that step's checkpoint... or before it."""


def _stop_at(step: int):
    def on_step(done: int) -> None:
        if done == step:
            raise _Stop(done)

    return on_step


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread, as in the subprocesses (_env), so runs split across processes compare bitwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(load_config(None, _tiny_overrides(data, out)))
    return _final_weights(out)


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory) -> Path:
    """A run stopped during step 4 of 4: checkpoints step-000002 and step-000003, no final weights."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(_Stop):
        train(load_config(None, _tiny_overrides(data, out)), on_step=_stop_at(STEPS))
    assert _checkpoints(out / "checkpoints") == ["step-000003", "step-000002"]
    return out


def _checkpoints(folder: Path) -> list[str]:
    """Names of the step-* checkpoint folders in ``folder``, newest first."""
    return sorted((p.name for p in folder.glob("step-*") if p.is_dir()), reverse=True)


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _assert_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and len(got) > 0
    for name in got:
        assert torch.equal(got[name], expected[name]), f"{name} differs from the uninterrupted run"


def _resume(run: Path, caplog=None) -> str:
    """Resume the run in this process; returns the log (with ``caplog``)."""
    if caplog is None:
        train(runs.RunDir(run).read_config(), resume=True)
        return ""
    with caplog.at_level(logging.INFO):
        train(runs.RunDir(run).read_config(), resume=True)
    return caplog.text


def _metric_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # inside the tensor data: the header still parses
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        "state-empty",
        "state-truncated",
        "peft-byte-flipped",
        "relation-byte-flipped",
        "relation-torch-file",
        "peft-torch-file",
        "latest-missing",
    ],
)
def test_resume_passes_over_a_damaged_newest_checkpoint(stopped, reference, tmp_path, caplog, damage):
    run = _copy(stopped, tmp_path)
    newest = run / "checkpoints" / "step-000003"
    state = newest / "state.pt"
    if damage == "state-empty":
        state.write_bytes(b"")
    elif damage == "state-truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "peft-byte-flipped":
        _flip_last_byte(newest / "peft.safetensors")
    elif damage == "relation-byte-flipped":
        _flip_last_byte(newest / "relation.safetensors")
    elif damage.endswith(
        "-torch-file"
    ):  # torch.save under the safetensors name, and a manifest that matches it
        name = "relation.safetensors" if damage.startswith("relation") else "peft.safetensors"
        tensors = safetensors_load((newest / name).read_bytes())  # in memory: the file is rewritten below
        torch.save(tensors, newest / name)
        checkpoints.write_manifest(newest)
    else:
        (run / "checkpoints" / "latest").unlink()
    log = _resume(run, caplog)
    if damage == "latest-missing":  # the intact newest one is found without the pointer; nothing restarts
        assert "checkpoints/latest is missing" in log and "from step-000003 (step 3" in log
    else:
        assert "checkpoint step-000003 is damaged" in log and "from step-000002 (step 2" in log
    _assert_equal(_final_weights(run), reference)
    assert _metric_steps(run) == list(range(1, STEPS + 1))


def test_resume_with_every_checkpoint_damaged_says_so_and_deletes_nothing(stopped, tmp_path, capsys):
    run = _copy(stopped, tmp_path)
    for folder in (run / "checkpoints").glob("step-*"):
        (folder / "state.pt").write_bytes(b"")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no intact checkpoint" in err[0] and "state.pt is empty" in err[0]
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002", "step-000003"]


def test_diverging_run_stops_naming_the_step_and_keeps_the_last_finite_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli_args(data, out, "train.lr=1e12")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("infosam train:")]
    assert len(err) == 1 and "non-finite loss" in err[0] and "at step 2" in err[0], err
    assert "The newest checkpoint is the last finite one" in err[0]
    assert not (out / "weights" / "final").exists() and not (out / "summary.json").exists()
    assert _checkpoints(out / "checkpoints") == ["step-000001"]
    checkpoint = runs.RunDir(out).latest_checkpoint()
    tensors = load_file(str(checkpoint / "peft.safetensors"))
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_run_diverging_before_its_first_checkpoint_says_none_was_written(data, tmp_path, monkeypatch, capsys):
    _nan_at_call(monkeypatch, {1})
    out = tmp_path / "run"
    assert main(_cli_args(data, out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("infosam train:")]
    assert len(err) == 1 and "at step 1" in err[0] and "No checkpoint was written" in err[0], err
    assert "newest checkpoint" not in err[0]
    assert _checkpoints(out / "checkpoints") == []


def _nan_at_call(monkeypatch, calls: set[int]) -> None:
    """Make the loss of the given (1-based) batches NaN, as a numerical blow-up would."""
    import infosam.step

    real, count = infosam.step.step_losses, [0]

    def losses(*args, **kwargs):
        count[0] += 1
        terms = real(*args, **kwargs)
        if count[0] in calls:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(infosam.step, "step_losses", losses)


def test_injected_nan_stops_before_the_weights_change(data, tmp_path, monkeypatch):
    _nan_at_call(monkeypatch, {3})
    out = tmp_path / "run"
    with pytest.raises(
        RuntimeError, match=r"non-finite loss \(loss nan\) and gradients .* at step 3; stopped"
    ):
        train(load_config(None, _tiny_overrides(data, out)))
    assert not (out / "weights" / "final").exists() and not (out / "summary.json").exists()
    assert _checkpoints(out / "checkpoints") == ["step-000002", "step-000001"]
    for name in _checkpoints(out / "checkpoints"):
        checkpoints.verify_checkpoint(out / "checkpoints" / name)  # intact and finite


def test_injected_nan_is_skipped_with_nonfinite_skip(data, tmp_path, monkeypatch, caplog):
    _nan_at_call(monkeypatch, {3})
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        train(load_config(None, _tiny_overrides(data, out, "train.nonfinite=skip")))
    assert "non-finite loss (loss nan) and gradients (" in caplog.text
    assert "at step 3: step skipped (1 in a row, 1 in all" in caplog.text
    weights = _final_weights(out)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert (out / "summary.json").is_file()


def test_too_many_skipped_steps_in_a_row_stop(data, tmp_path, monkeypatch):
    _nan_at_call(monkeypatch, {2, 3})
    with pytest.raises(RuntimeError, match=r"2 steps in a row .*nonfinite_max_skips=1"):
        train(
            load_config(
                None,
                _tiny_overrides(
                    data, tmp_path / "run", "train.nonfinite=skip", "train.nonfinite_max_skips=1"
                ),
            )
        )


def test_nonfinite_weights_are_never_written_nor_loaded(tmp_path):
    from infosam.model import build_base
    from infosam.peft import apply_peft, save_peft

    student = build_base("tiny", seed=0)
    spec = apply_peft(student, "decoder")
    run = runs.RunDir(tmp_path / "run")
    with torch.no_grad():
        next(p for p in student.parameters() if p.requires_grad).view(-1)[0] = float("nan")
    with pytest.raises(RuntimeError, match=r"refusing to write weights to .*weights/final"):
        run.save_weights(student, spec)
    assert not (run.path / "weights").exists() or not any((run.path / "weights").iterdir())
    bad = tmp_path / "bad.safetensors"
    save_peft(bad, student, spec)  # the low-level writer, as an older version or another tool would
    with pytest.raises(ValueError, match=r"bad\.safetensors: non-finite values"):
        load_peft(bad, build_base("tiny", seed=0))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(data, reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def disk_fills_at_step_2(step: int) -> None:
        if step == 2:

            def no_space(*args, **kwargs):
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(torch, "save", no_space)

    with pytest.raises(
        RuntimeError, match=r"no space left on .*checkpoints while writing checkpoint step-000002"
    ):
        train(load_config(None, _tiny_overrides(data, out)), on_step=disk_fills_at_step_2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-000001"]
    checkpoints.verify_checkpoint(out / "checkpoints" / "step-000001")
    monkeypatch.undo()  # space freed: the run resumes from the kept checkpoint and ends as if nothing happened
    _resume(out)
    _assert_equal(_final_weights(out), reference)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(data, reference, tmp_path, caplog, sig):
    out = tmp_path / "run"
    proc = _slow(_cli_args(data, out))
    try:
        _wait_for(out / "checkpoints" / "step-000001", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"infosam train: stopped by {sig.name}: checkpoint step-"), last
    assert last.endswith(f"continue with `infosam train --resume {out}`"), last
    written = last.split("checkpoint ")[1].split(" ")[0]
    checkpoints.verify_checkpoint(out / "checkpoints" / written)
    assert not (out / "weights" / "final").exists()
    assert f"from {written}" in _resume(out, caplog)
    _assert_equal(_final_weights(out), reference)


def test_second_process_on_a_run_folder_is_refused_naming_the_holder(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    first = _slow(_cli_args(data, out), pause=5.0)
    try:
        _wait_for(out / "checkpoints" / "step-000001", first)
        # This process is the second one: a resume, and a fresh start told to write into the folder.
        for args in (["train", "--resume", str(out)], [*_cli_args(data, out), "--overwrite"]):
            assert main(args) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert f"run folder {out} is in use by pid {first.pid} on host" in err[-1], err
        assert first.poll() is None, "the first run ended before the second process was refused"
        os.kill(first.pid, signal.SIGKILL)  # a dead holder's lock file must not block the resume
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert f"pid {first.pid}" in (out / ".lock").read_text()
    _resume(out)
    _assert_equal(_final_weights(out), reference)
    assert _metric_steps(out) == list(range(1, STEPS + 1)), "metrics.csv has duplicated or missing steps"


# Seeded, so a failure names a reproducible case: the checkpoint after which to kill, and a delay into the next step.
_RNG = random.Random(13)
KILL_POINTS = [(after, round(_RNG.uniform(0.0, 1.0), 2)) for after in _RNG.sample([1, 2, 3], 2)]


@pytest.mark.parametrize(("after", "delay"), KILL_POINTS)
def test_kill_at_random_points_then_resume_matches_uninterrupted(
    data, reference, tmp_path, caplog, after, delay
):
    out = tmp_path / "run"
    proc = _slow(_cli_args(data, out))
    try:
        _wait_for(out / "checkpoints" / f"step-{after:06d}", proc)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "weights" / "final").exists(), "the run finished before it was killed"
    cut = out / "checkpoints" / f".tmp-step-{after + 1:06d}-{proc.pid}"  # a checkpoint write killed half-way
    cut.mkdir(exist_ok=True)
    (cut / "state.pt").write_bytes(b"PK\x03\x04 half")
    (out / "checkpoints" / "latest").unlink()  # and its pointer lost
    newest = _checkpoints(out / "checkpoints")[0]
    assert f"from {newest}" in _resume(out, caplog)
    _assert_equal(_final_weights(out), reference)
    assert not list((out / "checkpoints").glob(".tmp-*")), "temporaries of the killed write were left"
    assert _metric_steps(out) == list(range(1, STEPS + 1))


def _one_image(root: Path) -> Path:
    write_synthetic_dataset(root / "train", 1, domain="target")
    write_synthetic_dataset(root / "test", 1, domain="target", start=100)
    return root


@pytest.mark.parametrize(
    "case",
    ["bad-peft-option", "missing-checkpoint", "cache-dir-is-a-file", "cache-dir-not-a-cache", "one-image"],
)
def test_failed_start_leaves_nothing_that_blocks_the_corrected_rerun(data, tmp_path, case):
    out = tmp_path / "run"
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "notes.txt").write_text("mine")
    bad = {
        "bad-peft-option": ["peft.methods=lora+decoder", "peft.options={lora: {target_modules: [nope]}}"],
        "missing-checkpoint": [f"model.checkpoint={tmp_path / 'missing.pth'}"],
        "cache-dir-is-a-file": ["cache.enabled=true", f"cache.dir={tmp_path / 'a-file'}"],
        "cache-dir-not-a-cache": ["cache.enabled=true", f"cache.dir={tmp_path / 'a-folder'}"],
        "one-image": [f"data.path={_one_image(tmp_path / 'one')}"],
    }[case]
    with pytest.raises(ValueError):
        train(load_config(None, _tiny_overrides(data, out, "train.epochs=1", *bad)))
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert (tmp_path / "a-file").read_text() == "mine"
    assert [p.name for p in (tmp_path / "a-folder").iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob("*-inputs")), "a refused start left an input cache beside the user's files"
    train(load_config(None, _tiny_overrides(data, out, "train.epochs=1")))  # the corrected rerun, same output
    assert (out / "weights" / "final" / "peft.safetensors").is_file()


def test_unfinished_run_says_which_weights_it_gives_or_refuses(stopped, tmp_path, caplog, capsys):
    from infosam.load import open_model

    with caplog.at_level(logging.WARNING):
        _, model = load_run(stopped)
    assert f"{stopped}: the run did not finish (no weights/final); using checkpoint" in caplog.text
    assert "step-000003 (step 3 of 4)" in caplog.text
    with pytest.raises(runs.UnfinishedRunError, match=r"did not finish .*newest weights are checkpoint"):
        load_run(stopped, require_final=True)
    described = open_model(stopped).description
    assert (
        described["weights"].endswith("step-000003/peft.safetensors") and described["run_finished"] is False
    )

    images = sorted((Path(runs.RunDir(stopped).read_config().data.path) / "test" / "images").iterdir())
    code = main(
        [
            "predict",
            str(stopped),
            str(images[0]),
            "--box",
            "2",
            "2",
            "30",
            "30",
            "--out",
            str(tmp_path / "p"),
            "--require-final",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "did not finish" in err and "--require-final" in err
    assert not (tmp_path / "p").exists()
    out = tmp_path / "student.safetensors"
    assert main(["export", str(stopped), "--format", "infosam", "--out", str(out), "--require-final"]) == 2
    assert "did not finish" in capsys.readouterr().err and not out.exists()
    with caplog.at_level(logging.WARNING):
        assert main(["export", str(stopped), "--format", "infosam", "--out", str(out)]) == 0
    assert "the run did not finish (no weights/final); using checkpoint" in caplog.text and out.is_file()
