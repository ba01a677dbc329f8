"""Crash-safe training: signals, kill -9 at random moments, a full disk, a non-finite loss, --keep.

The subprocess tests run the real command line (one CPU thread each); the rest call `train` in-process.
After every crash the latest checkpoint must load, no file under a real name may be half written, and a
resumed run must end bit-identical to one that was never interrupted.
"""

from __future__ import annotations

import errno
import json
import math
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_env, default_sigint, files_of, poison_loss, smoke_config, train_args
from PIL import Image
from safetensors.torch import load_file

from tinydiffusion import checkpoint as ckpt
from tinydiffusion.config import RunConfig, apply_overrides
from tinydiffusion.errors import UserError
from tinydiffusion.training import train

# --- helpers ---------------------------------------------------------------------------------


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_processes():
    """A failed assertion must not leave a 2000-step training running in the background."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_cli(args, log_dir: Path, python_prefix: tuple[str, ...] = ("-m", "tinydiffusion")) -> subprocess.Popen:
    """Start `python -m tinydiffusion ARGS` in the background, stdout and stderr going to files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = open(log_dir / "stdout", "w"), open(log_dir / "stderr", "w")
    with stdout, stderr:
        proc = subprocess.Popen([sys.executable, *python_prefix, *map(str, args)], env=cli_env(),
                                stdout=stdout, stderr=stderr, preexec_fn=default_sigint)  # the tests send SIGINT
    _started.append(proc)
    return proc


def run_to_end(args, log_dir: Path, python_prefix: tuple[str, ...] = ("-m", "tinydiffusion")) -> tuple[int, str, str]:
    proc = start_cli(args, log_dir, python_prefix)
    code = proc.wait(timeout=300)
    return code, (log_dir / "stdout").read_text(), (log_dir / "stderr").read_text()


def wait_until(condition, proc: subprocess.Popen, timeout: float = 120, interval: float = 0.005) -> bool:
    """Poll `condition` until it holds (True) or the process has exited (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return bool(condition())
        time.sleep(interval)
    proc.kill()
    raise AssertionError("timed out waiting for the training process")


def latest_step(run: Path) -> int:
    try:
        return int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step-"))
    except (OSError, ValueError):
        return -1


def training_started(run: Path) -> bool:
    metrics = run / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def assert_run_consistent(run: Path) -> Path:
    """Everything under a real name is complete; the latest checkpoint loads; returns it."""
    json.loads((run / "config.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    for png in (run / "samples").glob("*.png"):
        with Image.open(png) as image:
            image.load()
    root = run / ckpt.CHECKPOINTS
    pointer = (root / ckpt.LATEST).read_text().strip()
    assert (root / pointer).is_dir(), f"`latest` names {pointer}, which is not there"
    for entry in root.iterdir():
        if entry.name.startswith("."):  # temporaries of an interrupted write; pruned by the next save
            continue
        if entry.name == ckpt.LATEST:
            continue
        names = {p.name for p in entry.iterdir()}
        assert names == {ckpt.MODEL_FILE, ckpt.EMA_FILE, ckpt.CONFIG_FILE, ckpt.STATE_FILE, ckpt.INFO_FILE}, names
        ckpt.load_weights(entry / ckpt.MODEL_FILE)
        ckpt.load_weights(entry / ckpt.EMA_FILE)
        RunConfig.from_json_file(entry / ckpt.CONFIG_FILE)
        state = ckpt.load_training_state(entry)
        assert entry.name == f"step-{state['step']:08d}"
    found = ckpt.latest_checkpoint(run)
    assert found is not None and found.name == pointer
    return found


# --- signals ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_the_step_checkpoints_and_exits_0(tiny_data_dir, tmp_path, signum):
    run = tmp_path / "run"
    proc = start_cli(train_args(tiny_data_dir, run, "--max-steps", 2000, "--checkpoint-every", 0,
                                "--train.sample_every_epoch", "false"), tmp_path / "log")
    assert wait_until(lambda: training_started(run), proc), (tmp_path / "log" / "stderr").read_text()
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 0, (tmp_path / "log" / "stderr").read_text()
    stdout = (tmp_path / "log" / "stdout").read_text()
    assert "--resume" in stdout
    found = assert_run_consistent(run)
    step = ckpt.load_training_state(found)["step"]
    assert 5 <= step < 2000
    assert f"stopped at step {step}" in stdout
    assert "Traceback" not in (tmp_path / "log" / "stderr").read_text()


@pytest.mark.slow
def test_second_signal_exits_at_once(tiny_data_dir, tmp_path):
    """The second signal (a second or more after the first) ends the process without finishing its work.

    The first signal lands while the epoch-end sample grid is being drawn (made long here); a graceful stop
    would finish the grid first, so an exit before the grid is written shows the second signal cut it short.
    """
    run = tmp_path / "run"
    proc = start_cli(train_args(tiny_data_dir, run, "--max-steps", 2000, "--checkpoint-every", 0,
                                "--train.sample_num", 1000, "--train.sample_steps", 100, "--train.sample_every", 16),
                     tmp_path / "log")
    assert wait_until(lambda: latest_step(run) == 16, proc)  # the epoch-1 checkpoint: the grid comes next
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)  # a repeat within a second counts as the same request (SLURM and torchrun send two)
    assert proc.poll() is None, "the first signal alone ended the run"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    assert code == 128 + signal.SIGINT
    assert time.monotonic() - sent < 10
    assert not (run / "samples" / "epoch-001.png").exists(), "the process finished its work after the second signal"
    assert "Continue with" not in (tmp_path / "log" / "stdout").read_text()
    assert assert_run_consistent(run).name == "step-00000016"


# --- kill -9 at random moments ---------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tiny_data_dir, tmp_path):
    """Kill the run (SIGKILL) several times, half of them while a checkpoint is being written."""
    settings = ["--max-steps", 60, "--checkpoint-every", 3]
    reference = tmp_path / "reference"
    uninterrupted = start_cli(train_args(tiny_data_dir, reference, *settings), tmp_path / "log-reference")

    rng = random.Random(20240611)
    run = tmp_path / "run"
    root = run / ckpt.CHECKPOINTS
    resume = ["train", "--resume", run, "--no-progress", "--train.threads", "1"]

    def temporaries() -> set[str]:
        return {p.name for p in root.iterdir() if p.name.startswith(".")} if root.is_dir() else set()

    def writing(names) -> bool:  # a checkpoint being written, not an old one being deleted
        return any(n.startswith(".step-") and not n.endswith(".deleting") for n in names)

    def start_and_kill(target: int, mid_write: bool) -> tuple | None:
        """Run until the latest checkpoint reaches `target`, then kill; None if the run ended first."""
        stale = temporaries()  # left by the previous kill; the next successful save prunes them
        args = resume if (run / "config.json").exists() else train_args(tiny_data_dir, run, *settings)
        proc = start_cli(args, tmp_path / f"log-{len(crash_points)}")
        wait_until(lambda: latest_step(run) >= target, proc)
        if mid_write:  # as soon as a new temporary checkpoint directory appears
            wait_until(lambda: writing(temporaries() - stale), proc, interval=0.001)
        else:  # anywhere: mid-step, mid-checkpoint, mid-prune, mid-log
            time.sleep(rng.uniform(0, 0.4))
        if proc.poll() is not None:
            return None
        proc.kill()
        proc.wait()
        assert_run_consistent(run)
        return target, latest_step(run), sorted(temporaries() - stale)

    crash_points = []
    for i, target in enumerate(sorted(rng.sample(range(6, 55), 4))):
        point = start_and_kill(target, mid_write=i % 2 == 0)
        if point is None:
            break
        crash_points.append(point)
    while not any(writing(left) for *_, left in crash_points) and latest_step(run) < 54:  # a fast disk won
        point = start_and_kill(latest_step(run) + 1, mid_write=True)
        if point is None:
            break
        crash_points.append(point)
    assert len(crash_points) >= 3, crash_points
    assert any(writing(left) for *_, left in crash_points), f"no kill landed mid-write: {crash_points}"

    code, _, stderr = run_to_end(resume, tmp_path / "log-final")
    assert code == 0, stderr
    assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "log-reference" / "stderr").read_text()
    assert assert_run_consistent(run).name == "step-00000060"
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        resumed = (root / "step-00000060" / name).read_bytes()
        assert resumed == (reference / ckpt.CHECKPOINTS / "step-00000060" / name).read_bytes(), name


# --- --keep, --resume without a checkpoint, no duplicate writes -------------------------------


def test_keep_only_the_newest_checkpoints(tiny_data_dir, tmp_path, monkeypatch):
    saved_steps = []
    real_save = ckpt.save_checkpoint

    def counting_save(run_dir, step, *args, **kwargs):
        saved_steps.append(step)
        return real_save(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", counting_save)
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.epochs": 1, "train.checkpoint_every": 5, "train.keep": 3})
    # 16 steps per epoch: checkpoints at 5, 10, 15 and the epoch end (16), which is also the end of the run
    train(config, run, progress=False)
    assert saved_steps == [5, 10, 15, 16], "a step was checkpointed twice"
    root = run / ckpt.CHECKPOINTS
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000010", "step-00000015", "step-00000016"]
    assert (root / "latest").read_text().strip() == "step-00000016"
    assert assert_run_consistent(run) == root / "step-00000016"

    saved_steps.clear()  # resuming a finished run writes nothing new
    train(config, run, resume=True, progress=False)
    assert saved_steps == []
    train(apply_overrides(config, {"train.epochs": 2, "train.keep": 1}), run, resume=True, progress=False)
    assert saved_steps == [20, 25, 30, 32]
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000032"]


def test_resume_of_a_run_that_crashed_before_its_first_checkpoint(tiny_data_dir, tmp_path, capsys):
    """No dead end: the plain command points at --resume, which starts the run afresh from step 0 with its
    saved config; the failed attempt's metrics and half-written checkpoint are superseded."""
    from tinydiffusion.cli import main

    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 3, "train.log_every": 1})
    run.mkdir()
    (run / "config.json").write_text(config.to_json())
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n{"step": 6, "lo')  # cut short by the crash
    half_written = run / "checkpoints" / ".step-00000006.k3j2"  # what a kill during the first save leaves
    half_written.mkdir(parents=True)
    (half_written / ckpt.MODEL_FILE).write_bytes(b"\x10\x00")
    before = files_of(run)
    assert main([str(a) for a in train_args(tiny_data_dir, run)]) == 2
    assert capsys.readouterr().err == (f"error: {run} already holds a run; continue it with --resume {run} "
                                       "or choose another --run-dir.\n")
    assert files_of(run) == before
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert f"{run} has no checkpoint yet; starting it afresh from step 0.\n" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert assert_run_consistent(run).name == "step-00000003"
    assert not half_written.exists()


# --- a non-finite loss -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_data_dir, tmp_path, monkeypatch,
                                                                            value):
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 10, "train.checkpoint_every": 3})
    poison_loss(monkeypatch, {7}, value)  # call 7, the 8th step, reported as step 7; the last checkpoint is step 6
    before = None
    real_save = ckpt.save_checkpoint

    def remember(*args, **kwargs):
        nonlocal before
        path = real_save(*args, **kwargs)
        before = files_of(path)
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", remember)
    with pytest.raises(UserError, match=r"step 7\b") as info:
        train(config, run, progress=False)
    message = str(info.value)
    assert "step-00000006" in message and "on_nan skip" in message
    found = assert_run_consistent(run)
    assert found.name == "step-00000006"
    assert files_of(found) == before
    weights = ckpt.load_weights(found / ckpt.MODEL_FILE)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_loss_before_any_checkpoint_says_so(tiny_data_dir, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {0})
    with pytest.raises(UserError, match="step 0.*no checkpoint"):
        train(smoke_config(tiny_data_dir, **{"train.max_steps": 4}), tmp_path / "run", progress=False)


def test_non_finite_loss_skipped_and_counted(tiny_data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 12, "train.on_nan": "skip", "train.log_every": 4})
    poison_loss(monkeypatch, {2, 5, 6})
    result = train(config, run, progress=False)
    assert result.step == 12
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [1, 3, 3]
    assert all(math.isfinite(r["loss"]) for r in records), "a skipped loss leaked into the logged mean"
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        weights = load_file(str(run / "checkpoints" / "step-00000012" / name))
        assert all(torch.isfinite(w).all() for w in weights.values()), name


# --- a full disk ------------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing", ["safetensors", "torch.save", "file-size-limit"])
def test_full_disk_keeps_the_previous_checkpoint(tiny_data_dir, tmp_path, monkeypatch, failing):
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 3})
    train(config, run, progress=False)
    previous = assert_run_consistent(run)
    before = files_of(run / ckpt.CHECKPOINTS)

    more = smoke_config(tiny_data_dir, **{"train.max_steps": 6})
    if failing == "safetensors":
        monkeypatch.setattr(ckpt, "save_file", _enospc)
    elif failing == "torch.save":
        monkeypatch.setattr(ckpt.torch, "save", _enospc)
    if failing == "file-size-limit":
        # The real thing: writes past 100 kB fail with EFBIG inside safetensors' Rust code and torch.save's
        # C++ writer (Python ignores SIGXFSZ). Only this process's soft limit changes, and only for the call.
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        try:
            with pytest.raises(UserError) as info:
                train(more, run, resume=True, progress=False)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    else:
        with pytest.raises(UserError) as info:
            train(more, run, resume=True, progress=False)
    message = str(info.value)
    assert "could not write a checkpoint" in message and "untouched" in message, message
    assert "\n" not in message
    if failing != "file-size-limit":
        assert "No space left on device" in message
    assert files_of(run / ckpt.CHECKPOINTS) == before, "the failed save changed the previous checkpoint"
    assert ckpt.latest_checkpoint(run) == previous
    assert not [p for p in (run / ckpt.CHECKPOINTS).iterdir() if p.name.startswith(".")], "temporaries left"


@pytest.mark.slow
def test_full_disk_through_the_cli_is_one_sentence(tiny_data_dir, tmp_path):
    """The same with a real process: exit 2, one `error:` line, the previous checkpoint still `latest`."""
    run = tmp_path / "run"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 3}), run, progress=False)
    before = files_of(run / ckpt.CHECKPOINTS)
    limited = ("-c", "import resource, runpy, sys; hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]; "
                     "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard)); "
                     "sys.argv[0] = 'tinydiffusion'; runpy.run_module('tinydiffusion', run_name='__main__')")
    code, _, stderr = run_to_end(["train", "--resume", run, "--max-steps", 6, "--no-progress"],
                                 tmp_path / "log-full", python_prefix=limited)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write a checkpoint"), stderr
    assert files_of(run / ckpt.CHECKPOINTS) == before
    assert ckpt.latest_checkpoint(run).name == "step-00000003"


def test_unwritable_run_directory_is_a_clear_error(tiny_data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write to the run directory"):
        train(smoke_config(tiny_data_dir, **{"train.max_steps": 2}), blocker / "run", progress=False)


def test_resume_continues_after_a_failed_save(tiny_data_dir, tmp_path, monkeypatch):
    """After the disk is freed, resuming from the kept checkpoint reaches the same weights as a clean run."""
    clean, run = tmp_path / "clean", tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 6, "train.checkpoint_every": 3})
    train(config, clean, progress=False)
    with monkeypatch.context() as patch:
        real_save, calls = ckpt.save_file, []

        def fail_second_checkpoint(*args, **kwargs):
            calls.append(None)
            if len(calls) > 2:  # the first checkpoint writes two safetensors files
                _enospc()
            return real_save(*args, **kwargs)

        patch.setattr(ckpt, "save_file", fail_second_checkpoint)
        with pytest.raises(UserError, match="could not write a checkpoint"):
            train(config, run, progress=False)
    assert ckpt.latest_checkpoint(run).name == "step-00000003"
    train(config, run, resume=True, progress=False)
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        a = (clean / ckpt.CHECKPOINTS / "step-00000006" / name).read_bytes()
        assert a == (run / ckpt.CHECKPOINTS / "step-00000006" / name).read_bytes(), name

