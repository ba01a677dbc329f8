"""The Trainer: one flat loop over steps, read top to bottom in sections as EDM2's training loop is. Its parts live
beside it, so that one step reads from the loop through two more files:

    batches.py      the step's batch: the epoch's order, labels with dropout, flips, the noise, the task's draws
    step.py         the step itself: the loss, backward, clipping, AdamW, the EMA
    checkpoints.py  the run saved and restored; the run directory's files on a start or a resume
    reports.py      what each report does after its checkpoint (a sample grid, an FD): callables a caller may pass
    budget.py       a run fitted to a time budget

One process or many (torchrun) run the same code and take the same steps (batches.py says how).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..bounds import MAX_OPTIMIZER_STEPS
from ..checkpoint import load_starting_weights
from ..config import RunConfig
from ..data import ImageDataset, load_data
from ..devices import memory_of
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..files import atomic_write_bytes, check_run_not_in_use, run_lock
from ..nets import GUIDANCE_EMBEDDING, build_network, count_parameters
from ..nets.memory import activation_bytes, format_bytes
from ..pipeline import Model
from ..tensorboard_log import TensorBoardLog
from .batches import Batch, Batches, check_data_fits, record_data, steps_per_epoch
from .budget import Plan, TimeBudget, budget_seconds, last_step, warmup_of
from .checkpoints import Checkpoints
from .cuda_graph import GraphedStep
from .distributed import setup_distributed
from .ema import EMA
from .loss_watch import LossWatch
from .metrics_log import MetricsLog
from .options import resolve_options
from .reports import Report, default_reports, report_cost_in_steps, report_interval
from .signals import StopRequest
from .step import StepSettings, train_step
from .tasks import task_for


def learning_rate(config, step: int, total_steps: int | None) -> float:
    """Linear warm-up, then constant or a cosine decay to lr * min_lr_ratio. A run planned from a time budget holds
    the peak until its plan (total_steps None meanwhile), and decays from there (train.planned_at); its warm-up may
    be one the budget shortened (budget.py)."""
    train_cfg, warmup = config.train, warmup_of(config.train)
    if step < warmup:
        return train_cfg.lr * (step + 1) / warmup
    if train_cfg.lr_schedule == "constant" or total_steps is None:
        return train_cfg.lr
    decay_from = max(warmup, train_cfg.planned_at)
    progress = min(1.0, max(0, step - decay_from) / max(1, total_steps - decay_from))
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
    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False,
                 dataset: ImageDataset | None = None, progress: bool = True, net: torch.nn.Module | None = None,
                 checkpoint: Path | None = None, *, reports: list[Callable[[Report], None]] | None = None,
                 on_batch: Callable[[int, Batch], Batch] | None = None,
                 on_log: Callable[[dict], None] | None = None):
        """`resume` continues the run in `run_dir` from `checkpoint`, one of its own checkpoint directories
        (default: its latest), or from step 0 if it has none yet. `net` replaces the network the config
        describes (benchmarks train other architectures).

        A caller's own work: `reports`, what each report does after its checkpoint (None: the config's sample grid
        and FD, reports.py); `on_batch(step, batch)`, the batch a step trains on, given the one drawn (a
        benchmark poisons one); `on_log(record)`, called with each record written to metrics.jsonl."""
        config.validate()
        self.config, self.run_dir, self.resume = config, Path(run_dir), resume
        self.on_batch, self.on_log = on_batch, on_log
        train_cfg = config.train
        # --- the machine: threads, processes and device, the speed options, the memory the run needs
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        self.dist, self.device = setup_distributed(train_cfg.device)
        if self.dist.is_main:  # refused before any work; run() holds the lock while it writes
            check_run_not_in_use(self.run_dir)
        if train_cfg.batch_size % self.dist.world_size:
            raise UserError(f"the global batch size {train_cfg.batch_size} must divide evenly over "
                            f"{self.dist.world_size} processes.")
        self.progress = progress and self.dist.is_main
        self.options = resolve_options(config, self.device, self.dist.world_size)
        check_training_memory(config, train_cfg.batch_size // self.dist.world_size, self.device, net)

        # --- the data, the reports (rank 0's, made ready now: a missing package, or data that cannot be scored,
        # is one sentence before training rather than an error after the first epoch), the run's length
        self.dataset = dataset or load_data(config.data, "train", progress=self.progress)
        check_data_fits(config, self.dataset)
        self.config = config = record_data(config, self.dataset)
        logs_tensorboard = train_cfg.tensorboard and self.dist.is_main
        self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard") if logs_tensorboard else None
        if not self.dist.is_main:
            reports = []
        elif reports is None:
            reports = default_reports(config, self.run_dir, self.device, self.tensorboard, self.progress)
        self.reports = list(reports)
        self.steps_per_epoch = steps_per_epoch(self.dataset, train_cfg.batch_size)
        self.report_every = report_interval(train_cfg, self.steps_per_epoch)

        # --- the network, its EMA and optimizer, and the run's generator, from the seed; or from a checkpoint
        torch.manual_seed(train_cfg.seed)
        self.diffusion = GaussianDiffusion(config.diffusion)
        self.task = task_for(config, self.diffusion, self.device)  # denoising, or a student's distillation
        self.net = (net if net is not None else build_network(config.net)).to(self.device)
        if self.options["channels_last"]:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = EMA(self.net, train_cfg.ema_decay, train_cfg.ema_std)
        self.optimizer = adamw(parameter_groups(self.net, config), train_cfg, self.options, self.device)
        self.losses = LossWatch(train_cfg.on_nan, self.run_dir)
        self.metrics = MetricsLog(self.run_dir, self.tensorboard)
        self.generator = torch.Generator(device=self.device).manual_seed(train_cfg.seed)
        self.batches = Batches(config, self.dataset, self.task, self.generator, self.device, self.dist.rank,
                               self.dist.world_size)
        self.checkpoints = Checkpoints(self.run_dir, self.net, self.ema, self.optimizer, self.generator, self.losses,
                                       self.metrics, self.options, self.dist, self.device, self.task)
        self.step = self.checkpoints.restore(checkpoint) if resume else 0
        if self.step == 0 and train_cfg.init:  # fine-tuning: another run's weights instead of the seed's
            load_starting_weights([self.net, self.ema.net], train_cfg.init)
        # --- the run's length. A time budget plans it after timing the first steps (budget.py); until then the
        # run counts towards a length it will not reach. A resume goes on with the plan its checkpoint was saved
        # under (none, for one from before the plan), and with what is left of the budget.
        if self.checkpoints.resumed_from is not None:
            self.config = config = dataclasses.replace(
                config, train=self.checkpoints.plan.recorded_in(config.train))
        last = last_step(config.train, self.steps_per_epoch)
        self.planning, self.total_steps = last is None, last or MAX_OPTIMIZER_STEPS
        report_cost = report_cost_in_steps(train_cfg, self.steps_per_epoch, self.report_every)
        self.clock = TimeBudget(config.train, self.checkpoints.spent, 1 + report_cost / self.report_every,
                                report_cost)
        self._bound_step = self._bind_step()

    def _bind_step(self) -> Callable[..., torch.Tensor]:
        """The step (step.py) bound to this run's parts once: the model it runs (the network, or its DDP or
        compiled wrapper, made after a checkpoint is restored), eager or (opt-in, one GPU) replayed as a CUDA graph."""
        train_cfg, graph = self.config.train, self.options["cuda_graph"]
        model = self.net
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if self.options["compile"]:
            model = torch.compile(model, mode=train_cfg.compile_mode)
        # Per-step values the device reads, so that a step needs no host-device synchronisation.
        self._ema_weight = torch.zeros((), device=self.device)
        found_inf = torch.zeros((), device=self.device) if self.options["fused_adamw"] else None  # 1.0: skip
        settings = StepSettings(grad_clip=train_cfg.grad_clip, bf16=self.options["bf16"],
                                world_size=self.dist.world_size, graphed=graph, found_inf=found_inf)
        step = functools.partial(train_step, model, self.net, self.task, self.optimizer, self.ema, settings,
                                 self._ema_weight)
        return GraphedStep(step, self.optimizer, self.device) if graph else step

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to the end; rank 0 holds the run directory's lock throughout, so it is the one writer."""
        with run_lock(self.run_dir) if self.dist.is_main else contextlib.nullcontext():
            return self._run()

    def _run(self) -> TrainResult:
        train_cfg = self.config.train
        if self.dist.is_main:
            self.checkpoints.write_run_files(self.config, self.step, self.resume)
            self._announce()
        bar = tqdm(total=None if self.planning else self.total_steps, initial=self.step, unit="step",
                   disable=not self.progress, smoothing=0.05)
        start = time.perf_counter()
        first_step, reported_epochs = self.step, self.step // self.steps_per_epoch
        self._window = (self.step, start)  # the step and time the log's window of speed and losses began at
        self.clock.begin(start)
        stopped = out_of_time = False
        with StopRequest() as stop:
            while self.step < self.total_steps:
                # --- the step: its batch (batches.py), the learning rate and EMA weight, queued (step.py)
                self._queue_step()
                if train_cfg.on_nan == "stop" or len(self.losses.pending) > 256:  # read the previous step's loss, not
                    self.losses.read(keep_last=True)  # this one's: the GPU is busy with it
                self.step += 1
                # --- the run's length (a time budget's plan, kept to the pace), an end asked for (a signal, the
                # budget spent)
                stopped, out_of_time = self._end_requested(stop)
                bar.total = None if self.planning else self.total_steps
                # --- the log, the checkpoint, the report (a checkpoint, then a sample grid and an FD)
                if self.step % train_cfg.log_every == 0 or self.step == self.total_steps or out_of_time:
                    self._log_window(bar, start)
                bar.update(1)
                if train_cfg.checkpoint_every and self.step % train_cfg.checkpoint_every == 0:
                    self.save()
                if stopped:  # a signal: the final checkpoint below, without the report
                    break
                if self.step % self.report_every == 0 or self.step == self.total_steps:
                    self._report(reported_epochs)
                    reported_epochs = self.step // self.steps_per_epoch
                if out_of_time:
                    break
        # --- the end: the final checkpoint
        bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        path = self.save()
        wall = time.perf_counter() - start
        average_images_per_second = (self.step - first_step) * train_cfg.batch_size / wall if wall > 0 else 0.0
        ended_by = "signal" if stopped else "budget" if out_of_time else "steps"
        if self.dist.is_main:
            self._say_how_it_ended(ended_by, path)
        return TrainResult(self.run_dir, self.step, self.losses.last, average_images_per_second, wall, stopped,
                           self.dist.is_main, ended_by=ended_by)

    def _queue_step(self) -> None:
        """Queue one step; its loss joins the pending ones, which the host reads later (loss_watch.py)."""
        batch = self.batches.draw(self.step)
        if self.on_batch is not None:
            batch = self.on_batch(self.step, batch)
        x0, noise = batch.x0, batch.noise
        if self.options["channels_last"]:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        self._set_learning_rate(self.step)
        self._ema_weight.fill_(self.ema.weight_at(self.step))
        loss = self._bound_step(x0, batch.y, noise, *batch.drawn)
        self.losses.queue(self.step, loss)

    def _learning_rate(self, step: int) -> float:
        """The schedule's rate at `step`; while a budget is being timed the run has no length yet."""
        return learning_rate(self.config, step, None if self.planning else self.total_steps)

    def _set_learning_rate(self, step: int) -> None:
        lr = self._learning_rate(step)
        for group in self.optimizer.param_groups:  # a checkpoint saved before the groups has one, without the keys
            scaled = lr * group.get("lr_scale", 1.0) if step >= group.get("from_step", 0) else 0.0
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(scaled)
            else:
                group["lr"] = scaled

    def save(self) -> Path | None:
        """The checkpoint of the current step (checkpoints.py), with the budget's time spent; its directory on
        rank 0."""
        return self.checkpoints.save(self.step, self.config, self.clock.elapsed(time.perf_counter()))

    def _log_window(self, bar: tqdm, start: float) -> None:
        """One record of metrics.jsonl: the mean loss and the speed since the last."""
        train_cfg = self.config.train
        self.losses.read()
        now = time.perf_counter()
        (window_step, window_start), mean_loss = self._window, self.losses.window_mean()
        images_per_second = (self.step - window_step) * train_cfg.batch_size / (now - window_start)
        self._write_record({"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch + 1,
                            "loss": mean_loss, "lr": self._learning_rate(self.step - 1),
                            "images_per_second": images_per_second, "skipped_steps": self.losses.skipped,
                            "elapsed_s": now - start})
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_second:.0f}")
        self._window = (self.step, now)

    def _write_record(self, record: dict) -> None:
        if self.dist.is_main:
            self.metrics.write(record)
            if self.on_log is not None:
                self.on_log(record)

    def _report(self, previous_epochs: int) -> None:
        """A checkpoint (unless this step's was just written), then the reports' work on the EMA model (rank 0)."""
        train_cfg = self.config.train
        if not train_cfg.checkpoint_every or self.step % train_cfg.checkpoint_every:
            self.save()
        if not self.reports:
            return
        epochs, within = divmod(self.step, self.steps_per_epoch)
        name = f"epoch-{epochs:03d}" if within == 0 else f"step-{self.step:08d}"
        model = Model(self.ema.net, self.diffusion, self.config, self.run_dir)
        report = Report(self.step, name, epochs, previous_epochs, model, self._write_record)
        for work in self.reports:
            work(report)

    def _announce(self) -> None:
        train_cfg = self.config.train
        length = (f"as many steps as fit in {budget_seconds(train_cfg):g} s" if self.planning
                  else f"{self.total_steps} step{'s' if self.total_steps != 1 else ''}")
        print(f"training {self.config.name}: {count_parameters(self.net) / 1e6:.2f}M parameters, "
              f"{length} of {train_cfg.batch_size} images on {self.device}"
              f"{f' x {self.dist.world_size} processes' if self.dist.world_size > 1 else ''}; "
              f"run directory {self.run_dir}")

    def _end_requested(self, stop: StopRequest) -> tuple[bool, bool]:
        """(a signal asked to stop, the time budget is spent), and the budget's plan if it changed: rank 0's clock
        decides, and all processes agree in one collective, so none is left waiting alone. A run out of time ends
        as at its last step (final checkpoint and report)."""
        train_cfg, now = self.config.train, time.perf_counter()
        changed, out_of_time = None, False
        if budget_seconds(train_cfg) and self.dist.is_main:
            self.clock.after_step(now)
            if not train_cfg.max_steps:
                changed = self.clock.decide(self.step, Plan.of(train_cfg), train_cfg.warmup_steps, now)
            out_of_time = self.clock.spent_all(now, planned=bool(self.config.train.planned_steps))
        plan = [-1, -1, -1] if changed is None else [changed.warmup, changed.steps, changed.at]
        flags = [float(stop.requested), float(out_of_time), *plan]
        if self.dist.world_size > 1:  # the maximum: any process's signal, rank 0's clock and plan
            agreed = torch.tensor(flags, device=self.device, dtype=torch.float64)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            flags = agreed.tolist()
        if flags[2] >= 0:
            self._record_plan(Plan(*(int(v) for v in flags[2:])))
        return flags[0] > 0, flags[1] > 0

    def _record_plan(self, plan: Plan) -> None:
        """Take the budget's new plan, and record it in config.json (each checkpoint records its own)."""
        old = Plan.of(self.config.train)
        self.config = dataclasses.replace(self.config, train=plan.recorded_in(self.config.train))
        if plan.steps:
            self.planning, self.total_steps = False, plan.steps
        if not self.dist.is_main:
            return
        atomic_write_bytes(self.run_dir / "config.json", self.config.to_json().encode())
        seconds = budget_seconds(self.config.train)
        if plan.warmup != old.warmup:
            print(f"the learning-rate warm-up shortened to {plan.warmup} steps to fit the time budget")
        if plan.steps and not old.steps:
            print(f"planned {plan.steps} steps at step {self.step} to end within the time budget of {seconds:g} s")
        elif plan.steps != old.steps:
            print(f"re-planned to {plan.steps} steps (was {old.steps}) at step {self.step}: the pace changed")

    def _say_how_it_ended(self, ended_by: str, path: Path | None) -> None:
        """Which limit ended the run, when it had a time budget or was stopped."""
        train_cfg = self.config.train
        seconds, spent = budget_seconds(train_cfg), self.clock.elapsed(time.perf_counter())
        if ended_by == "signal":
            print(f"stopped at step {self.step}; checkpoint written to {path}. "
                  f"Continue with: tinydiffusion train --resume {self.run_dir}")
        elif ended_by == "budget":
            limit = f"train.max_steps ({train_cfg.max_steps:,})" if train_cfg.max_steps else \
                f"its plan ({self.total_steps:,} steps)"
            print(f"the time budget of {seconds:g} s ended the run at step {self.step:,}, before {limit}; "
                  "a resume has no time left: give it a larger --train.minutes to train further")
        elif seconds:
            steps = "planned steps" if train_cfg.planned_steps else "steps (train.max_steps)"
            print(f"the run took its {self.step:,} {steps} in {spent:.1f} s of its {seconds:g} s time budget")


def parameter_groups(net: torch.nn.Module, config: RunConfig) -> list[dict]:
    """AdamW's parameter groups, each with its share of the schedule's learning rate (lr_scale) and the step it
    starts training at (from_step): one group, or for a student with distill.guidance_lr or guidance_warmup, its
    guidance embedding in a second. That embedding is new and starts at zero while the rest is its teacher's; at
    the student's fine-tuning rate the rest learns the average over the guidance scales first, and the embedding
    then barely moves: the student draws alike at every scale it is asked for (docs/distill.md)."""
    d = config.distill
    new = {name for name, _ in net.named_parameters() if name.startswith(GUIDANCE_EMBEDDING)}
    if not new or not (d.guidance_lr or d.guidance_warmup):
        return [{"params": list(net.parameters()), "lr_scale": 1.0, "from_step": 0}]
    return [{"params": [p for name, p in net.named_parameters() if name not in new], "lr_scale": 1.0,
             "from_step": d.guidance_warmup},
            {"params": [p for name, p in net.named_parameters() if name in new],
             "lr_scale": d.guidance_lr / config.train.lr if d.guidance_lr else 1.0, "from_step": 0}]


def adamw(groups: list[dict], train_cfg, options: dict, device: torch.device) -> torch.optim.AdamW:
    """The run's optimizer over parameter_groups; one a CUDA graph captures reads its learning rates from tensors."""
    graph = options["cuda_graph"]
    for group in groups:
        lr = train_cfg.lr * group["lr_scale"]
        group["lr"] = torch.tensor(lr, device=device) if graph else lr
    return torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, betas=(0.9, 0.999),
                             fused=options["fused_adamw"], capturable=graph)


def check_training_memory(config: RunConfig, local_batch: int, device: torch.device,
                          net: torch.nn.Module | None = None) -> None:
    """Refuse, before anything is allocated, a network or batch that cannot fit: each parameter with its
    gradient, AdamW's two moments and the EMA copy (5 floats), plus the activations kept for backward."""
    if net is None:
        with torch.device("meta"):  # shapes only: a network of billions of parameters costs nothing here
            net = build_network(config.net)
    parameters = count_parameters(net)
    needed = 5 * 4 * parameters + activation_bytes(config.net, local_batch, training=True)
    available = memory_of(device)
    if needed > available:
        raise UserError(f"training this network ({parameters / 1e6:,.2f}M parameters) on batches of {local_batch} "
                        f"needs about {format_bytes(needed)}, more than the {format_bytes(available)} of memory on "
                        f"{device}; make the network or --batch-size smaller.")


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
        if dist.is_initialized():
            dist.destroy_process_group()
