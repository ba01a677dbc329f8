"""Distillation: a student that samples in K network evaluations where its teacher's sampler takes many.

The trajectory method: x_i is a training image noised to one of the student's K levels L_i (q(x_t | x0)), so the
student learns on the true marginals with no full teacher trajectories to generate, and the teacher's deterministic
sampler runs on its own levels from L_i to the student's next level L_j. The student's one DDIM step from L_i must
land where the teacher's steps land: progressive distillation's target (Salimans & Ho 2022, algorithm 2), taken in
one round against the teacher's whole solver. For a DDIM step from (alpha_i, sigma_i) to (alpha_j, sigma_j), the x0
that lands on the teacher's x_j is

    x0* = (x_j - (sigma_j / sigma_i) x_i) / (alpha_j - alpha_i sigma_j / sigma_i)     (Salimans & Ho, eq. 8)

and x0* = x_j on the last step, to the clean image. The x0 error is weighted by 1 + SNR, the "SNR+1" weighting of
Salimans & Ho (sec. 4). The student samples with DDIM at its K levels, and only there.

(The consistency method, whose target was the end of the teacher's path from any of its levels, is no longer
trained: distill_methods.py. Its students still sample, with samplers/consistency.py.)

Guidance is folded in (Meng et al. 2023): the teacher runs with classifier-free guidance at a scale w drawn per
image, and the student takes w as an input, so one evaluation per step honours any scale in the learned range.
The teacher may itself be a trajectory student, walking its own K DDIM steps: rounds of this (20-step solver -> 4
-> 2 -> 1) are progressive distillation proper, each round's target a few cheap evaluations.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from ..errors import UserError
from ..files import sha256_file
from ..samplers import SAMPLERS, uniform_levels
from ..samplers.denoiser import Denoiser


class Distillation:
    def __init__(self, teacher: torch.nn.Module, diffusion, steps: int, teacher_sampler: str, teacher_steps: int,
                 guidance_range: tuple[float, float], num_classes: int, teacher_takes_guidance: bool = False):
        self.teacher, self.diffusion = teacher, diffusion
        self.teacher_takes_guidance = teacher_takes_guidance  # a student teacher: w is its input, one call a step
        self.num_classes, self.guidance_range = num_classes, guidance_range
        self.solve = SAMPLERS[teacher_sampler].algorithm
        teacher_levels = SAMPLERS[teacher_sampler].spacing(diffusion, teacher_steps)
        # Each stretch: the teacher's own levels from one of the student's levels to the next, for its sampler.
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
                   (d.guidance_min, d.guidance_max), config.net.num_classes,
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
        weight = 1 + (level.alpha / level.sigma) ** 2

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
    if d.teacher_sha256 and sha256_file(teacher.source) != d.teacher_sha256:
        raise UserError(f"the teacher {d.teacher} has changed since this student's distillation started; a resumed "
                        "run needs the same teacher. Start a new --run-dir to distill the new one.")
    if teacher.config.diffusion != config.diffusion:
        raise UserError(f"the teacher {d.teacher} has other diffusion settings than this student.")
    teacher.net.requires_grad_(False)
    return teacher


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
        raise UserError(f"{init} is not a trajectory student of {config.distill.steps} step(s) with this "
                        "student's network and process; distill.init must be one.")
    return student_network(config, start.net)


