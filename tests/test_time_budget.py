"""A run fitted to a time budget (planned, recorded, resumed exactly), reports that scale with the data, and the
power-function EMA."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import smoke_config

from tinydiffusion.checkpoint import CHECKPOINTS, latest_checkpoint, load_config, load_weights
from tinydiffusion.errors import UserError
from tinydiffusion.training import EMA, Trainer, train
from tinydiffusion.training.budget import MARGIN, StepPlanner
from tinydiffusion.training.ema import power_ema_exponent
from tinydiffusion.training.trainer import learning_rate


def test_the_planner_times_the_steady_steps_and_fills_the_budget():
    planner = StepPlanner(budget=600.0, start=0.0)  # timed from 30 s to 300 s into the run
    clock, plan, step = 0.0, None, 0
    while plan is None:
        step += 1
        clock += 1.0 if clock < 30 else 0.5  # slow first seconds, then 0.5 s a step
        plan = planner.after_step(step, now=clock)
    assert planner.timed_from >= 30 and clock >= 300 and planner.timed_steps >= 5
    assert plan == step + int((MARGIN * 600.0 - clock) / 0.5)  # the slow start does not count


def test_decay_from_sets_when_the_plan_is_fixed():
    """train.decay_from 0.2: the steps are timed up to a fifth of the budget, and the decay starts there."""
    for share in (0.2, 0.8):
        planner = StepPlanner(budget=600.0, start=0.0, timed_until=share)
        clock, plan, step = 0.0, None, 0
        while plan is None:
            step += 1
            clock += 0.5
            plan = planner.after_step(step, now=clock)
        assert clock == pytest.approx(share * 600.0, abs=0.5)
        assert plan == step + int((MARGIN * 600.0 - clock) / 0.5)


def test_a_busy_spell_in_the_timed_window_does_not_shorten_the_plan():
    """Another program took the CPU for a third of the window: its steps ran four times slower."""
    planner = StepPlanner(budget=1800.0, start=0.0)  # timed from 90 s to 900 s into the run
    clock, plan, step = 0.0, None, 0
    while plan is None:
        step += 1
        clock += 2.0 if 100 <= clock < 370 else 0.5
        plan = planner.after_step(step, now=clock)
    assert plan == step + int((MARGIN * 1800.0 - clock) / 0.5)


def test_the_planner_counts_what_reports_cost():
    plain, reporting = StepPlanner(60.0, 0.0), StepPlanner(60.0, 0.0, report_steps_cost=10, report_every=100)
    a = b = None
    step = 0
    while a is None:
        step += 1
        a, b = plain.after_step(step, now=0.25 * step), reporting.after_step(step, now=0.25 * step)
    assert b is not None
    assert (b - step) == pytest.approx((a - step) / 1.1, abs=1)  # each report takes 10 steps' time per 100 steps


def test_a_budget_plans_the_run_records_the_plan_and_decays_the_learning_rate(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.max_seconds": 4, "train.log_every": 1,
                                            "train.min_lr_ratio": 0.1})
    started = time.perf_counter()
    result = train(config, run, progress=False)
    wall = time.perf_counter() - started
    planned = load_config(run / "config.json").train.planned_steps
    assert planned > 20 and result.step == planned and not result.stopped_early
    assert wall < 4 + 3  # the loop ends at the budget; loading and the final checkpoint take a little more
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == planned
    recorded = load_config(run / "config.json")
    assert recorded.train.planned_at >= 10 and last["lr"] < 0.2 * config.train.lr  # held, then decayed to the end
    assert last["lr"] == pytest.approx(learning_rate(recorded, planned - 1, planned))  # the last step's rate


def test_train_decay_from_reaches_the_planner(tiny_data_dir, tmp_path):
    """A run with --train.decay_from 0.2 fixes its plan, and starts its decay, about a fifth of the way in (the
    default 0.5 plans at half way)."""
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.max_seconds": 4,
                                            "train.decay_from": 0.2})
    train(config, tmp_path / "run", progress=False)
    recorded = load_config(tmp_path / "run" / "config.json").train
    assert recorded.planned_steps > 20
    assert 0.1 < recorded.planned_at / recorded.planned_steps < 0.35


@pytest.mark.parametrize("when", ["before-the-plan", "after-the-plan"])
def test_a_planned_run_resumes_bit_identically(tiny_data_dir, tmp_path, when):
    config = smoke_config(tiny_data_dir, **{"train.epochs": 10_000, "train.minutes": 0.05, "train.keep": 1000,
                                            "train.checkpoint_every": 4})
    reference = tmp_path / "reference"
    train(config, reference, progress=False)
    recorded = load_config(reference / "config.json").train
    assert 0 < recorded.planned_at < recorded.planned_steps
    # The plan comes after at least 7 steps (2 untimed, 5 timed), so step 4 is before it; the first checkpoint
    # after it is one from which the planned schedule goes on.
    resume_at = 4 if when == "before-the-plan" else 4 * (recorded.planned_at // 4 + 1)
    assert resume_at < recorded.planned_steps, "the run was too slow to check this"
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    result = train(load_config(copy / "config.json"), copy, resume=True, progress=False,
                   checkpoint=copy / CHECKPOINTS / f"step-{resume_at:08d}")
    assert result.step == recorded.planned_steps
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_weights(latest_checkpoint(reference) / name)
        b = load_weights(latest_checkpoint(copy) / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


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
    assert trainer.ema.weight_at(0) == 1 - min(trainer.config.train.ema_decay, 1 / 10)
    assert trainer.ema.weight_at(10_000) == pytest.approx(1 - trainer.config.train.ema_decay)
