"""The run directory: one writer at a time, resumes that say what they do, and files with the user's umask.

A training run holds an flock on RUN/.lock for its life, so a second `train` into the same folder (or a
`--resume` of a run still going) is refused with one sentence naming the holder, and a run killed with
kill -9 leaves no lock behind. `--resume` takes a run directory or one of its checkpoints, refuses flags it
would ignore, and leaves metrics.jsonl with each step logged once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import stat

import pytest
import torch
from conftest import cli, files_of, run_cli, smoke_config, train_args
from test_crash import assert_run_consistent, latest_step, start_cli, training_started, wait_until

from tinydiffusion import checkpoint as ckpt
from tinydiffusion.files import RunInUse, run_lock
from tinydiffusion.training import Trainer, train
from tinydiffusion.training.checkpoints import Checkpoints

# --- helpers ---------------------------------------------------------------------------------


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged_steps(run) -> list[int]:
    """The steps in metrics.jsonl as a killed run left it: its last line may be cut short."""
    steps = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass
    return steps


def in_use(run, pid: int) -> str:
    return (f"{run} is in use by another tinydiffusion process (pid {pid} on host {socket.gethostname()}); "
            "wait for it to finish or stop it first.")


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    """12 steps, a checkpoint every 4 (all kept), a log line every 3: tests copy it."""
    run = tmp_path_factory.mktemp("run-dir") / "run"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 12, "train.checkpoint_every": 4, "train.keep": 10,
                                         "train.log_every": 3}), run, progress=False)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


# --- one writer --------------------------------------------------------------------------------


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_a_second_writer_is_refused_while_the_first_runs_on(tiny_data_dir, tmp_path, capsys):
    """While a training process runs, every way of writing to its folder is refused at once, naming it."""
    run = tmp_path / "run"
    # long enough (about 10 s on a fast core) that it is still running when the last attempt below is made
    first = start_cli(train_args(tiny_data_dir, run, "--max-steps", 600, "--checkpoint-every", 10,
                                 "--train.log_every", 1, "--train.sample_every_epoch", "false"), tmp_path / "log")
    assert wait_until(lambda: training_started(run) and latest_step(run) >= 10, first), \
        (tmp_path / "log" / "stderr").read_text()
    expected = in_use(run, first.pid)
    attempts = {
        "train": train_args(tiny_data_dir, run, "--max-steps", 5),
        "resume": ["train", "--resume", run, "--no-progress"],
        "resume-checkpoint": ["train", "--resume", run / "checkpoints" / "step-00000010", "--no-progress"],
    }
    for name, args in attempts.items():
        code, out, err = cli(capsys, *args)
        assert (code, err) == (2, f"error: {expected}\n"), name
        assert first.poll() is None, "the first run ended before the attempts were made"
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 5})
    for resume in (False, True):  # the API is refused too, before it loads data or reads a checkpoint
        with pytest.raises(RunInUse) as info:
            train(config, run, resume=resume, progress=False)
        assert str(info.value) == expected
    first.send_signal(signal.SIGINT)  # every attempt made: the first ends at its next step, checkpointed
    assert first.wait(timeout=300) == 0, (tmp_path / "log" / "stderr").read_text()
    last = int(assert_run_consistent(run).name.removeprefix("step-"))
    assert 10 <= last <= 600 and [r["step"] for r in records(run)] == list(range(1, last + 1)), \
        "metrics.jsonl was written by two processes"


def test_the_lock_is_taken_before_anything_is_written(tiny_data_dir, tmp_path):
    """A writer that started after the Trainer was built still keeps run() from writing anything."""
    run = tmp_path / "run"
    trainer = Trainer(smoke_config(tiny_data_dir, **{"train.max_steps": 2}), run, progress=False)
    with run_lock(run):
        before = files_of(run)
        with pytest.raises(RunInUse) as info:
            trainer.run()
        assert str(info.value) == in_use(run, os.getpid())
        assert files_of(run) == before
    assert (run / ".lock").read_text() == "", "a lock no process holds still names one"
    assert trainer.run().step == 2  # and once it is free, the run goes ahead


@pytest.mark.slow
def test_kill_9_leaves_no_lock_and_the_resumed_metrics_log_each_step_once(tiny_data_dir, tmp_path, capsys):
    """Killed between checkpoints after logging past the last one, then resumed: metrics.jsonl holds every step
    once, with the losses of a run that was never interrupted."""
    settings = ["--max-steps", 40, "--checkpoint-every", 8, "--train.log_every", 1,
                "--train.sample_every_epoch", "false"]
    reference = start_cli(train_args(tiny_data_dir, tmp_path / "reference", *settings), tmp_path / "log-reference")
    run = tmp_path / "run"
    proc = start_cli(train_args(tiny_data_dir, run, *settings), tmp_path / "log")

    def logged_past_a_checkpoint() -> bool:
        saved = latest_step(run)
        return saved >= 8 and saved + 3 in logged_steps(run)

    assert wait_until(logged_past_a_checkpoint, proc), (tmp_path / "log" / "stderr").read_text()
    proc.kill()
    proc.wait()
    assert (run / ".lock").read_text() == f"pid {proc.pid} on host {socket.gethostname()}\n"  # but not locked
    saved = latest_step(run)
    assert saved < 40 and max(logged_steps(run)) > saved  # steps a resume logs again

    code, out, err = cli(capsys, "train", "--resume", run, "--no-progress")  # in-process: no second start-up
    assert code == 0, err
    assert f"resuming {run} from step {saved} (step-{saved:08d})\n" in out
    assert reference.wait(timeout=300) == 0, (tmp_path / "log-reference" / "stderr").read_text()
    resumed, uninterrupted = records(run), records(tmp_path / "reference")
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == list(range(1, 41))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in uninterrupted]  # resume is bit-exact


# --- what --resume continues, and what it says -------------------------------------------------


@pytest.mark.parametrize("target, extra, said, end", [
    ("{run}", ["--max-steps", "14"],
     ["resuming with train.max_steps = 14 (was 12)", "resuming {run} from step 12 (step-00000012)"], 14),
    ("{run}/checkpoints", ["--run-dir", "{run}"], [], 12),  # finished: said to be complete, nothing done
    ("{run}/checkpoints/step-00000012", [], [], 12),
    ("{run}/checkpoints/step-00000004", [],
     ["resuming {run} from step 4 (step-00000004); it supersedes the later checkpoints step-00000008, "
      "step-00000012 (set aside, deleted at the next checkpoint) and the metrics logged after step 4"], 12),
], ids=["run", "checkpoints-folder", "latest-checkpoint", "older-checkpoint"])
def test_resume_a_run_or_one_of_its_checkpoints(finished_run, run_copy, capsys, target, extra, said, end):
    code, out, err = cli(capsys, "train", "--resume", target.format(run=run_copy), "--no-progress",
                         *[a.format(run=run_copy) for a in extra])
    assert code == 0, err
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("resuming")] == [s.format(run=run_copy) for s in said]
    assert ("is already complete" in out) == (not said)
    assert assert_run_consistent(run_copy).name == f"step-{end:08d}"
    steps = [r["step"] for r in records(run_copy)]
    assert steps == sorted(set(steps)) and steps[-1] == end  # each logged once, in order
    if end == 12:  # the run ends where it ended before, through the same steps, to the same weights and losses
        assert [(r["step"], r["loss"]) for r in records(run_copy)] == \
               [(r["step"], r["loss"]) for r in records(finished_run)]
        for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
            a = finished_run / "checkpoints" / "step-00000012" / name
            assert (run_copy / "checkpoints" / "step-00000012" / name).read_bytes() == a.read_bytes(), name
    if target.endswith("step-00000004"):  # the superseded checkpoints went with the first new save
        names = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
        assert names == ["latest", "step-00000004", "step-00000008", "step-00000012"]


def test_resume_from_an_older_checkpoint_then_crash_resumes_from_it(run_copy, capsys, monkeypatch):
    """Right after choosing an older checkpoint (before a new one is written), the run directory already says
    so: `latest` and `sample --checkpoint RUN` name it, and a plain `--resume RUN` continues from it."""
    class Crash(Exception):
        pass

    real_write = Checkpoints.write_run_files

    def write_then_crash(self, *args, **kwargs):
        real_write(self, *args, **kwargs)
        raise Crash

    monkeypatch.setattr(Checkpoints, "write_run_files", write_then_crash)
    with pytest.raises(Crash):  # a crash just after the run directory was cut back to step 4
        cli(capsys, "train", "--resume", run_copy / "checkpoints" / "step-00000004", "--no-progress")
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(run_copy).name == "step-00000004"
    assert ckpt.resolve_checkpoint(run_copy)[0].parent.name == "step-00000004"
    assert [r["step"] for r in records(run_copy)] == [3]
    code, out, err = cli(capsys, "train", "--resume", run_copy, "--no-progress")
    assert code == 0, err
    assert f"resuming {run_copy} from step 4 (step-00000004)\n" in out


# --- --resume refusals: one sentence, nothing written -------------------------------------------


def _state_with_step(step):
    def damage(checkpoint):
        path = checkpoint / ckpt.STATE_FILE
        state = torch.load(path, weights_only=True)
        buffer = io.BytesIO()
        torch.save({**state, "step": step}, buffer)
        path.write_bytes(buffer.getvalue())
    return damage


def _half_written(checkpoint):
    temporary = checkpoint.parent / ".step-00000016.k3j2"
    shutil.copytree(checkpoint, temporary)
    (temporary / ckpt.INFO_FILE).unlink()


def _copied_out(checkpoint):
    shutil.copytree(checkpoint, checkpoint.parents[2] / "loose")


STATE = "{run}/checkpoints/step-00000012/training_state.pt"
BAD_RESUMES = {  # name -> (damage done to the latest checkpoint, arguments, the error's exact sentence)
    "preset": (None, ["--resume", "{run}", "--preset", "smoke"],
               "--preset does not apply to --resume (a resumed run keeps its saved config); drop it."),
    "other-run-dir": (None, ["--resume", "{run}", "--run-dir", "{run}-2"],
                      "--run-dir {run}-2 is not the run --resume continues ({run}); a resumed run stays in its own "
                      "directory, so drop --run-dir."),
    "net": (None, ["--resume", "{run}", "--net", "dit"], "a resumed run keeps its network; drop --net."),
    "missing-checkpoint": (None, ["--resume", "{run}/checkpoints/step-00000099"],
                           "{run}/checkpoints/step-00000099 is not a checkpoint directory; --resume takes a run "
                           "directory or one of its checkpoints ({run}/checkpoints/step-N)."),
    "half-written-checkpoint": (_half_written, ["--resume", "{run}/checkpoints/.step-00000016.k3j2"],
                                "{run}/checkpoints/.step-00000016.k3j2 is not one of the run's complete "
                                "checkpoints (it has a temporary name or no checkpoint.json); resume the run "
                                "directory {run} to continue from its latest complete checkpoint."),
    "checkpoint-outside-a-run": (_copied_out, ["--resume", "{run}/../loose"],
                                 "{run}/../loose is a checkpoint outside a run directory; --resume takes a run "
                                 "directory or one of its checkpoints (RUN/checkpoints/step-N)."),
    **{f"step-{name}": (_state_with_step(step), ["--resume", "{run}"],
                        f"{STATE} records step {step!r}, not a whole number from 0 to 1,000,000,000,000; "
                        "the file is damaged.")
       for name, step in {"huge": 10**30, "negative": -1, "fraction": 2.5, "bool": True, "text": "7"}.items()},
    "step-of-another-checkpoint": (_state_with_step(8), ["--resume", "{run}"],
                                   f"{STATE} records step 8, but its checkpoint is of step 12; the checkpoint is "
                                   "damaged."),
}


@pytest.mark.parametrize("kind", list(BAD_RESUMES))
def test_bad_resumes_are_one_sentence_and_write_nothing(run_copy, capsys, kind):
    damage, args, sentence = BAD_RESUMES[kind]
    if damage is not None:
        damage(run_copy / "checkpoints" / "step-00000012")
    before = files_of(run_copy.parent)
    code, out, err = cli(capsys, "train", "--no-progress", *[a.format(run=run_copy) for a in args])
    assert (code, err) == (2, f"error: {sentence.format(run=run_copy)}\n")
    assert files_of(run_copy.parent) == before


# --- file modes --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["022", "002"])
def test_files_get_the_users_umask(tiny_data_dir, tmp_path, umask):
    """Checkpoints, `latest`, config.json, metrics.jsonl and the prepared-data cache: files 0666 and folders
    0777 less the umask, as any other file the user makes (tempfile alone would make them private)."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    result = run_cli(train_args(tiny_data_dir, run, "--max-steps", 2), env={"TINYDIFFUSION_CACHE": str(cache)},
                     preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr
    entries = [p for folder in (run, cache) for p in (folder, *folder.rglob("*"))]
    assert {p.relative_to(tmp_path).as_posix() for p in entries} >= {
        "run/config.json", "run/metrics.jsonl", "run/checkpoints/latest", "run/checkpoints/step-00000002",
        "run/checkpoints/step-00000002/model.safetensors", "run/checkpoints/step-00000002/training_state.pt"}
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in entries}
    wanted = {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask for name in modes}
    assert {n: oct(m) for n, m in modes.items()} == {n: oct(m) for n, m in wanted.items()}
