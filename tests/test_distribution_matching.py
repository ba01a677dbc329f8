"""Distribution matching (distill.method dmd): the loss alone moves a student's distribution onto an analytic
teacher's data; the critic is checkpointed so a resume is bit-identical; the method and starting student are in
config.json; bad input is one sentence."""

import pytest
import torch
from conftest import cli, files_of
from test_distill import AffineStudent, resumed_after_step_2
from torch import nn

from tinydiffusion.checkpoint import load_config, load_training_state
from tinydiffusion.config import DiffusionConfig
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.samplers import SAMPLERS, uniform_levels
from tinydiffusion.samplers.denoiser import Denoiser
from tinydiffusion.training.distribution_matching import DistributionMatching

MEAN, STD = 0.3, 0.25


class GaussianDenoiser(nn.Module):
    """The exact denoiser of data ~ N(mean, std^2) per pixel, as a v-predicting network, at any time the process
    interpolates. Its mean and log std are parameters: fixed, it is the teacher; trained by the diffusion loss on
    the student's images, it is a critic that can represent the student's distribution exactly."""

    def __init__(self, diffusion, mean: float, std: float):
        super().__init__()
        self.diffusion = diffusion
        self.mean = nn.Parameter(torch.tensor(float(mean)))
        self.log_std = nn.Parameter(torch.tensor(float(std)).log())

    def forward(self, x, t, y=None, guidance=None):
        alpha, sigma = self.diffusion.alpha_sigma(self.diffusion.step_time(t.double()), x)
        var = self.log_std.exp() ** 2
        x0 = self.mean + alpha * var / (alpha**2 * var + sigma**2) * (x - alpha * self.mean)
        return (alpha * x - x0) / sigma  # v = (alpha x_t - x0) / sigma


def match_analytic(steps: int, batches: int = 1000):
    """An affine student, started as N(0, 1) per pixel, trained by the dmd loss alone against the Gaussian
    teacher, with a Gaussian critic that starts as the teacher (as a real critic does)."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", objective="v"))
    teacher = GaussianDenoiser(diffusion, MEAN, STD).requires_grad_(False)
    critic = GaussianDenoiser(diffusion, MEAN, STD)
    task = DistributionMatching(teacher, critic, diffusion, steps, (1, 2, 2), (1.0, 1.0), num_classes=0,
                                critic_lr=0.05, critic_warmup=20)
    student = AffineStudent(diffusion, uniform_levels(diffusion, steps))
    with torch.no_grad():
        student.a.fill_(1.0)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(batches):
        noise = torch.randn(1024, 1, 2, 2, generator=generator)
        optimizer.zero_grad()
        task.loss(student, None, None, noise, *task.draw(len(noise), generator, "cpu")).backward()
        optimizer.step()
    return diffusion, student, critic


@pytest.mark.parametrize("steps", [1, 2])
def test_the_loss_alone_moves_a_students_distribution_onto_the_teachers_data(steps):
    """From N(0, 1) the student's DDIM samples reach the data's N(0.3, 0.25^2): mean within 0.02, std within 8%,
    and the critic has followed the student there."""
    diffusion, student, critic = match_analytic(steps)
    noise = torch.randn(8000, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = SAMPLERS["ddim"](Denoiser(student, diffusion), noise, diffusion, steps)
    assert samples.mean().item() == pytest.approx(MEAN, abs=0.02)
    assert samples.std().item() == pytest.approx(STD, rel=0.08)
    assert critic.mean.item() == pytest.approx(MEAN, abs=0.03)
    assert critic.log_std.exp().item() == pytest.approx(STD, rel=0.1)


def test_the_student_is_left_alone_while_the_critic_warms_up():
    """For the warm-up's 5 steps the student's loss is zero and gives it no gradient, while the critic moves; the
    sixth step trains the student."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", objective="v"))
    teacher = GaussianDenoiser(diffusion, MEAN, STD).requires_grad_(False)
    critic = GaussianDenoiser(diffusion, MEAN, STD)
    task = DistributionMatching(teacher, critic, diffusion, 1, (1, 2, 2), (1.0, 1.0), num_classes=0,
                                critic_lr=0.05, critic_warmup=5)
    student = AffineStudent(diffusion, uniform_levels(diffusion, 1))
    with torch.no_grad():
        student.a.fill_(1.0)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(6):
        noise = torch.randn(256, 1, 2, 2, generator=generator)
        student.zero_grad()
        loss = task.loss(student, None, None, noise, *task.draw(len(noise), generator, "cpu"))
        loss.backward()
        losses.append((loss.item(), 0.0 if student.b.grad is None else student.b.grad.abs().sum().item()))
    assert all(value == 0 and grad == 0 for value, grad in losses[:5]) and losses[5][1] > 0
    assert critic.mean.item() < MEAN - 0.05  # drawn towards the student's mean 0


@pytest.fixture(scope="module")
def dmd_run(trained_run, tiny_data_dir, tmp_path_factory):
    """A 2-step dmd student of the smoke run, started from a 2-step trajectory student of it; 4 steps, a checkpoint
    every 2, the first step training the critic alone."""
    from tinydiffusion.cli import main

    root = tmp_path_factory.mktemp("dmd")
    common = ["--teacher", str(trained_run), "--steps", "2", "--data-dir", str(tiny_data_dir), "--batch-size", "8",
              "--no-progress", "--train.threads", "1", "--train.sample_every_epoch", "false"]
    start = root / "trajectory"
    assert main(["distill", *common, "--run-dir", str(start), "--max-steps", "1", "--distill.teacher_steps", "4"]) == 0
    run = root / "dmd"
    assert main(["distill", *common, "--run-dir", str(run), "--distill.method", "dmd", "--distill.init", str(start),
                 "--max-steps", "4", "--checkpoint-every", "2", "--keep", "5", "--distill.critic_warmup", "1"]) == 0
    return run, start


def test_a_dmd_student_records_its_method_and_start_and_samples_in_its_steps(dmd_run):
    from tinydiffusion.pipeline import generate, load_model

    run, start = dmd_run
    config = load_config(run / "config.json")
    assert (config.distill.method, config.distill.steps, config.distill.sampler) == ("dmd", 2, "ddim")
    assert config.distill.init == str(start.resolve()) and config.distill.critic_warmup == 1
    assert config.distill.guidance_lr == 0  # its start's guidance embedding learned already: train.lr
    model = load_model(run, device="cpu")
    calls = []
    model.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images, _ = generate(model, 3, guidance=2)
    assert images.shape == (3, 1, 28, 28) and calls == [3, 3]
    state = load_training_state(run / "checkpoints" / "step-00000004")
    assert int(state["task"]["critic_steps"]) == 4 and "critic_optimizer" in state["task"]


def test_a_dmd_distillation_resumes_bit_identically(dmd_run, tmp_path):
    """Killed after step 2: the resumed run restores the critic and its optimizer with the student, and its step-4
    weights equal the uninterrupted run's."""
    run, _ = dmd_run
    crashed, (uninterrupted, resumed) = resumed_after_step_2(run, tmp_path)
    for name, a in uninterrupted.items():
        assert a.keys() == resumed[name].keys() and all(torch.equal(a[k], resumed[name][k]) for k in a), name
    critic = [load_training_state(r / "checkpoints" / "step-00000004")["task"]["critic"] for r in (run, crashed)]
    assert all(torch.equal(critic[0][k], critic[1][k]) for k in critic[0])


def test_dmd_refuses_bad_input_in_one_sentence(dmd_run, trained_run, tiny_data_dir, capsys, tmp_path):
    run, start = dmd_run
    common = ["--data-dir", tiny_data_dir, "--run-dir", tmp_path / "new", "--no-progress", "--max-steps", "1",
              "--distill.method", "dmd"]
    cases = [
        (["--teacher", start, "--steps", "1"], "needs a diffusion model to score the student's images"),
        (["--teacher", trained_run, "--steps", "1", "--distill.init", start],
         "is not a trajectory or dmd student of 1"),
        (["--teacher", trained_run, "--steps", "2", "--distill.init", tmp_path / "missing"], "does not exist"),
        # refused before the data is read: here the data is missing too
        (["--teacher", trained_run, "--steps", "2", "--distill.init", tmp_path / "missing", "--data",
          tmp_path / "no-data"], "missing does not exist"),
        (["--teacher", trained_run, "--steps", "2", "--distill.critic_lr", "-1"], "distill.critic_lr must be"),
        (["--teacher", trained_run, "--steps", "2", "--distill.method", "consistency", "--distill.init", start],
         "distill.init starts a trajectory or dmd student"),
    ]
    before = files_of(run), files_of(start)
    for flags, expected in cases:
        code, _, err = cli(capsys, "distill", *common, *flags)
        assert code == 2 and expected in err and "Traceback" not in err, (flags, err)
    assert not (tmp_path / "new").exists()
    assert (files_of(run), files_of(start)) == before
