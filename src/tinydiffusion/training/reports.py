"""Reports: every few epochs (or train.sample_every steps) and at the last step, a checkpoint, then the work the
caller asked for on the EMA model. That work is a list of callables, each given a Report; `default_reports` builds
the config's (a sample grid; an FD every train.eval_every epochs), and a caller may pass its own instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..pipeline import Model, generate, sampling_settings
from ..viz import grid_image, save_grid

GRID_SHARE = 0.05  # a report's sample grid takes at most about this share of the training time between reports
MIN_REPORT_STEPS = 10  # and reports (checkpoints) come no closer than this, however short an epoch


@dataclass
class Report:
    step: int
    name: str  # of its files: epoch-NNN where it falls on an epoch's end, else step-NNNNNNNN
    epochs: int  # epochs done
    previous_epochs: int  # epochs done at the previous report, or when this invocation of the run began
    model: Model  # the EMA weights, with the run's config
    log: Callable[[dict], None]  # writes one record of metrics.jsonl


def sampling_cost_in_steps(images: int, steps: int, batch_size: int) -> float:
    """About how many training steps' time sampling takes: images x steps x 2 (guidance) network evaluations, where
    a training step costs about 3 x batch (the forward pass and a backward pass of twice its cost)."""
    return 2 * images * steps / (3 * batch_size)


def grid_cost_in_steps(t) -> float:
    """A report's sample grid, in training steps' time (0 with grids off)."""
    return sampling_cost_in_steps(t.sample_num, t.sample_steps, t.batch_size) if t.sample_every_epoch else 0.0


def report_interval(t, steps_per_epoch: int) -> int:
    """Steps between reports (a checkpoint, a sample grid, an FD): train.sample_every, or whole epochs, as few as
    keep the grids to GRID_SHARE of the time, so a small folder's short epochs do not spend their time on grids."""
    if t.sample_every:
        return t.sample_every
    needed = max(MIN_REPORT_STEPS, grid_cost_in_steps(t) / GRID_SHARE)
    return math.ceil(needed / steps_per_epoch) * steps_per_epoch


def report_cost_in_steps(t, steps_per_epoch: int, report_every: int) -> float:
    """About how many training steps' time one report's sampling takes: its grid, and its share of the FDs
    (eval_num images at 20 steps with guidance, every eval_every epochs)."""
    fd = sampling_cost_in_steps(t.eval_num, 20, t.batch_size) if t.eval_every else 0.0
    reports_per_fd = max(1.0, t.eval_every * steps_per_epoch / report_every)
    return grid_cost_in_steps(t) + fd / reports_per_fd


@dataclass
class SampleGrid:
    """samples/NAME.png (and TensorBoard's image): train.sample_num samples of the EMA model, DDIM at
    train.sample_steps; a student with its own sampler and steps (both at the default guidance)."""
    run_dir: Path
    tensorboard: object = None

    def __call__(self, report: Report) -> None:
        model, t = report.model, report.model.config.train
        sampling = {} if model.config.distill.steps else {"sampler": "ddim",
                                                          "steps": min(t.sample_steps, model.diffusion.num_timesteps)}
        images, _ = generate(model, t.sample_num, seed=t.seed, **sampling)
        save_grid(images, self.run_dir / "samples" / f"{report.name}.png")
        if self.tensorboard is not None:
            self.tensorboard.image("samples", grid_image(images), report.step)


class FDEvaluation:
    """At the report that passes each train.eval_every-th epoch: FD of train.eval_num samples of the EMA model
    (its default sampler, steps and guidance), one line of metrics.jsonl. The data, classifier and reference are
    made ready when it is made, before training starts, so data that cannot be scored is one sentence then."""

    def __init__(self, config: RunConfig, device: torch.device, progress: bool = True):
        from ..evaluation import Evaluator

        self.evaluator, self.device = Evaluator(config.data, progress=progress), device

    def __call__(self, report: Report) -> None:
        model, t = report.model, report.model.config.train
        if report.epochs // t.eval_every <= report.previous_epochs // t.eval_every:
            return
        started = time.perf_counter()
        sampler, steps, guidance = sampling_settings(model)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):  # resumes stay exact
            images, labels = generate(model, t.eval_num, sampler=sampler, steps=steps, guidance=guidance, seed=t.seed)
            result = self.evaluator.score(images, labels)
        scores = {key: result[key] for key in ("fd", "fd_floor", "precision", "recall", "class_accuracy")
                  if key in result}
        report.log({"step": report.step, "epoch": report.epochs, **scores, "eval_num": t.eval_num,
                    "metric": result["metric"], "sampler": f"{sampler}, {steps} steps, guidance {guidance}",
                    "eval_seconds": round(time.perf_counter() - started, 1)})
        print(f"epoch {report.epochs}: {result['metric']} {result['fd']:.3f} at N={t.eval_num} "
              f"(floor {result['fd_floor']:.3f}; small N, for trends only)")


def default_reports(config: RunConfig, run_dir: Path, device: torch.device, tensorboard=None,
                    progress: bool = True) -> list[Callable[[Report], None]]:
    """The config's work at each report: a sample grid (train.sample_every_epoch) and an FD (train.eval_every)."""
    train_cfg, reports = config.train, []
    if train_cfg.sample_every_epoch and train_cfg.sample_num > 0:
        reports.append(SampleGrid(run_dir, tensorboard))
    if train_cfg.eval_every:
        reports.append(FDEvaluation(config, device, progress))
    return reports
