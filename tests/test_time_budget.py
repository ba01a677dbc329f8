"""A run fitted to a time budget (planned, recorded, resumed exactly), reports that scale with the data, and the
power-function EMA."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import time

import numpy as np
import pytest
import torch
from conftest import run_cli, smoke_config, train_args
from test_crash import latest_step, run_to_end, start_cli, wait_until

from tinydiffusion.checkpoint import CHECKPOINTS, latest_checkpoint, load_config, load_weights
from tinydiffusion.config import RunConfig, TrainConfig
from tinydiffusion.errors import UserError
from tinydiffusion.training import EMA, Trainer, train
from tinydiffusion.training.budget import EARLY, LATE, MARGIN, MIN_SLACK, WARMUP_SHARE, Plan, TimeBudget, replanned
from tinydiffusion.training.ema import power_ema_exponent
from tinydiffusion.training.trainer import learning_rate


def simulate(budget: TimeBudget, seconds_per_step, plan: Plan = Plan(), warmup: int = 0, until=None):
    """Steps at the durations `seconds_per_step(clock)` gives, each decision applied as the Trainer applies it,
    until `until(step, plan)` or the plan's end; returns (step, clock, plan, the decisions as (step, plan))."""
    clock, step, decisions = 0.0, 0, []
    budget.begin(0.0)
    while not (until(step, plan) if until else plan.steps and step >= plan.steps):
        step += 1
        clock += seconds_per_step(clock)
        budget.after_step(clock)
        changed = budget.decide(step, plan, warmup, clock)
        if changed is not None:
            plan = changed
            decisions.append((step, plan))
    return step, clock, plan, decisions


def budget_of(seconds: float, **train) -> TimeBudget:
    return TimeBudget(TrainConfig(max_seconds=seconds, **train))


def test_the_budget_times_the_steady_steps_and_fills_the_budget():
    budget = budget_of(600.0)  # timed from 30 s to 300 s into the run
    step, clock, plan, _ = simulate(budget, lambda c: 1.0 if c < 30 else 0.5, until=lambda s, p: p.steps)
    assert len(budget.window) >= 5 and clock >= 300
    assert plan == Plan(steps=step + int((MARGIN * 600.0 - clock) / 0.5), at=step)  # the slow start does not count


def test_decay_from_sets_when_the_plan_is_fixed():
    """train.decay_from 0.2: the steps are timed up to a fifth of the budget, and the decay starts there."""
    for share in (0.2, 0.8):
        step, clock, plan, _ = simulate(budget_of(600.0, decay_from=share), lambda c: 0.5,
                                        until=lambda s, p: p.steps)
        assert clock == pytest.approx(share * 600.0, abs=0.5)
        assert plan.steps == step + int((MARGIN * 600.0 - clock) / 0.5)


def test_a_busy_spell_in_the_timed_window_does_not_shorten_the_plan():
    """Another program took the CPU for a third of the window: its steps ran four times slower."""
    step, clock, plan, _ = simulate(budget_of(1800.0), lambda c: 2.0 if 100 <= c < 370 else 0.5,
                                    until=lambda s, p: p.steps)
    assert plan.steps == step + int((MARGIN * 1800.0 - clock) / 0.5)


def test_the_plan_counts_what_reports_and_the_last_report_cost():
    """Reports between steps take a tenth of a step's time each step, and the last report 20 steps' time: the steps
    planned are those that fit once both are paid for, and the decay's half of the budget is of what is left."""
    reporting = TimeBudget(TrainConfig(max_seconds=60.0), step_factor=1.1, end_steps=20)
    step, clock, plan, _ = simulate(reporting, lambda c: 0.25, until=lambda s, p: p.steps)
    per_step = 0.25 * 1.1
    assert plan.steps - step == math.floor((MARGIN * 60.0 - clock) / per_step - 20)
    assert clock == pytest.approx(0.5 * (60.0 - 20 * per_step), abs=0.25)


def test_a_slower_pace_after_the_plan_re_plans_and_the_run_ends_within_its_budget():
    """The steps run three times slower from 400 s on: the plan shrinks, the decay keeps its place (the learning
    rate moves on without a jump), and the run ends within a few per cent of its budget."""
    budget = budget_of(600.0)
    step, clock, plan, decisions = simulate(budget, lambda c: 0.5 if c < 400 else 1.5)
    assert len(decisions) >= 2 and decisions[1][1].steps < decisions[0][1].steps
    assert clock <= 600.0 * (1 + LATE) and clock >= 600.0 * (1 - EARLY)
    first, (at, second) = decisions[0][1], decisions[1]
    before = learning_rate(RunConfig(train=first.recorded_in(TrainConfig(warmup_steps=5))), at, first.steps)
    after = learning_rate(RunConfig(train=second.recorded_in(TrainConfig(warmup_steps=5))), at, second.steps)
    assert after == pytest.approx(before, rel=0.02)


def test_a_re_plan_that_makes_this_step_the_last_ends_the_decay_on_it():
    """CI's case: 75 steps planned at step 36, the pace slowed, re-planned at step 65 to 66 steps; the last step
    runs at the floor, not at the three-quarters of the decay it had reached."""
    def lr(p: Plan, k: int) -> float:
        return learning_rate(RunConfig(train=p.recorded_in(TrainConfig(min_lr_ratio=0.1, warmup_steps=0))), k, p.steps)

    plan, floor = Plan(steps=75, at=36), 0.1 * TrainConfig().lr
    short = replanned(plan, 65, 66, warmup=0)
    assert lr(short, 65) == pytest.approx(floor) and lr(plan, 65) > 2 * floor
    room = replanned(plan, 50, 66, warmup=0)  # with steps to spare the rate moves on from where it was
    assert lr(room, 50) == pytest.approx(lr(plan, 50), rel=0.03) and lr(room, 65) == pytest.approx(floor)
    assert replanned(plan, 74, 90, warmup=0) == plan  # at the old plan's last step the decay has ended: no longer


def test_a_faster_pace_after_the_plan_lengthens_it():
    step, clock, plan, decisions = simulate(budget_of(600.0), lambda c: 0.5 if c < 400 else 0.25)
    assert decisions[-1][1].steps > decisions[0][1].steps and clock >= 600.0 * (1 - EARLY)


def test_a_resume_has_what_is_left_of_the_budget():
    """A resume before the plan, 100 s of 600 spent: it plans once, from its own clock, for the 500 s left."""
    budget = TimeBudget(TrainConfig(max_seconds=600.0), spent=100.0)
    step, clock, plan, decisions = simulate(budget, lambda c: 0.5)
    assert len(decisions) == 1 and 100.0 + clock == pytest.approx(MARGIN * 600.0, abs=1.0)


def test_a_long_warm_up_is_fitted_inside_the_plan():
    """200 warm-up steps where about 90 fit: the warm-up is cut to a quarter of the steps, once, before the plan."""
    step, clock, plan, decisions = simulate(budget_of(45.0), lambda c: 0.5, warmup=200)
    assert 80 <= plan.steps <= 90 and len(decisions) == 2
    fitted = decisions[0][1]  # fitted once, on the first measured speed, before the plan
    assert fitted.steps == 0 and plan.warmup == fitted.warmup and 0 < fitted.warmup <= WARMUP_SHARE * plan.steps + 1
    lr = [learning_rate(RunConfig(train=plan.recorded_in(TrainConfig(warmup_steps=200, max_seconds=45))), k,
                        plan.steps) for k in range(plan.steps)]
    assert max(lr) == pytest.approx(TrainConfig().lr, rel=0.01) and lr[-1] < 0.2 * TrainConfig().lr


def test_a_budget_spent_ends_the_run():
    budget = budget_of(10.0, max_steps=1000)
    budget.begin(0.0)
    for k in range(1, 30):
        budget.after_step(0.5 * k)
    assert not budget.spent_all(9.0, planned=False) and budget.spent_all(10.0, planned=False)


def test_a_budget_plans_the_run_records_the_plan_and_decays_the_learning_rate(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.max_seconds": 4, "train.log_every": 1,
                                            "train.min_lr_ratio": 0.1})
    started = time.perf_counter()
    result = train(config, run, progress=False)
    wall = time.perf_counter() - started
    planned = load_config(run / "config.json").train.planned_steps
    assert planned > 20 and result.step == planned and not result.stopped_early
    assert result.wall_seconds <= 4 * (1 + LATE) + MIN_SLACK  # the loop, its last checkpoint and report included
    assert wall < 4 + 10  # loading the data and building the network come before the budget's clock
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == planned
    recorded = load_config(run / "config.json")
    assert recorded.train.planned_at >= 10 and last["lr"] < 0.2 * config.train.lr  # held, then decayed to the end
    assert last["lr"] == pytest.approx(learning_rate(recorded, planned - 1, planned))  # the last step's rate


def test_train_decay_from_reaches_the_planner(tiny_data_dir, tmp_path, capsys):
    """A run with --train.decay_from 0.2 fixes its plan, and starts its decay, about a fifth of the way in (the
    default 0.5 plans at half way)."""
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.max_seconds": 4,
                                            "train.decay_from": 0.2})
    train(config, tmp_path / "run", progress=False)
    planned, at = map(int, re.search(r"\nplanned (\d+) steps at step (\d+) ", capsys.readouterr().out).groups())
    assert planned > 20 and 0.1 < at / planned < 0.35


def budget_spent(checkpoint) -> float:
    return torch.load(checkpoint / "training_state.pt", weights_only=True)["budget_spent_s"]


def test_a_run_resumed_after_its_plan_ends_bit_identically(tiny_data_dir, tmp_path):
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.minutes": 0.05, "train.keep": 1000,
                                            "train.checkpoint_every": 4})
    reference = tmp_path / "reference"
    train(config, reference, progress=False)
    end = load_config(reference / "config.json").train.planned_steps
    # The last checkpoint at most 6 steps before the end: the resumed run cannot re-plan in them (its pace is
    # timed from its third step on, over five), so it must go on exactly as the uninterrupted run did.
    resume_at = 4 * ((end - 1) // 4)
    checkpoint = reference / CHECKPOINTS / f"step-{resume_at:08d}"
    assert load_config(checkpoint / "config.json").train.planned_steps == end, "the run was too slow to check this"
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    result = train(load_config(copy / "config.json"), copy, resume=True, progress=False,
                   checkpoint=copy / CHECKPOINTS / f"step-{resume_at:08d}")
    assert result.step == end and result.ended_by == "steps"
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_weights(latest_checkpoint(reference) / name)
        b = load_weights(latest_checkpoint(copy) / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert load_config(copy / "config.json") == load_config(reference / "config.json")


def test_a_run_resumed_before_its_plan_plans_once_for_what_is_left(tiny_data_dir, tmp_path, capsys):
    """Even from a run directory whose config.json holds a plan made after that checkpoint (a kill -9 between the
    plan and the next checkpoint), the resume plans once, from its checkpoint, within the run's one budget."""
    seconds = 4.0
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.max_seconds": seconds, "train.keep": 1000,
                                            "train.checkpoint_every": 4, "train.decay_from": 0.8})
    reference = tmp_path / "reference"
    train(config, reference, progress=False)
    early = reference / CHECKPOINTS / "step-00000004"
    assert not load_config(early / "config.json").train.planned_steps
    capsys.readouterr()
    result = train(load_config(reference / "config.json"), reference, resume=True, progress=False, checkpoint=early)
    out = capsys.readouterr().out
    assert out.count("\nplanned ") == 1 and "re-planned" not in out and result.ended_by == "steps", out
    recorded = load_config(reference / "config.json").train  # every command reads the run: its config is valid
    assert 4 < recorded.planned_at < recorded.planned_steps == result.step
    spent = budget_spent(latest_checkpoint(reference))
    assert budget_spent(early) + result.wall_seconds == pytest.approx(spent, abs=0.5)
    assert seconds * (1 - EARLY) - 1 <= spent <= seconds * (1 + LATE) + MIN_SLACK  # the one budget, not a fresh one


def test_the_time_budget_is_a_limit_however_slow_the_steps_get(tiny_data_dir, tmp_path):
    """After the plan every step takes 50 ms longer: the run re-plans and ends within its budget (a second's slack
    for short budgets), its last grid and checkpoint included."""
    seconds = 6.0
    config = smoke_config(tiny_data_dir, grids=True, **{"train.epochs": 10_000, "train.max_seconds": seconds,
                                                        "train.decay_from": 0.3})
    run, planned = tmp_path / "run", []

    def slow_after_the_plan(step, batch):
        if load_plan(run):
            planned.append(step)
            time.sleep(0.05)
        return batch

    def load_plan(run_dir):
        return planned or load_config(run_dir / "config.json").train.planned_steps

    trainer = Trainer(config, run, progress=False, on_batch=slow_after_the_plan)
    result = trainer.run()
    assert planned and result.ended_by == "steps"
    recorded = load_config(run / "config.json").train
    assert recorded.planned_steps == result.step and recorded.planned_at > planned[0]  # re-planned, shorter
    assert result.wall_seconds <= seconds + max(LATE * seconds, MIN_SLACK) + 0.5, result.wall_seconds


def test_a_budget_that_cuts_max_steps_short_says_so_and_its_resume_has_no_time_left(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    done = run_cli(train_args(tiny_data_dir, run, "--max-steps", "100000", "--train.max_seconds", "2"))
    assert done.returncode == 0, done.stderr
    assert "the time budget of 2 s ended the run at step" in done.stdout
    assert "before train.max_steps (100,000)" in done.stdout
    done = run_cli(["train", "--resume", run, "--no-progress"])
    assert done.returncode == 0 and "already complete: its time budget of 2 s is spent" in done.stdout, done
    done = run_cli(["train", "--resume", run, "--no-progress", "--train.max_seconds", "3"])
    assert done.returncode == 0 and "the time budget of 3 s ended the run" in done.stdout, done


def test_a_budgeted_run_interrupted_before_and_killed_after_its_plan_resumes_usable(tiny_data_dir, tmp_path):
    """The issue's example: Ctrl-C before the plan, the resume the message suggests, kill -9 after its plan, and a
    second resume: each ends within the budget and its plan, and sample reads the run."""
    run = tmp_path / "run"
    args = train_args(tiny_data_dir, run, "--train.epochs", "10000", "--train.max_seconds", "8",
                      "--train.decay_from", "0.8", "--checkpoint-every", "5")
    proc = start_cli(args, tmp_path / "first")
    wait_until(lambda: latest_step(run) >= 10, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not load_config(run / "config.json").train.planned_steps
    proc = start_cli(["train", "--resume", run, "--no-progress"], tmp_path / "second")
    wait_until(lambda: load_config(run / "config.json").train.planned_steps and latest_step(run) >
               load_config(run / "config.json").train.planned_at, proc)
    proc.kill()
    proc.wait(timeout=60)
    code, out, err = run_to_end(["train", "--resume", run, "--no-progress"], tmp_path / "third")
    assert code == 0 and "\nplanned " not in out, out + err
    recorded = load_config(run / "config.json").train
    assert latest_step(run) == recorded.planned_steps
    assert budget_spent(latest_checkpoint(run)) <= 8 * (1 + LATE) + MIN_SLACK
    done = run_cli(["sample", "--checkpoint", run, "--num", "2", "--out", tmp_path / "s.png"])
    assert done.returncode == 0, done.stderr


def test_reports_of_a_small_dataset_are_grouped_and_the_last_step_reports(tiny_data_dir, tmp_path):
    # 256 images in batches of 16: 16-step epochs. A smoke grid (4 images, 5 steps, guidance) costs about 0.8
    # steps, so keeping grids to 5% of the time groups two epochs per report; the run's last step reports too.
    run = tmp_path / "run"
    train(smoke_config(tiny_data_dir, **{"train.epochs": 5, "train.sample_every_epoch": True, "train.keep": 10}), run,
          progress=False)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-002.png", "epoch-004.png", "epoch-005.png"]
    assert sorted(p.name for p in (run / CHECKPOINTS).iterdir() if p.name.startswith("step-")) == [
        "step-00000032", "step-00000064", "step-00000080"]


def test_sample_every_sets_the_report_interval_in_steps(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 25, "train.sample_every": 10,
                                         "train.sample_every_epoch": True, "train.keep": 10}), run, progress=False)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000010.png", "step-00000020.png",
                                                                   "step-00000025.png"]


@pytest.mark.parametrize("overrides, message", [
    ({"train.minutes": 1, "train.max_seconds": 30}, "set the time budget once"),
    ({"train.minutes": -1}, "train.max_seconds and train.minutes must be 0"),
    ({"train.ema_std": 0.5}, "train.ema_std must be 0 (off) or between"),
    ({"train.planned_steps": 2264, "train.planned_at": 2678}, "time-budget plan (train.planned_steps 2264"),
])
def test_budget_and_ema_settings_are_checked(tiny_data_dir, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        smoke_config(tiny_data_dir, **overrides).validate()


@pytest.mark.parametrize("std", [0.05, 0.1, 0.2])
def test_the_power_ema_is_the_closed_form_average_of_the_steps(std):
    """After steps 0..K of weights theta_k, the power EMA is sum_k theta_k ((k+1)^(g+1) - k^(g+1)) / (K+1)^(g+1)
    (the product of the betas telescopes), and its width relative to the run's length is std."""
    gamma = power_ema_exponent(std)
    net = torch.nn.Linear(1, 1, bias=False)
    ema, steps = EMA(net, 0.999, std), 400
    thetas = np.random.default_rng(0).normal(size=steps)
    for k, theta in enumerate(thetas):
        net.weight.data.fill_(float(theta))
        ema.update(net, ema.weight_at(k))
    k = np.arange(steps, dtype=np.float64)
    weights = ((k + 1) ** (gamma + 1) - k ** (gamma + 1)) / steps ** (gamma + 1)
    assert ema.net.weight.item() == pytest.approx(float(weights @ thetas), abs=1e-5)
    position = (k + 1) / steps  # where each step lies in the run, 0 to 1
    mean = weights @ position
    assert np.sqrt(weights @ (position - mean) ** 2) == pytest.approx(std, rel=0.02)


def test_an_exponential_ema_is_unchanged_by_the_new_setting(tiny_data_dir, tmp_path):
    trainer = Trainer(smoke_config(tiny_data_dir), tmp_path / "run", progress=False)
    assert trainer.state.ema.weight_at(0) == 1 - min(trainer.state.config.train.ema_decay, 1 / 10)
    assert trainer.state.ema.weight_at(10_000) == pytest.approx(1 - trainer.state.config.train.ema_decay)
