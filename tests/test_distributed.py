"""torchrun on CPU (gloo): two processes take the same steps as one, and their run is an ordinary run.

Each test starts real processes with `python -m torch.distributed.run --standalone`, which picks a
free port, so these tests may run in parallel with each other and with other jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import final_weights

from tinydiffusion.checkpoint import EMA_FILE, MODEL_FILE, latest_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

# 256 images / 64 = 4 steps an epoch: 6 steps cross an epoch end (checkpoint + sample grid on rank 0
# while rank 1 goes on) and, with --checkpoint-every 3, a mid-epoch checkpoint; both use a barrier.
TRAIN_ARGS = ["--preset", "smoke", "--max-steps", "6", "--batch-size", "64", "--seed", "3",
              "--checkpoint-every", "3", "--train.log_every", "1", "--train.threads", "1",
              "--device", "cpu", "--train.precision", "fp32", "--no-progress"]


def env(**extra: str) -> dict[str, str]:
    """One thread per process, and nothing left over from an outer torchrun."""
    cleaned = {k: v for k, v in os.environ.items()
               if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(cleaned, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def command(args: list, nproc: int = 1, program: tuple[str, ...] = ("-m", "tinydiffusion")) -> list[str]:
    """`tinydiffusion ARGS` in one process, or under torchrun in `nproc` processes on this machine."""
    launcher = [sys.executable, *program]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    *program]
    return [*launcher, *map(str, args)]


def run(args: list, nproc: int = 1, timeout: float = 120, program: tuple[str, ...] = ("-m", "tinydiffusion"),
        **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(args, nproc, program), env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory) -> dict:
    """The same 6 steps with a global batch of 64: once in two processes, once in one."""
    root = tmp_path_factory.mktemp("distributed")
    two, one = root / "two", root / "one"
    two_result = run(["train", "--data-dir", tiny_data_dir, "--run-dir", two, *TRAIN_ARGS], nproc=2)
    assert_ok(two_result)
    assert_ok(run(["train", "--data-dir", tiny_data_dir, "--run-dir", one, *TRAIN_ARGS]))
    return {"two": two, "one": one, "two_result": two_result, "root": root}


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_two_processes_take_the_steps_of_one(runs):
    two, one = final_weights(runs["two"]), final_weights(runs["one"])
    for name in (MODEL_FILE, EMA_FILE):
        assert two[name].keys() == one[name].keys()
        for key in one[name]:
            torch.testing.assert_close(two[name][key], one[name][key], atol=1e-5, rtol=1e-4, msg=f"{name} {key}")
    # The logged loss is the global batch's, not rank 0's half of it.
    two_losses = [m["loss"] for m in metrics(runs["two"])]
    one_losses = [m["loss"] for m in metrics(runs["one"])]
    assert two_losses == pytest.approx(one_losses, rel=1e-5)


@pytest.mark.slow  # its fixture (two training runs, about 25 s) is the slow tests'
def test_only_rank_zero_writes_and_reports(runs):
    run_dir, result = runs["two"], runs["two_result"]
    assert [p.relative_to(run_dir) for p in run_dir.rglob("metrics.jsonl")] == [Path("metrics.jsonl")]
    assert [m["step"] for m in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert result.stdout.count("training smoke:") == 1, result.stdout
    assert "x 2 processes" in result.stdout
    assert result.stdout.count("done: step 6") == 1, result.stdout
    # 4-step epochs: reports come at least 10 steps apart, so the one grid is the last step's
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step-00000006.png"]
    assert latest_checkpoint(run_dir).name == "step-00000006"
    assert not list((run_dir / "checkpoints").glob(".*")), "a temporary checkpoint directory was left behind"


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_a_two_process_checkpoint_resumes_and_samples_in_one_process(runs, tmp_path):
    # Resuming the two-process run in one process continues exactly as the one-process run does.
    copies = {name: shutil.copytree(runs[name], tmp_path / name) for name in ("two", "one")}
    for run_dir in copies.values():
        resumed = run(["train", "--resume", run_dir, "--max-steps", "10", "--train.threads", "1", "--no-progress"])
        assert_ok(resumed)
        assert "resuming" in resumed.stdout and "from step 6" in resumed.stdout
        assert latest_checkpoint(run_dir).name == "step-00000010"
    assert [m["step"] for m in metrics(copies["two"])] == list(range(1, 11))
    two, one = final_weights(copies["two"]), final_weights(copies["one"])
    for key in one[MODEL_FILE]:
        torch.testing.assert_close(two[MODEL_FILE][key], one[MODEL_FILE][key], atol=1e-5, rtol=1e-4, msg=key)

    out = tmp_path / "x.png"
    sampled = run(["sample", "--checkpoint", runs["two"], "--num", "2", "--steps", "2", "--device", "cpu",
                   "--out", out])
    assert_ok(sampled)
    assert out.stat().st_size > 0


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_distillation_in_two_processes_takes_the_steps_of_one(runs, tiny_data_dir, tmp_path):
    """The student's loop is the Trainer's: under torchrun each process walks the teacher for its slice of the
    global batch, and the two processes' student equals one process's."""
    args = ["distill", "--teacher", runs["one"], "--steps", "2", "--distill.teacher_steps", "4", "--data-dir",
            tiny_data_dir, "--max-steps", "3", "--batch-size", "16", "--device", "cpu", "--train.threads", "1",
            "--train.sample_every_epoch", "false", "--no-progress"]
    assert_ok(run([*args, "--run-dir", tmp_path / "two"], nproc=2))
    assert_ok(run([*args, "--run-dir", tmp_path / "one"]))
    two, one = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    for key in one[MODEL_FILE]:
        torch.testing.assert_close(two[MODEL_FILE][key], one[MODEL_FILE][key], atol=1e-5, rtol=1e-4, msg=key)
    assert [m["step"] for m in metrics(tmp_path / "two")] == [3]


def test_a_failing_rank_ends_the_job_promptly(tiny_data_dir, tmp_path):
    started = time.monotonic()
    worker = Path(__file__).with_name("failing_rank_worker.py")  # the command line, with rank 1 failing at step 2
    result = run(["train", "--data-dir", tiny_data_dir, "--run-dir", tmp_path / "run", *TRAIN_ARGS], nproc=2,
                 program=(str(worker),), FAIL_RANK="1", FAIL_STEP="2")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end after rank 1 failed"
    assert "RuntimeError: injected failure on rank 1 at step 2" in result.stderr, result.stderr[-3000:]
    assert "done:" not in result.stdout


def test_a_global_batch_that_does_not_divide_is_refused(tiny_data_dir, tmp_path):
    result = run(["train", "--data-dir", tiny_data_dir, "--run-dir", tmp_path / "run", *TRAIN_ARGS,
                  "--batch-size", "15"], nproc=2)
    assert result.returncode != 0
    assert "the global batch size 15 must divide evenly over 2 processes" in result.stderr, result.stderr[-3000:]
    assert not re.search(r"\[rank\d+\]: Traceback", result.stderr)  # a sentence, not a traceback from a worker


def test_a_signal_delivered_twice_at_once_is_one_stop_request():
    # Under SLURM a worker gets SIGTERM from the scheduler and again from torchrun; that must still
    # finish the step and checkpoint, not exit at once as a deliberate second Ctrl-C does.
    code = ("import os, signal\nfrom tinydiffusion.training import StopRequest\nwith StopRequest() as stop:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    print('requested', stop.requested)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert_ok(result)
    assert "requested True" in result.stdout


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(), reason="needs Linux /proc")
def test_sigterm_to_every_process_stops_all_ranks_at_one_checkpointed_step(tiny_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--data-dir", tiny_data_dir, "--run-dir", run_dir, *TRAIN_ARGS, "--max-steps", "100000"]
    with subprocess.Popen(command(args, nproc=2), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as job:
        deadline = time.monotonic() + 60
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        workers = Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()
        assert len(workers) == 2
        for pid in [*map(int, workers), job.pid]:  # as slurmstepd does: every process of the step
            os.kill(pid, signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=60)
    assert "stopped at step" in stdout, stdout + stderr[-3000:]
    step = int(stdout.split("stopped at step ")[1].split(";")[0])
    assert latest_checkpoint(run_dir).name == f"step-{step:08d}"
    assert f"done: step {step}," in stdout  # rank 0 finished normally (torchrun itself exits 1 on a signal)


def test_a_process_group_that_does_not_close_is_left_behind(monkeypatch, capsys):
    """Closing a process group can hang (pytorch/pytorch#75097): the process goes on after the timeout, and says
    so, instead of waiting forever at the end of a finished run."""
    from tinydiffusion.training.distributed import leave_distributed

    closing = threading.Event()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: (closing.set(), time.sleep(3600)))
    started = time.perf_counter()
    leave_distributed(timeout_s=0.5)
    assert closing.is_set() and time.perf_counter() - started < 30
    assert "did not close in 0.5 s" in capsys.readouterr().err
