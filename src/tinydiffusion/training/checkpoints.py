"""A run in training, saved and restored: its weights, EMA, optimizer, generators and loss window, so that a resumed
run takes exactly the steps the uninterrupted one would have; and the run directory's files on a start or a resume
(config.json, the checkpoints and metrics a resume from an older checkpoint supersedes).

The files themselves, written crash-safe, are checkpoint.py's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .. import checkpoint as ckpt
from ..errors import UserError
from ..files import atomic_write_bytes
from .budget import Plan
from .state import RunState


@dataclass
class Checkpoints:
    run: RunState
    resumed_from: Path | None = None  # the checkpoint this run continues from; None: from step 0
    saved_step: int | None = None  # the step whose checkpoint is on disk already
    spent: float = 0.0  # the time budget's seconds spent up to the checkpoint restored (budget.py)

    def restore(self, checkpoint: Path | None) -> None:
        """Load the checkpoint a resume continues from (default: the latest) into the run; a run with none yet (it
        stopped before its first) starts afresh. The run's config takes the time budget's plan the checkpoint was
        saved under (none, for one from before the plan)."""
        run, run_dir = self.run, self.run.run_dir
        if checkpoint is not None and Path(checkpoint).parent.resolve() != (run_dir / ckpt.CHECKPOINTS).resolve():
            raise UserError(f"{checkpoint} is not a checkpoint of the run {run_dir}.")
        found = Path(checkpoint) if checkpoint is not None else ckpt.latest_checkpoint(run_dir)
        if found is None:
            if not (run_dir / "config.json").is_file():
                raise UserError(f"{run_dir} is not a run directory (it has no config.json).")
            return
        state = ckpt.load_training_state(found)  # its step is checked there
        ckpt.load_into(run.net, ckpt.load_weights(found / ckpt.MODEL_FILE), found / ckpt.MODEL_FILE)
        ckpt.load_into(run.ema.net, ckpt.load_weights(found / ckpt.EMA_FILE), found / ckpt.EMA_FILE)
        try:
            run.optimizer.load_state_dict(state["optimizer"])
            self._match_optimizer_to_options()
            run.generator.set_state(state["generator"].to(run.generator.get_state().device))
            torch.set_rng_state(state["torch_rng"])
            if run.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], run.device)
            run.losses.load_state(state)
            step = state["step"]
            spent = float(state.get("budget_spent_s", 0.0))  # none in a checkpoint from before the budget's clock
            if not 0 <= spent < 1e9:
                raise ValueError(f"the budget's time spent is {spent}")
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as err:
            raise UserError(f"{found} holds a training state that does not fit this run ({err}).") from None
        self.resumed_from, self.saved_step, self.spent = found, step, spent
        plan = Plan.of(ckpt.load_config(found / ckpt.CONFIG_FILE).train)
        run.config = dataclasses.replace(run.config, train=plan.recorded_in(run.config.train))
        run.step = step

    def _match_optimizer_to_options(self) -> None:
        """A loaded optimizer state carries the saving run's implementation flags; this run's options win, so a
        run started without fused AdamW can resume with it and back. (A run saved by the CUDA-graph step, removed
        in issue 47, held its learning rates as tensors and its AdamW capturable: both are undone here.)"""
        run = self.run
        fused = run.options["fused_adamw"]
        for group in run.optimizer.param_groups:
            group.update(lr=float(group["lr"]), fused=fused, capturable=False,
                         foreach=None if fused else group.get("foreach"))
        step_device = run.device if fused else "cpu"
        for param_state in run.optimizer.state.values():
            if "step" in param_state:
                param_state["step"] = param_state["step"].to(dtype=torch.float32, device=step_device)

    def save(self, spent: float = 0.0) -> Path | None:
        """Write the checkpoint of the run's step (rank 0; every process waits for it) and return its directory;
        `spent`: the time budget's seconds spent so far."""
        run, step = self.run, self.run.step
        run.losses.read()  # a non-finite loss under on_nan "stop" ends the run before this save
        if step == self.saved_step:  # an epoch end and the end of the run often fall on the same step
            return ckpt.latest_checkpoint(run.run_dir) if run.dist.is_main else None
        path = None
        if run.dist.is_main:
            state = {
                "step": step,
                "optimizer": run.optimizer.state_dict(),
                "generator": run.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "budget_spent_s": float(spent),
                **run.losses.state(),
            }
            if run.device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(run.device)
            try:
                path = ckpt.save_checkpoint(run.run_dir, step, run.config, ckpt.plain_state_dict(run.net),
                                            ckpt.plain_state_dict(run.ema.net), state, run.config.train.keep)
            except OSError as err:
                raise UserError(f"could not write a checkpoint to {run.run_dir} ({err.strerror or err}); "
                                "the previous checkpoint is untouched. Free some space or choose another "
                                "--run-dir.") from None
        if run.dist.world_size > 1:
            dist.barrier()
        self.saved_step = step
        return path

    def write_run_files(self, resume: bool) -> None:
        """config.json and, on a resume, the run directory cut back to the step it continues from. Called
        under the run's lock: nothing is written to a run directory another process is writing to."""
        superseded, step, config = [], self.run.step, self.run.config
        try:
            self.run.run_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed_from is not None:
                superseded = ckpt.continue_from(self.run.run_dir, self.resumed_from, step)
            if resume:
                self.run.metrics.drop_after(step)
            atomic_write_bytes(self.run.run_dir / "config.json", config.to_json().encode())
        except OSError as err:
            raise UserError(f"cannot write to the run directory {self.run.run_dir} ({err.strerror or err}).") from None
        if not resume:
            return
        if self.resumed_from is None:
            print(f"{self.run.run_dir} has no checkpoint yet; starting it afresh from step 0.")
            return
        later = ""
        if superseded:
            names = ", ".join(superseded)
            later = (f"; it supersedes the later checkpoint{'s' if len(superseded) > 1 else ''} {names} (set aside, "
                     f"deleted at the next checkpoint) and the metrics logged after step {step}")
        print(f"resuming {self.run.run_dir} from step {step} ({self.resumed_from.name}){later}")
