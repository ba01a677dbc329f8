"""The Trainer: one flat loop over steps, read top to bottom in sections as EDM2's training loop is. The run's
state is one object (state.py), which the Trainer hands by name to its parts beside it, so that one step reads from
the loop through two more files: batches.py and step.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..bounds import MAX_OPTIMIZER_STEPS
from ..checkpoint import load_starting_weights
from ..config import RunConfig
from ..data import ImageDataset
from ..data.latents import load_training_data
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..files import atomic_write_bytes, check_run_not_in_use, run_lock
from ..nets import count_parameters
from ..pipeline import Model
from ..tensorboard_log import TensorBoardLog
from .batches import Batch, Batches, check_data_fits, record_data, steps_per_epoch
from .budget import Plan, TimeBudget, budget_seconds, ending, last_step, plan_news
from .checkpoints import Checkpoints
from .distributed import agree, leave_distributed, setup_distributed
from .options import resolve_options
from .reports import Report, default_reports, report_cost_in_steps, report_interval
from .signals import StopRequest
from .state import check_training_memory, new_state, set_learning_rate
from .step import bind_step


def learning_rate(config, step: int, total_steps: int | None) -> float:
    """Linear warm-up, then constant or a cosine decay to lr * min_lr_ratio, reached on the last step (total_steps
    - 1). A run planned from a time budget holds the peak until its plan (total_steps None meanwhile), and decays
    from there (train.planned_at); its warm-up may be one the budget shortened (train.planned_warmup)."""
    train_cfg = config.train
    warmup = train_cfg.planned_warmup or train_cfg.warmup_steps
    if step < warmup:
        return train_cfg.lr * (step + 1) / warmup
    if train_cfg.lr_schedule == "constant" or total_steps is None:
        return train_cfg.lr
    decay_from = max(warmup, train_cfg.planned_at)
    progress = min(1.0, max(0, step - decay_from) / max(1, total_steps - 1 - decay_from))
    floor = train_cfg.min_lr_ratio
    return train_cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_loss: float
    images_per_second: float  # averaged over the steps this invocation took
    wall_seconds: float
    stopped_early: bool = False
    main_process: bool = True  # rank 0, the one process that reports
    ended_by: str = "steps"  # what ended the run: "steps" (its last step), "signal", or "budget" (out of time)


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False, dataset: ImageDataset | None = None,
                 progress: bool = True, net: torch.nn.Module | None = None, checkpoint: Path | None = None, *,
                 reports: list[Callable[[Report], None]] | None = None,
                 on_batch: Callable[[int, Batch], Batch] | None = None, on_log: Callable[[dict], None] | None = None):
        """`resume` continues the run in `run_dir` from `checkpoint`, one of its own checkpoint directories
        (default: its latest), or from step 0 if it has none yet. `net` replaces the network the config describes.
        A caller's own work: `reports`, what each report does after its checkpoint (None: the config's, reports.py);
        `on_batch(step, batch)`, the batch a step trains on, given the one drawn (a benchmark poisons one);
        `on_log(record)`, called with each record written to metrics.jsonl."""
        config.validate()
        run_dir, self.resume, self.on_batch, self.on_log = Path(run_dir), resume, on_batch, on_log
        train_cfg = config.train
        # --- the machine: threads, processes and device, the speed options, the memory the run needs
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        run_dist, device = setup_distributed(train_cfg.device)
        if run_dist.is_main:  # refused before any work; run() holds the lock while it writes
            check_run_not_in_use(run_dir)
        if train_cfg.batch_size % run_dist.world_size:
            raise UserError(f"the global batch size {train_cfg.batch_size} must divide evenly over "
                            f"{run_dist.world_size} processes.")
        self.progress = progress and run_dist.is_main
        options = resolve_options(config, device)
        check_training_memory(config, train_cfg.batch_size // run_dist.world_size, device, net)

        # --- the data, the reports (rank 0's, made ready now: a missing package, or data that cannot be scored,
        # is one sentence before training rather than an error after the first epoch)
        self.dataset = dataset or load_training_data(config.data, progress=self.progress)
        check_data_fits(config, self.dataset)
        config = record_data(config, self.dataset)
        self.tensorboard = TensorBoardLog(run_dir / "tensorboard") if train_cfg.tensorboard and run_dist.is_main \
            else None
        if not run_dist.is_main:
            reports = []
        elif reports is None:
            reports = default_reports(config, run_dir, device, self.tensorboard, self.progress)
        self.reports = list(reports)
        self.steps_per_epoch = steps_per_epoch(self.dataset, train_cfg.batch_size)
        self.report_every = report_interval(train_cfg, self.steps_per_epoch)

        # --- the run's state, from the seed or (a resume) from a checkpoint, with the plan it was saved under
        self.diffusion = GaussianDiffusion(config.diffusion)
        self.state = run = new_state(config, run_dir, net, self.diffusion, options, run_dist, device, self.tensorboard)
        self.batches, self.checkpoints = Batches(run, self.dataset), Checkpoints(run)
        if resume:
            self.checkpoints.restore(checkpoint)
        if run.step == 0 and train_cfg.init:  # fine-tuning: another run's weights instead of the seed's
            load_starting_weights([run.net, run.ema.net], train_cfg.init, run.config.data.class_names)
        self._step, self._ema_weight = bind_step(run)

        # --- the run's length: a time budget plans it after timing the first steps (budget.py); until then the
        # run counts towards a length it will not reach
        last = last_step(run.config.train, self.steps_per_epoch)
        self.planning, self.total_steps = last is None, last or MAX_OPTIMIZER_STEPS
        report_cost = report_cost_in_steps(train_cfg, self.steps_per_epoch, self.report_every)
        self.clock = TimeBudget(run.config.train, self.checkpoints.spent, 1 + report_cost / self.report_every,
                                report_cost)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to the end; rank 0 holds the run directory's lock throughout, so it is the one writer."""
        with run_lock(self.state.run_dir) if self.state.dist.is_main else contextlib.nullcontext():
            return self._run()

    def _run(self) -> TrainResult:
        run, train_cfg = self.state, self.state.config.train
        if run.dist.is_main:
            self.checkpoints.write_run_files(self.resume)
            announce(run, None if self.planning else self.total_steps)
        bar = tqdm(total=None if self.planning else self.total_steps, initial=run.step, unit="step",
                   disable=not self.progress, smoothing=0.05)
        start = time.perf_counter()
        first_step, reported_epochs = run.step, run.step // self.steps_per_epoch
        self._window = (run.step, start)  # the step and time the log's window of speed and losses began at
        self.clock.begin(start)
        stopped = self.out_of_time = False
        with StopRequest() as stop:
            while run.step < self.total_steps:
                # --- the step: its batch (batches.py), the learning rate and EMA weight, queued (step.py)
                self._queue_step()
                if train_cfg.on_nan == "stop" or len(run.losses.pending) > 256:  # read the previous step's loss, not
                    run.losses.read(keep_last=True)  # this one's: the GPU is busy with it
                run.step += 1
                # --- the run's length (a time budget's plan, kept to the pace), an end asked for (a signal, the
                # budget spent)
                stopped, self.out_of_time = self._end_requested(stop)
                bar.total = None if self.planning else self.total_steps
                # --- the log, the checkpoint, the report (a checkpoint, then a sample grid and an FD)
                if run.step % train_cfg.log_every == 0 or run.step == self.total_steps or self.out_of_time:
                    self._log_window(bar, start)
                bar.update(1)
                if train_cfg.checkpoint_every and run.step % train_cfg.checkpoint_every == 0:
                    self.save()
                if stopped:  # a signal: the final checkpoint below, without the report
                    break
                if run.step % self.report_every == 0 or run.step == self.total_steps or self.out_of_time:
                    self._report(reported_epochs)
                    reported_epochs = run.step // self.steps_per_epoch
                if self.out_of_time:
                    break
        # --- the end: the final checkpoint, and which limit ended the run
        bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        path = self.save()
        wall = time.perf_counter() - start
        images_per_second = (run.step - first_step) * train_cfg.batch_size / wall if wall > 0 else 0.0
        if stopped and run.dist.is_main:
            print(f"stopped at step {run.step}; checkpoint written to {path}. "
                  f"Continue with: tinydiffusion train --resume {run.run_dir}")
        elif run.dist.is_main and (news := ending(run.config.train, run.step, self.out_of_time,
                                                  self.clock.elapsed(time.perf_counter()))):
            print(news)
        return TrainResult(run.run_dir, run.step, run.losses.last, images_per_second, wall, stopped,
                           run.dist.is_main, "signal" if stopped else "budget" if self.out_of_time else "steps")

    def _queue_step(self) -> None:
        """Queue one step; its loss joins the pending ones, which the host reads later (loss_watch.py)."""
        run = self.state
        batch = self.batches.draw(run.step)
        if self.on_batch is not None:
            batch = self.on_batch(run.step, batch)
        x0, noise = batch.x0, batch.noise
        if run.options["channels_last"]:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        set_learning_rate(run.optimizer, self._learning_rate(run.step), run.step)
        self._ema_weight.fill_(run.ema.weight_at(run.step))
        run.losses.queue(run.step, self._step(x0, batch.y, noise, *batch.drawn))

    def _learning_rate(self, step: int) -> float:
        """The schedule's rate at `step`; while a budget is being timed the run has no length yet."""
        return learning_rate(self.state.config, step, None if self.planning else self.total_steps)

    def save(self) -> Path | None:
        """The checkpoint of the current step (checkpoints.py), with the budget's time spent (all of it once the
        budget has ended the run: what was left is its last report's); its directory on rank 0."""
        spent = self.clock.elapsed(time.perf_counter())
        return self.checkpoints.save(max(spent, self.clock.seconds) if self.out_of_time else spent)

    def _log_window(self, bar: tqdm, start: float) -> None:
        """One record of metrics.jsonl: the mean loss and the speed since the last."""
        run = self.state
        run.losses.read()
        now = time.perf_counter()
        (window_step, window_start), mean_loss = self._window, run.losses.window_mean()
        images_per_second = (run.step - window_step) * run.config.train.batch_size / (now - window_start)
        self._write_record({"step": run.step, "epoch": (run.step - 1) // self.steps_per_epoch + 1, "loss": mean_loss,
                            "lr": self._learning_rate(run.step - 1), "images_per_second": images_per_second,
                            "skipped_steps": run.losses.skipped, "elapsed_s": now - start})
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_second:.0f}")
        self._window = (run.step, now)

    def _write_record(self, record: dict) -> None:
        if self.state.dist.is_main:
            self.state.metrics.write(record)
            if self.on_log is not None:
                self.on_log(record)

    def _report(self, previous_epochs: int) -> None:
        """A checkpoint (unless this step's was just written), then the reports' work on the EMA model (rank 0)."""
        run, train_cfg = self.state, self.state.config.train
        if not train_cfg.checkpoint_every or run.step % train_cfg.checkpoint_every:
            self.save()
        if not self.reports:
            return
        epochs, within = divmod(run.step, self.steps_per_epoch)
        name = f"epoch-{epochs:03d}" if within == 0 else f"step-{run.step:08d}"
        model = Model(run.ema.net, self.diffusion, run.config, run.run_dir)
        report = Report(run.step, name, epochs, previous_epochs, model, self._write_record)
        for work in self.reports:
            work(report)

    def _end_requested(self, stop: StopRequest) -> tuple[bool, bool]:
        """(a signal asked to stop, the time budget is spent), and the budget's plan if it changed: rank 0's clock
        decides, and all processes agree in one collective. A run out of time ends as at its last step (final
        checkpoint and report)."""
        run, now = self.state, time.perf_counter()
        train_cfg, changed, out_of_time = run.config.train, None, False
        if budget_seconds(train_cfg) and run.dist.is_main:
            self.clock.after_step(now)
            if not train_cfg.max_steps:
                changed = self.clock.decide(run.step, Plan.of(train_cfg), train_cfg.warmup_steps, now)
            out_of_time = self.clock.spent_all(now, planned=bool(train_cfg.planned_steps))
        plan = [-1, -1, -1] if changed is None else [changed.warmup, changed.steps, changed.at]
        flags = agree([float(stop.requested), float(out_of_time), *plan], run.dist, run.device)
        if flags[2] >= 0:
            record_plan(run, Plan(*(int(v) for v in flags[2:])))
            if run.config.train.planned_steps:
                self.planning, self.total_steps = False, run.config.train.planned_steps
        return flags[0] > 0, flags[1] > 0


def announce(run, total_steps: int | None) -> None:
    """What is trained, for how long (None: a budget not planned yet), where."""
    train_cfg = run.config.train
    length = (f"as many steps as fit in {budget_seconds(train_cfg):g} s" if total_steps is None
              else f"{total_steps} step{'s' if total_steps != 1 else ''}")
    print(f"training {run.config.name}: {count_parameters(run.net) / 1e6:.2f}M parameters, "
          f"{length} of {train_cfg.batch_size} images on {run.device}"
          f"{f' x {run.dist.world_size} processes' if run.dist.world_size > 1 else ''}; "
          f"run directory {run.run_dir}")


def record_plan(run, plan: Plan) -> None:
    """Take a time budget's new plan into the run, and record it in config.json (each checkpoint records its own)."""
    old = Plan.of(run.config.train)
    run.config = dataclasses.replace(run.config, train=plan.recorded_in(run.config.train))
    if run.dist.is_main:
        atomic_write_bytes(run.run_dir / "config.json", run.config.to_json().encode())
        for news in plan_news(old, plan, run.step, budget_seconds(run.config.train)):
            print(news)


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, dataset: ImageDataset | None = None,
          progress: bool = True, checkpoint: str | Path | None = None,
          net: torch.nn.Module | None = None) -> TrainResult:
    """Train (or resume: see Trainer) a run; the command line and tests call this. `net`: the network to start
    from (a student starts from its teacher's weights), else one the config describes."""
    trainer = Trainer(config, Path(run_dir), resume=resume, dataset=dataset, progress=progress, net=net,
                      checkpoint=None if checkpoint is None else Path(checkpoint))
    try:
        return trainer.run()
    finally:
        leave_distributed()
