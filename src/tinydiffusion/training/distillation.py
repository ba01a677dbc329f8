"""Distillation: a student that samples in K network evaluations where its teacher's sampler takes many.

Two methods share everything but their targets. In both, x_i is a training image noised to a level L_i
(q(x_t | x0)), so the student learns on the true marginals with no full teacher trajectories to generate, and the
teacher's deterministic sampler runs on its own levels from L_i to a target level L_j.

- trajectory: L_i is one of the student's K levels and L_j the next. The student's one DDIM step from L_i must land
  where the teacher's steps land: progressive distillation's target (Salimans & Ho 2022, algorithm 2), taken in
  one round against the teacher's whole solver instead of halving the steps round after round. For a DDIM step
  from (alpha_i, sigma_i) to (alpha_j, sigma_j), the x0 that lands on the teacher's x_j is

      x0* = (x_j - (sigma_j / sigma_i) x_i) / (alpha_j - alpha_i sigma_j / sigma_i)     (Salimans & Ho, eq. 8)

  and x0* = x_j on the last step, to the clean image. The x0 error is weighted by 1 + SNR, the "SNR+1"
  weighting of Salimans & Ho (sec. 4), which is the v-objective's error. The student samples with DDIM at its K
  levels, and only there.
- consistency: L_i is any of the teacher's levels and L_j the clean image, so x0* is the end of the teacher's
  path from x_i: the consistency function of Song et al. 2023, regressed onto the teacher's full solve instead of
  their one-step bootstrap, with the x0 error unweighted. It samples with multistep consistency sampling
  (samplers/consistency.py) at any number of steps.

Guidance is folded in (Meng et al. 2023): the teacher runs with classifier-free guidance at a scale w drawn per
image, and the student takes w as an input, so one evaluation per step honours any scale in the learned range.

The teacher may itself be a trajectory student: it then walks its own K DDIM steps, one evaluation each with w as
its input, and a student of fewer steps learns to shortcut them. Rounds of this (20-step solver -> 4 -> 2 -> 1) are
progressive distillation proper (Salimans & Ho 2022, algorithm 2), each round's target a few cheap evaluations
instead of the whole guided solve.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch

from ..errors import UserError
from ..samplers import SAMPLERS, Denoiser, uniform_levels


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method: where each stretch of the teacher's path ends, how the student's x0 error is weighted,
    and the sampler the student samples with (recorded as distill.sampler)."""
    student_sampler: str
    to_clean: bool  # from every teacher level to the clean image (the student then takes any number of steps)
    snr_weighted: bool  # the x0 error weighted by 1 + SNR
    matches_distribution: bool = False  # no teacher paths: distribution_matching.py's task instead of Distillation


# The methods `distill.method` names; adding one is an entry here (and its target, if it is new, in Distillation).
DISTILL_METHODS = {
    "trajectory": DistillMethod("ddim", to_clean=False, snr_weighted=True),
    "consistency": DistillMethod("consistency", to_clean=True, snr_weighted=False),
    "dmd": DistillMethod("ddim", to_clean=False, snr_weighted=False, matches_distribution=True),
}


class Distillation:
    def __init__(self, teacher: torch.nn.Module, diffusion, steps: int, teacher_sampler: str, teacher_steps: int,
                 guidance_range: tuple[float, float], num_classes: int, method: str = "trajectory",
                 teacher_takes_guidance: bool = False):
        self.teacher, self.diffusion, self.method = teacher, diffusion, DISTILL_METHODS[method]
        self.teacher_takes_guidance = teacher_takes_guidance  # a student teacher: w is its input, one call a step
        self.num_classes, self.guidance_range = num_classes, guidance_range
        self.solve = SAMPLERS[teacher_sampler].algorithm
        teacher_levels = SAMPLERS[teacher_sampler].spacing(diffusion, teacher_steps)
        # Each stretch is the teacher's own levels from a start level to a target level; its sampler walks them.
        if self.method.to_clean:  # from every teacher level to the clean image
            self.stretches = [teacher_levels[i:] for i in range(len(teacher_levels) - 1)]
            return
        levels = uniform_levels(diffusion, steps)  # the student's K levels, then the clean image
        position = {level.t: i for i, level in enumerate(teacher_levels)}
        if any(level.t not in position for level in levels):
            raise UserError(f"the student's {steps} levels are not among the teacher's {teacher_steps}; choose "
                            "distill.teacher_steps as a multiple of the student's steps.")
        self.stretches = [teacher_levels[position[a.t]:position[b.t] + 1] for a, b in pairwise(levels)]

    @classmethod
    def from_config(cls, config, diffusion, device: torch.device) -> Distillation:
        d = config.distill
        teacher = load_teacher(config, device)
        return cls(teacher.net, diffusion, d.steps, d.teacher_sampler, d.teacher_steps,
                   (d.guidance_min, d.guidance_max), config.net.num_classes, d.method,
                   teacher_takes_guidance=teacher.config.net.guidance_input)

    def draw(self, batch: int, generator: torch.Generator, device) -> tuple[torch.Tensor, ...]:
        """Per image: which stretch it trains (the batch split evenly over them) and its guidance scale."""
        step = torch.arange(batch, device=device) * len(self.stretches) // batch
        low, high = self.guidance_range
        guidance = low + (high - low) * torch.rand(batch, generator=generator, device=device)
        return step, guidance

    def loss(self, model, x0: torch.Tensor, y: torch.Tensor | None, noise: torch.Tensor, step: torch.Tensor,
             guidance: torch.Tensor) -> torch.Tensor:
        # The teacher walks each stretch for the images drawn to it; the student then sees them all in one
        # forward pass (one per step, as DistributedDataParallel requires).
        parts = []
        for i, stretch in enumerate(self.stretches):
            chosen = (step == i).nonzero().squeeze(1)
            if len(chosen):
                parts.append(self._teacher_target(stretch, chosen, x0, y, noise, guidance))
        index, x_i, target, times, alpha, sigma, weight = (torch.cat(values) for values in zip(*parts, strict=True))
        output = model(x_i, times, None if y is None else y[index], guidance[index])
        _, predicted = self.diffusion.eps_and_x0_from_output(output.float(), x_i, alpha, sigma)
        return (weight * ((predicted - target) ** 2).flatten(1).mean(1)).mean()

    @torch.no_grad()
    def _teacher_target(self, stretch, chosen, x0, y, noise, guidance):
        """For the images `chosen` for this stretch: x_i on its first level, the x0 the student should predict
        there, and what the student's forward pass needs (time, alpha, sigma, loss weight), per image."""
        level, following = stretch[0], stretch[-1]
        x_i = level.alpha * x0[chosen] + level.sigma * noise[chosen]
        y_i = None if y is None else y[chosen]
        scale = guidance[chosen] if self.num_classes else 1.0
        teacher = Denoiser(self.teacher, self.diffusion, y_i, scale, null_class=self.num_classes,
                           guidance_input=self.teacher_takes_guidance)
        x_j = self.solve(teacher, x_i, stretch).float()
        if following.sigma == 0:
            target = x_j
        else:
            ratio = following.sigma / level.sigma
            target = (x_j - ratio * x_i) / (following.alpha - level.alpha * ratio)
        weight = 1 + (level.alpha / level.sigma) ** 2 if self.method.snr_weighted else 1.0

        def per_image(value: float, *shape: int) -> torch.Tensor:
            return torch.full((len(chosen), *shape), float(value), device=x_i.device)

        return (chosen, x_i, target, per_image(level.t), per_image(level.alpha, 1, 1, 1),
                per_image(level.sigma, 1, 1, 1), per_image(weight))


def load_teacher(config, device: torch.device):
    """A student's teacher (a pipeline Model, its network frozen), refused in one sentence if its weights changed
    since the distillation started (a resume) or its process differs from the student's."""
    from ..pipeline import load_model

    d = config.distill
    teacher = load_model(d.teacher, device=str(device))
    if d.teacher_sha256 and file_sha256(teacher.source) != d.teacher_sha256:
        raise UserError(f"the teacher {d.teacher} has changed since this student's distillation started; a resumed "
                        "run needs the same teacher. Start a new --run-dir to distill the new one.")
    if teacher.config.diffusion != config.diffusion:
        raise UserError(f"the teacher {d.teacher} has other diffusion settings than this student.")
    teacher.net.requires_grad_(False)
    return teacher


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def student_network(config, teacher_net: torch.nn.Module) -> torch.nn.Module:
    """The student's network, built from its config and started from the teacher's weights; only the guidance
    embedding is new (its output layer starts at zero: nets/layers.py), drawn from the run's seed as training's
    networks are, so one process and many start alike."""
    from ..nets import GUIDANCE_EMBEDDING, build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        student = build_network(config.net)
    missing, unexpected = student.load_state_dict(teacher_net.state_dict(), strict=False)
    if unexpected or any(not name.startswith(GUIDANCE_EMBEDDING) for name in missing):
        raise UserError("the student's network does not match its teacher's; it must be the same network.")
    return student


def starting_network(config, teacher_net: torch.nn.Module) -> torch.nn.Module:
    """The network a new student starts from: its teacher's weights (student_network), or those of the student that
    distill.init names, which must take the same steps on the same network and process."""
    from ..pipeline import load_model

    init = config.distill.init
    if not init:
        return student_network(config, teacher_net)
    start = load_model(init, device="cpu")
    given = start.config
    if (given.distill.steps != config.distill.steps or given.distill.method == "consistency"
            or given.net != config.net or given.diffusion != config.diffusion):
        raise UserError(f"{init} is not a trajectory or dmd student of {config.distill.steps} step(s) with this "
                        "student's network and process; distill.init must be one.")
    return student_network(config, start.net)


def student_config(teacher, teacher_weights: Path, overrides: dict):
    """A student's RunConfig: its teacher's network (taking the guidance scale, for a class-conditional
    teacher), process and data, the training defaults of defaults.STUDENT_TRAINING (and STUDENT_GUIDANCE_LR for a
    guidance embedding that starts at zero), what it is distilled from, and `overrides` (dotted names, as the
    command line gives them); its sampler follows from the method.

    A trajectory student may teach: the new student then shortcuts its K DDIM steps (by default in K // 2 steps, a
    round of progressive distillation) over the guidance scales it learned."""
    import dataclasses

    from ..config import DistillConfig, RunConfig, TrainConfig, apply_overrides
    from ..defaults import STUDENT_GUIDANCE_LR, STUDENT_TRAINING

    cfg, taught = teacher.config, teacher.config.distill  # taught: the teacher's own distillation, if a student
    if taught.steps and taught.method != "trajectory":
        raise UserError(f"{teacher_weights} is a {taught.method} student, whose steps are not a path to shortcut; "
                        f"distill from a trajectory student or from its teacher ({taught.teacher}).")
    net = dataclasses.replace(cfg.net, guidance_input=cfg.net.num_classes > 0)
    data = dataclasses.replace(cfg.data, prepared_sha256="")  # the student records the data it is given
    distill = DistillConfig(teacher=str(Path(teacher_weights).resolve()), steps=4,
                            teacher_sha256=file_sha256(teacher_weights))
    if taught.steps:
        distill = dataclasses.replace(distill, steps=max(1, taught.steps // 2), teacher_sampler="ddim",
                                      teacher_steps=taught.steps, guidance_min=taught.guidance_min,
                                      guidance_max=taught.guidance_max)
    if cfg.net.num_classes == 0:  # no guidance to fold in
        distill = dataclasses.replace(distill, guidance_min=1.0, guidance_max=1.0)
    train = dataclasses.replace(TrainConfig(), seed=cfg.train.seed, **STUDENT_TRAINING)
    name = cfg.name.rsplit("-student-", 1)[0] if taught.steps else cfg.name
    config = RunConfig(name=name, net=net, diffusion=cfg.diffusion, train=train, data=data, distill=distill)
    config = apply_overrides(config, overrides)
    if taught.steps:
        if config.distill.method == "dmd":
            raise UserError(f"{teacher_weights} is a {taught.steps}-step student, but the dmd method needs a diffusion "
                            f"model to score the student's images: give its teacher ({taught.teacher}) as --teacher "
                            "and a student to start from as --distill.init.")
        check_student_teacher(config.distill, taught, teacher_weights)
    method = DISTILL_METHODS.get(config.distill.method)
    distill = dataclasses.replace(config.distill, sampler=method.student_sampler if method else "")
    if distill.init:
        distill = dataclasses.replace(distill, init=str(Path(distill.init).resolve()))
    # Only a guidance embedding that starts at zero needs its own rate: one from a student teacher or from
    # distill.init has learned already.
    if "distill.guidance_lr" not in overrides and net.guidance_input and not taught.steps and not distill.init:
        distill = dataclasses.replace(distill, guidance_lr=STUDENT_GUIDANCE_LR)
    return dataclasses.replace(config, name=f"{name}-student-{distill.steps}", distill=distill)


def check_student_teacher(distill, taught, teacher_weights: Path) -> None:
    """A student teacher has only its own K DDIM steps and the guidance scales it learned: refuse, in one sentence,
    a distillation that asks it for more."""
    where = f"{teacher_weights} is a {taught.steps}-step student"
    if (distill.teacher_sampler, distill.teacher_steps) != ("ddim", taught.steps):
        raise UserError(f"{where} and walks only its own {taught.steps} DDIM steps; drop --distill.teacher_sampler "
                        "and --distill.teacher_steps.")
    if distill.steps >= taught.steps:
        raise UserError(f"{where}; its student must take fewer steps (--steps).")
    if not taught.guidance_min <= distill.guidance_min <= distill.guidance_max <= taught.guidance_max:
        raise UserError(f"{where} that learned guidance scales from {taught.guidance_min:g} to "
                        f"{taught.guidance_max:g}; keep --distill.guidance_min and --distill.guidance_max within "
                        "them.")
