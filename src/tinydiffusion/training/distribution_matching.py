"""Distribution matching: a few-step student whose images, noised, score like the teacher's data (DMD, Yin et al.
2024; DMD2, Yin et al. 2024b).

Where trajectory and consistency distillation (distillation.py) regress the student onto the teacher's paths, this
matches distributions. The student's image x, noised to a random level, x_t = alpha x + sigma eps, is denoised
twice: by the teacher with classifier-free guidance (the score of the data, guided) and by a critic, a copy of the
network trained alongside on the student's own images (the score of what the student draws). The gradient of the
reverse KL divergence between the two distributions, with respect to x, is their difference (DMD, eq. 7). In x0
terms:

    grad = (x0_critic - x0_teacher) / mean|x - x0_teacher|     (DMD, eq. 8; the normaliser per image)

and the student's loss is 0.5 ||x - stopgrad(x - grad)||^2, averaged over pixels. The critic's loss is the ordinary
diffusion loss on the student's (detached) images, so it tracks what the student draws.

The critic starts from the teacher's weights and takes the class and the guidance scale w, on which what the student
draws depends. Its first `distill.critic_warmup` steps train it alone (the student's loss is a zero with no gradient),
so the student is not pushed by a critic that has not yet seen it.

A K-step student's x is what it samples: its K DDIM steps from pure noise, with gradient through all of them, so the
distribution matched is the one `sample` draws. (DMD2, sec. 4.5, matches the x0 predicted at each step instead; a
critic blind to the step then matches only the mixture of the steps' outputs, not the final samples.)

There is no regression term: a student started from scratch would need one (DMD) or long training (DMD2). Start
it from a trajectory student of the same steps instead (`distill.init`), which this method then fine-tunes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..samplers import SAMPLERS, uniform_levels

# The range of the process's time t that the student's images are noised to for the loss (DMD, sec. 4.1: 0.02T
# to 0.98T); the ends, where both scores agree (t near 0) or see only noise (t near 1), carry no signal.
T_RANGE = (0.02, 0.98)


class DistributionMatching:
    def __init__(self, teacher: torch.nn.Module, critic: torch.nn.Module, diffusion, steps: int,
                 image_shape: tuple[int, int, int], guidance_range: tuple[float, float], num_classes: int,
                 critic_lr: float, critic_warmup: int):
        self.teacher, self.critic, self.diffusion, self.image_shape = teacher, critic, diffusion, image_shape
        self.num_classes, self.guidance_range, self.critic_warmup = num_classes, guidance_range, critic_warmup
        self.levels = uniform_levels(diffusion, steps)  # the student's K levels, then the clean image
        self.critic_optimizer = torch.optim.AdamW(critic.parameters(), lr=critic_lr, betas=(0.0, 0.99),
                                                  weight_decay=0.0)
        self.steps_taken = 0  # critic updates so far: the first critic_warmup leave the student alone

    @classmethod
    def from_config(cls, config, diffusion, device: torch.device) -> DistributionMatching:
        from .distillation import load_teacher, student_network

        d = config.distill
        teacher = load_teacher(config, device)
        critic = student_network(config, teacher.net).to(device).train()
        net = config.net
        return cls(teacher.net, critic, diffusion, d.steps, (net.in_channels, net.image_size, net.image_size),
                   (d.guidance_min, d.guidance_max), net.num_classes, d.critic_lr or config.train.lr, d.critic_warmup)

    def draw(self, batch: int, generator: torch.Generator, device) -> tuple[torch.Tensor, ...]:
        """Per image: its guidance scale, and the two times and noises at which the student's image is scored (the
        student's loss) and denoised (the critic's loss)."""
        low, high = self.guidance_range
        guidance = low + (high - low) * torch.rand(batch, generator=generator, device=device)
        lo, hi = T_RANGE
        score_time = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        score_noise = torch.randn((batch, *self.image_shape), generator=generator, device=device)
        critic_time = self.diffusion.draw_times(batch, generator, device)
        critic_noise = torch.randn((batch, *self.image_shape), generator=generator, device=device)
        return guidance, score_time, score_noise, critic_time, critic_noise

    def loss(self, model, x0: torch.Tensor, y: torch.Tensor | None, noise: torch.Tensor, guidance: torch.Tensor,
             score_time: torch.Tensor, score_noise: torch.Tensor, critic_time: torch.Tensor,
             critic_noise: torch.Tensor) -> torch.Tensor:
        """The student's loss; the critic takes its own step first, on this batch's images. The data's images x0
        are not used: the teacher stands for them."""
        if self.steps_taken < self.critic_warmup:  # the critic alone: the student is sampled without gradient
            with torch.no_grad():
                x = self._student_images(model, y, noise, guidance)
            self._critic_step(x, y, guidance, critic_time, critic_noise)
            return torch.zeros((), device=x.device, requires_grad=True)  # no gradient reaches the student
        x = self._student_images(model, y, noise, guidance)
        self._critic_step(x.detach(), y, guidance, critic_time, critic_noise)
        with torch.no_grad():
            alpha, sigma = self.diffusion.alpha_sigma(score_time, x)
            x_t = alpha * x + sigma * score_noise
            time = self.diffusion.network_time(score_time)
            teacher_x0 = self._teacher_x0(x_t, time, y, guidance, alpha, sigma)
            critic_x0 = self._x0(self.critic(x_t, time, y, guidance), x_t, alpha, sigma)
            normaliser = (x - teacher_x0).abs().flatten(1).mean(1).clamp_min(1e-5).view(-1, 1, 1, 1)
            target = x - (critic_x0 - teacher_x0) / normaliser
        return 0.5 * ((x.float() - target) ** 2).mean()

    def _student_images(self, model, y, noise, guidance) -> torch.Tensor:
        """The student's samples: samplers/ddim.py at its K levels from pure noise, the network run with gradient."""
        def denoise(x, t, alpha, sigma):
            times = torch.full((len(x),), float(t), device=x.device)
            return self.diffusion.eps_and_x0_from_output(model(x, times, y, guidance).float(), x, alpha, sigma)

        return SAMPLERS["ddim"].algorithm(denoise, noise, self.levels)

    def _critic_step(self, x, y, guidance, times, noise) -> None:
        """One AdamW step of the critic's diffusion loss on the student's images (gradients averaged over
        processes under torchrun, as DistributedDataParallel does for the student)."""
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss = self.diffusion.training_loss(lambda x_t, t, c: self.critic(x_t, t, c, guidance), x, times, noise, y)
        loss.backward()
        checked = loss.detach().clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(checked)  # non-finite on any process: every process skips the step
            for p in self.critic.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        if torch.isfinite(checked):
            self.critic_optimizer.step()
        self.steps_taken += 1

    def _teacher_x0(self, x_t, time, y, guidance, alpha, sigma) -> torch.Tensor:
        """The teacher's x0 with classifier-free guidance at each image's scale (Ho & Salimans 2022, eq. 6)."""
        if y is None:
            return self._x0(self.teacher(x_t, time, None), x_t, alpha, sigma)
        both = self.teacher(torch.cat([x_t, x_t]), torch.cat([time, time]),
                            torch.cat([y, torch.full_like(y, self.num_classes)]))
        cond, uncond = both.float().chunk(2)
        scale = guidance.view(-1, 1, 1, 1)
        return self._x0(uncond + scale * (cond - uncond), x_t, alpha, sigma)

    def _x0(self, output, x_t, alpha, sigma) -> torch.Tensor:
        return self.diffusion.eps_and_x0_from_output(output.float(), x_t, alpha, sigma)[1]

    # --- what a checkpoint keeps of the task (training/checkpoints.py), so a resume is bit-exact --------------

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict(),
                "critic_steps": torch.tensor(self.steps_taken)}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.steps_taken = int(state["critic_steps"])
