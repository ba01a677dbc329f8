"""The Trainer: the loop of steps, AdamW with warm-up, checkpoints and logs; its parts live beside it.

One process or many (torchrun) run the same code. Every process draws the noise, timesteps and
label-dropout mask of the whole *global* batch from one shared generator and keeps its own slice,
so N processes take exactly the steps one process would with the same global batch and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import MAX_STEPS, RunConfig
from ..data import ImageDataset, load_data
from ..data.pixels import to_model_space
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..files import atomic_write_bytes, check_run_not_in_use, run_lock
from ..nets import build_network, count_parameters
from ..nets.memory import activation_bytes, format_bytes
from ..pipeline import Model, generate, memory_of, sampling_settings
from ..tensorboard_log import TensorBoardLog
from ..viz import grid_image, save_grid
from .budget import StepPlanner, budget_seconds, last_step
from .cuda_graph import GraphedStep
from .distributed import setup_distributed
from .ema import EMA
from .losses import LossWatch
from .metrics_log import MetricsLog
from .options import resolve_options
from .signals import StopRequest
from .step import StepSettings, train_step
from .tasks import task_for


def learning_rate(config, step: int, total_steps: int | None) -> float:
    """Linear warm-up, then constant or a cosine decay to lr * min_lr_ratio. A run planned from a time budget holds
    the peak until its plan (total_steps None meanwhile), and decays from there (train.planned_at)."""
    t = config.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant" or total_steps is None:
        return t.lr
    decay_from = max(t.warmup_steps, t.planned_at)
    progress = min(1.0, max(0, step - decay_from) / max(1, total_steps - decay_from))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


GRID_SHARE = 0.05  # a report's sample grid takes at most about this share of the training time between reports
MIN_REPORT_STEPS = 10  # and reports (checkpoints) come no closer than this, however short an epoch


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


def epoch_order(num_images: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The permutation of the dataset for one epoch; a function of (seed, epoch) alone, so resumable."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_images, generator=generator).to(device)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_loss: float
    images_per_second: float  # averaged over the steps this invocation took
    wall_seconds: float
    stopped_early: bool = False
    main_process: bool = True  # rank 0, the one process that reports


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False,
                 dataset: ImageDataset | None = None, progress: bool = True, net: torch.nn.Module | None = None,
                 checkpoint: Path | None = None):
        """`resume` continues the run in `run_dir` from `checkpoint`, one of its own checkpoint directories
        (default: its latest), or from step 0 if it has none yet. `net` replaces the network the config
        describes (benchmarks train other architectures)."""
        config.validate()
        self.config, self.run_dir, self.resume = config, Path(run_dir), resume
        t = config.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.dist, self.device = setup_distributed(t.device)
        if self.dist.is_main:  # refused before any work; run() holds the lock while it writes
            check_run_not_in_use(self.run_dir)
        if t.batch_size % self.dist.world_size:
            raise UserError(f"the global batch size {t.batch_size} must divide evenly over "
                            f"{self.dist.world_size} processes.")
        self.local_batch = t.batch_size // self.dist.world_size
        self.progress = progress and self.dist.is_main
        self.options = resolve_options(config, self.device, self.dist.world_size)
        check_training_memory(config, self.local_batch, self.device, net)

        self.dataset = dataset or load_data(config.data, "train", progress=self.progress)
        self._check_data_matches_net()
        self.config = config = record_data(config, self.dataset)
        # Rank 0's monitors, made ready before training starts: a missing package, or data that cannot be
        # scored, is one sentence now rather than an error after the first epoch.
        self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard") if t.tensorboard and self.dist.is_main else None
        self.evaluator = None
        if t.eval_every and self.dist.is_main:
            from ..evaluation import Evaluator

            self.evaluator = Evaluator(config.data, progress=self.progress)
        # The whole dataset stays resident on the device, unless it is memory-mapped (too big for memory):
        # then batches are gathered on the host and copied over.
        on_host = self.dataset.memory_mapped
        self.images = self.dataset.images if on_host else self.dataset.images.to(self.device)
        labels = self.dataset.labels
        self.labels = None if labels is None else (labels if on_host else labels.to(self.device))
        self.steps_per_epoch = len(self.dataset) // t.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"the dataset has {len(self.dataset)} images, fewer than one batch of {t.batch_size}.")
        self.report_every = report_interval(t, self.steps_per_epoch)
        # A time budget plans the step count once, after timing the first steps (budget.py); until then the
        # run counts towards a length it will not reach, and the learning rate is still warming up.
        last = last_step(t, self.steps_per_epoch)
        self.planning, self.total_steps = last is None, last or MAX_STEPS

        torch.manual_seed(t.seed)
        self.diffusion = GaussianDiffusion(config.diffusion)
        self.task = task_for(config, self.diffusion, self.device)  # denoising, or a student's distillation
        self.net = (net if net is not None else build_network(config.net)).to(self.device)
        if self.options["channels_last"]:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = EMA(self.net, t.ema_decay, t.ema_std)
        graph = self.options["cuda_graph"]  # a captured optimizer reads its LR from a tensor
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=torch.tensor(t.lr, device=self.device) if graph
                                           else t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.999),
                                           fused=self.options["fused_adamw"], capturable=graph)
        # Per-step values the device reads, so that a step needs no host-device synchronisation.
        self._found_inf = torch.zeros((), device=self.device)  # 1.0: skip this step's update (fused AdamW)
        self._ema_weight = torch.zeros((), device=self.device)
        self.losses = LossWatch(t.on_nan, self.run_dir)
        self.metrics = MetricsLog(self.run_dir, self.tensorboard)
        self.generator = torch.Generator(device=self.device).manual_seed(t.seed)
        self.step = 0
        self._resumed_from = self._restore(checkpoint) if resume else None  # None: from step 0
        self._saved_step = self.step if self._resumed_from else None  # the step whose checkpoint is on disk already
        self.model_for_step = self.net
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model_for_step = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if self.options["compile"]:
            self.model_for_step = torch.compile(self.model_for_step, mode=t.compile_mode)
        # The step itself (step.py): eager, or (opt-in, one GPU) recorded once as a CUDA graph and replayed
        settings = StepSettings(grad_clip=t.grad_clip, bf16=self.options["bf16"], world_size=self.dist.world_size,
                                graphed=graph, found_inf=self._found_inf if self.options["fused_adamw"] else None)
        step = functools.partial(train_step, self.model_for_step, self.net, self.task, self.optimizer, self.ema,
                                 settings, self._ema_weight)
        self._run_step = GraphedStep(step, self.optimizer, self.device) if graph else step

    def _check_data_matches_net(self) -> None:
        _, c, h, w = self.dataset.images.shape
        n = self.config.net
        if (c, h, w) != (n.in_channels, n.image_size, n.image_size):
            raise UserError(f"the data is {c}x{h}x{w} but the network expects "
                            f"{n.in_channels}x{n.image_size}x{n.image_size}; set --net.in_channels/--net.image_size.")
        if n.num_classes > 0 and self.dataset.labels is None:
            raise UserError(f"{self.config.data.source} is unlabelled (no class folders), but the network is "
                            f"class-conditional ({n.num_classes} classes); set --net.num_classes 0.")
        if n.num_classes > 0 and len(self.dataset.class_names) > n.num_classes:
            raise UserError(f"{self.config.data.source} has {len(self.dataset.class_names)} classes but the network "
                            f"has {n.num_classes}; set --net.num_classes {len(self.dataset.class_names)}.")
        recorded = self.config.data.prepared_sha256
        if recorded and recorded != self.dataset.manifest.get("sha256", recorded):
            raise UserError(f"the data of this run ({self.config.data.source}) has changed since it started; "
                            "a resumed run needs the same images. Start a new --run-dir to train on the new data.")

    # --- checkpoints -------------------------------------------------------------------------

    def _restore(self, checkpoint: Path | None) -> Path | None:
        """Load the checkpoint a resume continues from (default: the latest); None when the run has none yet
        (it stopped before its first), which then starts afresh from step 0."""
        if checkpoint is not None and Path(checkpoint).parent.resolve() != (self.run_dir / ckpt.CHECKPOINTS).resolve():
            raise UserError(f"{checkpoint} is not a checkpoint of the run {self.run_dir}.")
        found = Path(checkpoint) if checkpoint is not None else ckpt.latest_checkpoint(self.run_dir)
        if found is None:
            if not (self.run_dir / "config.json").is_file():
                raise UserError(f"{self.run_dir} is not a run directory (it has no config.json).")
            return None
        state = ckpt.load_training_state(found)  # its step is checked there
        ckpt.load_into(self.net, ckpt.load_weights(found / ckpt.MODEL_FILE), found / ckpt.MODEL_FILE)
        ckpt.load_into(self.ema.net, ckpt.load_weights(found / ckpt.EMA_FILE), found / ckpt.EMA_FILE)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self._match_optimizer_to_options()
            self.generator.set_state(state["generator"].to(self.generator.get_state().device))
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            self.losses.load_state(state)
            self.step = state["step"]
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as err:
            raise UserError(f"{found} holds a training state that does not fit this run ({err}).") from None
        return found

    def _match_optimizer_to_options(self) -> None:
        """A loaded optimizer state carries the saving run's implementation flags and LR type; this run's
        options win, so a run started without fused AdamW or CUDA graphs can resume with them and back."""
        graph, fused = self.options["cuda_graph"], self.options["fused_adamw"]
        for group in self.optimizer.param_groups:
            lr = float(group["lr"])
            group["lr"] = torch.tensor(lr, device=self.device) if graph else lr
            group.update(fused=fused, capturable=graph, foreach=None if fused else group.get("foreach"))
        for param_state in self.optimizer.state.values():
            if "step" in param_state:
                on_device = fused or graph
                param_state["step"] = param_state["step"].to(dtype=torch.float32,
                                                              device=self.device if on_device else "cpu")

    def save(self) -> Path | None:
        self.losses.read()  # a non-finite loss under on_nan "stop" ends the run before this save
        if self.step == self._saved_step:  # an epoch end and the end of the run often fall on the same step
            return ckpt.latest_checkpoint(self.run_dir) if self.dist.is_main else None
        if self.dist.is_main:
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                **self.losses.state(),
            }
            if self.device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
            try:
                path = ckpt.save_checkpoint(self.run_dir, self.step, self.config, ckpt.plain_state_dict(self.net),
                                            ckpt.plain_state_dict(self.ema.net), state, self.config.train.keep)
            except OSError as err:
                raise UserError(f"could not write a checkpoint to {self.run_dir} ({err.strerror or err}); "
                                "the previous checkpoint is untouched. Free some space or choose another "
                                "--run-dir.") from None
        else:
            path = None
        if self.dist.world_size > 1:
            dist.barrier()
        self._saved_step = self.step
        return path

    # --- one step ----------------------------------------------------------------------------

    def _draw_batch(self, order: torch.Tensor, index_in_epoch: int):
        """This process's slice of the global batch, with the global batch's noise, the task's draws (t) and the
        label dropout."""
        t, world = self.config.train, self.dist
        global_idx = order[index_in_epoch * t.batch_size:(index_in_epoch + 1) * t.batch_size]
        net_cfg = self.config.net
        shape = (t.batch_size, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size)
        noise = torch.randn(shape, generator=self.generator, device=self.device)
        drawn = self.task.draw(t.batch_size, self.generator, self.device)
        drop = torch.rand(t.batch_size, generator=self.generator, device=self.device) < t.label_dropout
        mine = slice(world.rank * self.local_batch, (world.rank + 1) * self.local_batch)
        idx = global_idx[mine]
        host_idx = idx.cpu() if self.dataset.memory_mapped else idx
        x0 = to_model_space(self.images[host_idx].to(self.device, non_blocking=True))
        if self.config.data.hflip:  # drawn for the whole global batch, like the noise, so any process count agrees
            flip = (torch.rand(t.batch_size, generator=self.generator, device=self.device) < 0.5)[mine]
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        y = None
        if net_cfg.num_classes > 0:
            y = torch.where(drop[mine], net_cfg.num_classes, self.labels[host_idx].to(self.device))
        return x0, y, noise[mine], *(values[mine] for values in drawn)

    def _train_step(self, order: torch.Tensor, index_in_epoch: int) -> None:
        """Queue one step; its loss joins the pending ones, which the host reads later (losses.py)."""
        x0, y, noise, *drawn = self._draw_batch(order, index_in_epoch)
        if self.options["channels_last"]:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        self._set_learning_rate(self._learning_rate(self.step))
        self._ema_weight.fill_(self.ema.weight_at(self.step))
        loss = self._run_step(x0, y, noise, *drawn)
        self.losses.queue(self.step, loss)

    def _learning_rate(self, step: int) -> float:
        """The schedule's rate at `step`; while a budget is being timed the run has no length yet."""
        return learning_rate(self.config, step, None if self.planning else self.total_steps)

    def _set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to the end; rank 0 holds the run directory's lock throughout, so it is the one writer."""
        with run_lock(self.run_dir) if self.dist.is_main else contextlib.nullcontext():
            return self._run()

    def _run(self) -> TrainResult:
        t = self.config.train
        if self.dist.is_main:
            self._write_run_files()
            length = (f"as many steps as fit in {budget_seconds(t):g} s" if self.planning
                      else f"{self.total_steps} step{'s' if self.total_steps != 1 else ''}")
            print(f"training {self.config.name}: {count_parameters(self.net) / 1e6:.2f}M parameters, "
                  f"{length} of {t.batch_size} images on {self.device}"
                  f"{f' x {self.dist.world_size} processes' if self.dist.world_size > 1 else ''}; "
                  f"run directory {self.run_dir}")
        bar = tqdm(total=None if self.planning else self.total_steps, initial=self.step, unit="step",
                   disable=not self.progress, smoothing=0.05)
        stopped, out_of_time = False, False
        start, window_start, window_steps, images_per_second = time.perf_counter(), time.perf_counter(), 0, 0.0
        first_step, last_report_epoch = self.step, self.step // self.steps_per_epoch
        planner = StepPlanner(budget_seconds(t), start, self._report_cost_in_steps(), self.report_every)
        order, order_epoch = None, None
        with StopRequest() as stop:
            while self.step < self.total_steps:  # one flat loop over steps; the epoch follows from the step
                epoch, index_in_epoch = divmod(self.step, self.steps_per_epoch)
                if order_epoch != epoch:  # a new epoch, or a resume inside one: that epoch's order of the data
                    order, order_epoch = epoch_order(len(self.dataset), t.seed, epoch, self.device), epoch
                self._train_step(order, index_in_epoch)
                if t.on_nan == "stop" or len(self.losses.pending) > 256:  # read the previous step's loss, not
                    self.losses.read(keep_last=True)  # this one's: the GPU is busy with it
                self.step += 1
                window_steps += 1
                if self.planning:
                    self._plan(planner.after_step(self.step - first_step))
                    bar.total = None if self.planning else self.total_steps
                stopped, out_of_time = self._end_requested(stop, start)
                if self.step % t.log_every == 0 or self.step == self.total_steps or out_of_time:
                    self.losses.read()
                    now = time.perf_counter()
                    images_per_second = window_steps * t.batch_size / (now - window_start)
                    mean_loss = self.losses.window_mean()
                    self._log({"step": self.step, "epoch": epoch + 1, "loss": mean_loss,
                               "lr": self._learning_rate(self.step - 1),
                               "images_per_second": images_per_second, "skipped_steps": self.losses.skipped,
                               "elapsed_s": now - start})
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_second:.0f}")
                    window_start, window_steps = now, 0
                bar.update(1)
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
                if stopped:  # a signal: the final checkpoint below, without the epoch's grid or FD
                    break
                if self.step % self.report_every == 0 or self.step == self.total_steps:  # a report
                    if not t.checkpoint_every or self.step % t.checkpoint_every:
                        self.save()
                    epochs_done = self.step // self.steps_per_epoch
                    self._sample_grid(self._report_name())
                    if t.eval_every and epochs_done // t.eval_every > last_report_epoch // t.eval_every:
                        self._evaluate(epochs_done)
                    last_report_epoch = epochs_done
                if out_of_time:
                    break
        bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        path = self.save()
        wall = time.perf_counter() - start
        average_images_per_second = (self.step - first_step) * t.batch_size / wall if wall > 0 else 0.0
        if stopped and self.dist.is_main:
            print(f"stopped at step {self.step}; checkpoint written to {path}. "
                  f"Continue with: tinydiffusion train --resume {self.run_dir}")
        return TrainResult(self.run_dir, self.step, self.losses.last, average_images_per_second, wall, stopped,
                           self.dist.is_main)

    def _plan(self, planned: int | None) -> None:
        """Fix the run's length once the planner has measured the speed (rank 0's plan, for every process), and
        record it in config.json, so that a resumed run continues the same schedule."""
        if self.dist.world_size > 1:
            shared = torch.tensor([-1 if planned is None else planned], device=self.device)
            dist.broadcast(shared, 0)
            planned = None if shared.item() < 0 else int(shared.item())
        if planned is None:
            return
        self.planning, self.total_steps = False, planned
        self.config = dataclasses.replace(self.config, train=dataclasses.replace(
            self.config.train, planned_steps=planned, planned_at=self.step))
        if self.dist.is_main:
            atomic_write_bytes(self.run_dir / "config.json", self.config.to_json().encode())
            print(f"planned {planned} steps to end within the time budget of {budget_seconds(self.config.train):g} s")

    def _report_cost_in_steps(self) -> float:
        """About how many training steps' time one report's sampling takes: its grid, and its share of the FDs
        (eval_num images at 20 steps with guidance, every eval_every epochs)."""
        t = self.config.train
        fd = sampling_cost_in_steps(t.eval_num, 20, t.batch_size) if t.eval_every else 0.0
        reports_per_fd = max(1.0, t.eval_every * self.steps_per_epoch / self.report_every)
        return grid_cost_in_steps(t) + fd / reports_per_fd

    def _report_name(self) -> str:
        """A report's grid is named by its epoch where it falls on an epoch's end, else by its step."""
        epochs, within = divmod(self.step, self.steps_per_epoch)
        return f"epoch-{epochs:03d}" if within == 0 else f"step-{self.step:08d}"

    def _end_requested(self, stop: StopRequest, start: float) -> tuple[bool, bool]:
        """(a signal asked to stop, the time budget is spent), agreed by all processes in one collective, so none
        is left waiting alone. A run out of time ends as at its last step (final checkpoint; a run with max_steps
        keeps its LR schedule's length, so its decay is cut short). A planned run takes its planned steps: the plan
        is what fits the budget at the measured speed, and a resumed run takes them too."""
        t = self.config.train
        limit = 0.0 if t.planned_steps else budget_seconds(t)
        flags = [stop.requested, limit > 0 and time.perf_counter() - start >= limit]
        if self.dist.world_size == 1:
            return flags[0], flags[1]
        agreed = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(agreed)
        return bool(agreed[0] > 0), bool(agreed[1] > 0)

    def _write_run_files(self) -> None:
        """config.json and, on a resume, the run directory cut back to the step it continues from. Called
        under the run's lock: nothing is written to a run directory another process is writing to."""
        superseded = []
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self._resumed_from is not None:
                superseded = ckpt.continue_from(self.run_dir, self._resumed_from, self.step)
            if self.resume:
                self.metrics.drop_after(self.step)
            atomic_write_bytes(self.run_dir / "config.json", self.config.to_json().encode())
        except OSError as err:
            raise UserError(f"cannot write to the run directory {self.run_dir} ({err.strerror or err}).") from None
        if not self.resume:
            return
        if self._resumed_from is None:
            print(f"{self.run_dir} has no checkpoint yet; starting it afresh from step 0.")
            return
        later = ""
        if superseded:
            names = ", ".join(superseded)
            later = (f"; it supersedes the later checkpoint{'s' if len(superseded) > 1 else ''} {names} (set aside, "
                     f"deleted at the next checkpoint) and the metrics logged after step {self.step}")
        print(f"resuming {self.run_dir} from step {self.step} ({self._resumed_from.name}){later}")

    def _log(self, record: dict) -> None:
        if self.dist.is_main:
            self.metrics.write(record)

    def _sample_grid(self, name: str) -> None:
        t = self.config.train
        if not (self.dist.is_main and t.sample_every_epoch and t.sample_num > 0):
            return
        model = Model(self.ema.net, self.diffusion, self.config, self.run_dir)
        # DDIM at train.sample_steps; a student with its own sampler and steps (both at the default guidance)
        sampling = {} if self.config.distill.steps else {"sampler": "ddim",
                                                         "steps": min(t.sample_steps, self.diffusion.num_timesteps)}
        images, _ = generate(model, t.sample_num, seed=t.seed, **sampling)
        save_grid(images, self.run_dir / "samples" / f"{name}.png")
        if self.tensorboard is not None:
            self.tensorboard.image("samples", grid_image(images), self.step)

    def _evaluate(self, epoch: int) -> None:
        """At the report that passes each train.eval_every-th epoch: FD of train.eval_num samples of the EMA model
        (its default sampler, steps and guidance), one line of metrics.jsonl. At this small N it shows trends, not
        final scores."""
        t = self.config.train
        if self.evaluator is None:
            return
        started = time.perf_counter()
        model = Model(self.ema.net, self.diffusion, self.config, self.run_dir)
        sampler, steps, guidance = sampling_settings(model)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):  # resumes stay exact
            images, labels = generate(model, t.eval_num, sampler=sampler, steps=steps, guidance=guidance, seed=t.seed)
            result = self.evaluator.score(images, labels)
        scores = {key: result[key] for key in ("fd", "fd_floor", "precision", "recall", "class_accuracy")
                  if key in result}
        self._log({"step": self.step, "epoch": epoch, **scores, "eval_num": t.eval_num, "metric": result["metric"],
                   "sampler": f"{sampler}, {steps} steps, guidance {guidance}",
                   "eval_seconds": round(time.perf_counter() - started, 1)})
        print(f"epoch {epoch}: {result['metric']} {result['fd']:.3f} at N={t.eval_num} "
              f"(floor {result['fd_floor']:.3f}; small N, for trends only)")


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


def record_data(config: RunConfig, dataset: ImageDataset) -> RunConfig:
    """The config with what the run trains on written into it, so config.json says (and sampling knows)
    the data's size, shape, class names and the prepared array's hash."""
    manifest = dataset.manifest
    data = dataclasses.replace(config.data, num_images=len(dataset), image_shape=tuple(dataset.images.shape[1:]),
                               class_names=tuple(dataset.class_names) if dataset.labels is not None else (),
                               prepared_sha256=manifest.get("sha256", ""))
    return dataclasses.replace(config, data=data)


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
