"""Distillation: the student's target against an analytic teacher, resume, its config, sampling with it, bad input,
a student started from another (distill.init), and the students of the removed consistency and dmd methods."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_error, cli, files_of, one_sentence
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from tinydiffusion import UserError
from tinydiffusion.bundled import bundled
from tinydiffusion.checkpoint import latest_checkpoint, load_config
from tinydiffusion.config import DiffusionConfig, RunConfig
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.pipeline import generate, load_model, sampling_settings
from tinydiffusion.presets import STUDENT_GUIDANCE_LR
from tinydiffusion.samplers import SAMPLERS, uniform_levels
from tinydiffusion.samplers.denoiser import Denoiser
from tinydiffusion.training.distillation import Distillation
from tinydiffusion.training.tasks import task_for

MEAN, STD = 0.3, 0.25


class AnalyticTeacher(nn.Module):
    """The exact denoiser of data ~ N(MEAN, STD^2) per pixel, as a v-predicting network: the best teacher there
    is, whose probability-flow ODE is known in closed form."""

    def __init__(self, diffusion, mean=MEAN, std=STD):
        super().__init__()
        self.alphas_cumprod, self.mean, self.std = diffusion.alphas_cumprod, mean, std

    def forward(self, x, t, y=None, guidance=None):
        ab = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        mean, var = self.mean, self.std**2
        x0 = mean + alpha * var / (alpha**2 * var + sigma**2) * (x.double() - alpha * mean)
        return ((alpha * x - x0) / sigma).float()  # v = (alpha x_t - x0) / sigma


class AffineStudent(nn.Module):
    """x0 = a_k x + b_k at each of the student's levels k (output as v): it can represent the exact step map."""

    def __init__(self, diffusion, levels):
        super().__init__()
        self.index = {level.t: k for k, level in enumerate(levels[:-1])}
        self.alphas_cumprod = diffusion.alphas_cumprod
        self.a = nn.Parameter(torch.zeros(len(self.index)))
        self.b = nn.Parameter(torch.zeros(len(self.index)))

    def forward(self, x, t, y=None, guidance=None):
        k = torch.tensor([self.index[float(v)] for v in t])
        ab = self.alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        x0 = self.a[k].view(-1, 1, 1, 1) * x + self.b[k].view(-1, 1, 1, 1)
        return (alpha * x - x0) / sigma


def distil_analytic(steps: int, teacher_steps: int = 40, batches: int = 300, mean=MEAN, std=STD, teacher=None):
    """An affine student trained by the distillation loss alone (Adam on batches of N(mean, std^2) data), from the
    analytic teacher's DPM-Solver++(2M) path, or from `teacher`, a trajectory student of `teacher_steps` DDIM steps."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", objective="v"))
    solver = "dpmpp-2m" if teacher is None else "ddim"
    teacher = AnalyticTeacher(diffusion, mean, std) if teacher is None else teacher
    task = Distillation(teacher, diffusion, steps, solver, teacher_steps, (1.0, 1.0), num_classes=0,
                        teacher_takes_guidance=solver == "ddim")
    student = AffineStudent(diffusion, uniform_levels(diffusion, steps))
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for i in range(batches):
        x0 = mean + std * torch.randn(1024, 1, 2, 2, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = 0.05 * (1 - i / batches) + 1e-4
        optimizer.zero_grad()
        task.loss(student, x0, None, noise, *task.draw(len(x0), generator, "cpu")).backward()
        optimizer.step()
    return diffusion, teacher, student


@pytest.mark.parametrize("steps", [1, 2])
def test_a_student_of_an_analytic_teacher_matches_the_teachers_ode_solution(steps):
    """A student's deterministic steps land where the teacher's DPM-Solver++(2M) lands from the same noise,
    within 0.01 (4% of the data's std)."""
    diffusion, teacher, student = distil_analytic(steps)
    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ode = SAMPLERS["dpmpp-2m"](Denoiser(teacher, diffusion), noise, diffusion, 40)
        distilled = SAMPLERS["ddim"](Denoiser(student, diffusion), noise, diffusion, steps)
        untrained = SAMPLERS["ddim"](Denoiser(teacher, diffusion), noise, diffusion, steps)
    assert (distilled - ode).abs().max().item() < 0.01
    # The teacher's own few steps miss the ODE solution by far more: the student learned something.
    assert (untrained - ode).abs().max().item() > 0.05


def test_rounds_of_progressive_distillation_land_on_the_teachers_ode_solution():
    """A 4-step student of the analytic teacher teaches a 2-step student, which teaches a 1-step one (each student
    taking the guidance input, as a real student does); each round's DDIM steps land where the teacher's 40-step
    DPM-Solver++(2M) does from the same noise, the error of one round carried into the next staying small."""
    diffusion, teacher, four = distil_analytic(4)
    _, _, two = distil_analytic(2, teacher_steps=4, teacher=four)
    _, _, one = distil_analytic(1, teacher_steps=2, teacher=two)
    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ode = SAMPLERS["dpmpp-2m"](Denoiser(teacher, diffusion), noise, diffusion, 40)
        errors = [(SAMPLERS["ddim"](Denoiser(student, diffusion, guidance_input=True), noise, diffusion, k) - ode)
                  .abs().max().item() for k, student in ((4, four), (2, two), (1, one))]
        untrained = SAMPLERS["ddim"](Denoiser(teacher, diffusion), noise, diffusion, 1)
    assert max(errors) < 0.005, errors
    assert (untrained - ode).abs().max().item() > 0.05  # the teacher's own one step misses by far more


class AnalyticConsistencyStudent(nn.Module):
    """The exact consistency function of data ~ N(mean, std^2) per pixel, as a v-predicting network: from x_t, the
    end of the probability-flow ODE's path, x0 = mean + std (x_t - alpha mean) / sqrt(alpha^2 std^2 + sigma^2).
    What a perfectly trained consistency student (a method no longer trained: distill_methods.py) would output."""

    def __init__(self, diffusion, mean, std):
        super().__init__()
        self.alphas_cumprod, self.mean, self.std = diffusion.alphas_cumprod, mean, std

    def forward(self, x, t, y=None, guidance=None):
        ab = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        x0 = self.mean + self.std * (x.double() - alpha * self.mean) / (alpha**2 * self.std**2 + sigma**2).sqrt()
        return ((alpha * x - x0) / sigma).float()


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_multistep_consistency_sampling_draws_the_datas_distribution(steps):
    """The consistency sampler, with which old consistency students still sample: each step's estimate noised
    afresh to the next level lies on the true marginal, so with the exact consistency function any number of
    steps draws the data's N(0.1, 0.5^2), mean within 0.01 and spread within 3%."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", objective="v"))
    student = AnalyticConsistencyStudent(diffusion, mean=0.1, std=0.5)
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(8000, 1, 2, 2, generator=generator)
    with torch.no_grad():
        x0 = SAMPLERS["consistency"](Denoiser(student, diffusion), noise, diffusion, steps, generator=generator)
    assert x0.mean().item() == pytest.approx(0.1, abs=0.01)
    assert x0.std().item() == pytest.approx(0.5, rel=0.03)


def test_the_distillation_target_is_the_teachers_landing_point():
    """One DDIM step with the x0 the loss regresses to lands exactly on the teacher's solution (Salimans & Ho,
    eq. 8): checked by evaluating the loss of a student that outputs that very x0."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", objective="v"))
    teacher = AnalyticTeacher(diffusion)
    task = Distillation(teacher, diffusion, 4, "ddim", 8, (1.0, 1.0), num_classes=0)
    generator = torch.Generator().manual_seed(1)
    x0 = MEAN + STD * torch.randn(64, 1, 2, 2, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    step, guidance = task.draw(64, generator, "cpu")

    class Oracle(nn.Module):  # outputs, at each level, the v whose x0 makes the DDIM step land on the teacher
        def forward(self, x, t, y=None, guidance=None):
            out = torch.empty_like(x)
            for stretch in task.stretches:
                here = t == stretch[0].t
                level, following = stretch[0], stretch[-1]
                x_i = x[here]
                x_j = SAMPLERS["ddim"].algorithm(Denoiser(teacher, diffusion), x_i, stretch)
                ratio = following.sigma / level.sigma
                target = x_j if following.sigma == 0 else (x_j - ratio * x_i) / (following.alpha - level.alpha * ratio)
                out[here] = (level.alpha * x_i - target) / level.sigma
            return out

    assert task.loss(Oracle(), x0, None, noise, step, guidance).item() < 1e-9
    assert task.loss(teacher, x0, None, noise, step, guidance).item() > 1e-4


def distil_smoke_run(trained_run, tiny_data_dir, run, *flags: str):
    """A 2-step student of the smoke run in `run`: 4 steps of distillation with a checkpoint every 2, and `flags`."""
    from tinydiffusion.cli import main

    assert main(["distill", "--teacher", str(trained_run), "--steps", "2", "--data-dir", str(tiny_data_dir),
                 "--run-dir", str(run), "--max-steps", "4", "--checkpoint-every", "2", "--keep", "5",
                 "--batch-size", "8", "--no-progress", "--train.threads", "1", "--train.sample_every_epoch", "false",
                 "--distill.teacher_steps", "4", *flags]) == 0
    return run


@pytest.fixture(scope="module")
def student_run(trained_run, tiny_data_dir, tmp_path_factory):
    """A 2-step student of the smoke run at the defaults."""
    return distil_smoke_run(trained_run, tiny_data_dir, tmp_path_factory.mktemp("student") / "student")


def as_consistency(config: dict) -> dict:
    """A student's config as the consistency method wrote it: that method, sampling with its own sampler."""
    config["distill"].update(method="consistency", sampler="consistency")
    return config


@pytest.fixture(scope="module")
def consistency_student(student_run, tmp_path_factory):
    """The student_run's last checkpoint with its config made a consistency student's (a method no longer trained,
    whose students still load and sample)."""
    student = tmp_path_factory.mktemp("consistency") / "student"
    shutil.copytree(latest_checkpoint(student_run), student)
    config_file = student / "config.json"
    config_file.write_text(json.dumps(as_consistency(json.loads(config_file.read_text())), indent=2))
    return student


def resumed_after_step_2(run, tmp_path):
    """A copy of a finished 4-step distillation killed after its step-2 checkpoint, resumed to the end; returns the
    copy and the two step-4 checkpoints' (model, EMA) weights, the uninterrupted run's first."""
    from tinydiffusion.cli import main

    crashed = tmp_path / "crashed"
    shutil.copytree(run, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step-00000004")
    (crashed / "checkpoints" / "latest").write_text("step-00000002\n")
    assert main(["distill", "--resume", str(crashed), "--no-progress"]) == 0
    weights = [{name: load_file(str(r / "checkpoints" / "step-00000004" / name))
                for name in ("model.safetensors", "ema.safetensors")} for r in (run, crashed)]
    return crashed, weights


def test_distillation_resumes_bit_identically(student_run, tmp_path):
    _, (uninterrupted, resumed) = resumed_after_step_2(student_run, tmp_path)
    for name, a in uninterrupted.items():
        b = resumed[name]
        assert a.keys() == b.keys() and any("guidance_mlp" in k for k in a)
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.fixture(scope="module")
def fast_guidance_run(trained_run, tiny_data_dir, tmp_path_factory):
    """The student_run's distillation with its guidance embedding at ten times the rest's learning rate, and alone
    for its first two steps."""
    return distil_smoke_run(trained_run, tiny_data_dir, tmp_path_factory.mktemp("student") / "fast-guidance",
                            "--lr", "1e-3", "--distill.guidance_lr", "1e-2", "--distill.guidance_warmup", "2")


@pytest.fixture(scope="module")
def plain_student_run(trained_run, tiny_data_dir, tmp_path_factory):
    """The student_run's distillation with one learning rate for the whole network, as every student had before."""
    return distil_smoke_run(trained_run, tiny_data_dir, tmp_path_factory.mktemp("student") / "plain",
                            "--distill.guidance_lr", "0")


def optimizer_groups(checkpoint):
    return torch.load(checkpoint / "training_state.pt", weights_only=False)["optimizer"]["param_groups"]


def test_the_guidance_embedding_learns_first_and_at_its_own_rate(fast_guidance_run, plain_student_run,
                                                                  trained_run):
    """distill.guidance_lr and guidance_warmup put the new guidance embedding (and only it) in a second AdamW group:
    for the first guidance_warmup steps it alone trains, and its rate stays guidance_lr / lr times the schedule's.
    Without them the student has one group, as before."""
    from tinydiffusion.nets import GUIDANCE_EMBEDDING
    from tinydiffusion.training.state import parameter_groups

    config = load_config(fast_guidance_run / "config.json")
    assert (config.distill.guidance_lr, config.distill.guidance_warmup) == (1e-2, 2)
    checkpoints = fast_guidance_run / "checkpoints"
    teacher = load_file(config.distill.teacher)
    after = {step: load_file(str(checkpoints / step / "model.safetensors")) for step in ("step-00000002",
                                                                                        "step-00000004")}
    for step, weights in after.items():
        moved = {name for name in weights if name in teacher and not torch.equal(weights[name], teacher[name])}
        assert bool(moved) == (step == "step-00000004"), step  # the rest held for the first two steps
        assert not all(torch.equal(weights[n], torch.zeros_like(weights[n]))  # the embedding trained from step 1
                       for n in weights if n.startswith(GUIDANCE_EMBEDDING))
    plain, guidance = optimizer_groups(checkpoints / "step-00000004")
    assert guidance["lr"] == pytest.approx(10 * plain["lr"]) and plain["lr"] > 0
    assert len(optimizer_groups(latest_checkpoint(plain_student_run))) == 1
    net = load_model(fast_guidance_run, device="cpu").net
    plain, guidance = parameter_groups(net, config)
    names = {id(p): name for name, p in net.named_parameters()}
    assert {names[id(p)] for p in guidance["params"]} == {n for n in names.values() if n.startswith(GUIDANCE_EMBEDDING)}
    assert len(plain["params"]) + len(guidance["params"]) == len(names)
    assert (plain["from_step"], guidance["from_step"], guidance["lr_scale"]) == (2, 0, 10)
    teacher_net = load_model(trained_run, device="cpu").net  # no guidance embedding: one group whatever is set
    assert [g["lr_scale"] for g in parameter_groups(teacher_net, config)] == [1.0]


def test_a_student_with_its_own_guidance_rate_resumes_bit_identically(fast_guidance_run, tmp_path):
    _, (uninterrupted, resumed) = resumed_after_step_2(fast_guidance_run, tmp_path)
    for name, a in uninterrupted.items():
        assert all(torch.equal(a[k], resumed[name][k]) for k in a), name


def test_a_checkpoint_from_before_the_groups_resumes_bit_identically(plain_student_run, tmp_path):
    """Checkpoints written before AdamW's groups carried a share of the rate and a first step resume as one group."""
    checkpoint = plain_student_run / "checkpoints" / "step-00000002"
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    (group,) = state["optimizer"]["param_groups"]
    del group["lr_scale"], group["from_step"]
    old = tmp_path / "old"
    shutil.copytree(plain_student_run, old)
    torch.save(state, old / "checkpoints" / "step-00000002" / "training_state.pt")
    _, (uninterrupted, resumed) = resumed_after_step_2(old, tmp_path / "resumed")
    for name, a in uninterrupted.items():
        assert all(torch.equal(a[k], resumed[name][k]) for k in a), name


def test_a_students_config_round_trips_and_records_how_it_samples(student_run, trained_run):
    config = load_config(student_run / "config.json")
    assert RunConfig.from_dict(config.to_dict()) == config
    assert load_config(latest_checkpoint(student_run) / "config.json") == config
    assert config.distill.steps == 2 and config.distill.sampler == "ddim"
    assert config.net.guidance_input and config.train.label_dropout == 0
    assert config.distill.guidance_lr == STUDENT_GUIDANCE_LR  # its new guidance embedding at its own rate
    assert config.distill.teacher.endswith("ema.safetensors") and len(config.distill.teacher_sha256) == 64
    teacher = load_config(trained_run / "config.json")
    assert config.diffusion == teacher.diffusion


def test_a_student_samples_with_its_own_steps_and_one_evaluation_each(student_run):
    model = load_model(student_run, device="cpu")
    calls = []
    model.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images, labels = generate(model, 6, guidance=2.5)
    assert images.shape == (6, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert calls == [6, 6]  # two steps, one batch of 6 each: guidance is an input, not a second half
    x, t, y = torch.randn(2, 1, 28, 28), torch.full((2,), 999.0), torch.tensor([1, 1])
    with torch.no_grad():  # the scale is an input the student learned to use (its embedding left zero)
        at_1, at_3 = (model.net(x, t, y, torch.full((2,), scale)) for scale in (1.0, 3.0))
    assert not torch.equal(at_1, at_3)


def test_sampling_a_student_otherwise_is_one_sentence(student_run, capsys, tmp_path):
    out = tmp_path / "s.png"
    for flags, expected in ((["--steps", "4"], "distilled to sample with 2 ddim steps"),
                            (["--sampler", "dpmpp-2m"], "distilled to sample with 2 ddim steps"),
                            (["--eta", "0.5"], "sampler options"),
                            (["--guidance", "7"], "learned guidance scales from 1 to 3")):
        code, _, err = cli(capsys, "sample", "--checkpoint", student_run, "--num", "2", "--out", out, *flags)
        assert code == 2 and expected in err and "Traceback" not in err, (flags, err)
        assert not out.exists()


def test_distill_refuses_bad_input_in_one_sentence(student_run, trained_run, tiny_data_dir, capsys, tmp_path):
    run = tmp_path / "new"
    common = ["--data-dir", tiny_data_dir, "--run-dir", run, "--no-progress", "--max-steps", "1"]
    cases = [
        (["--teacher", tmp_path / "missing"], "does not exist"),
        (["--teacher", student_run, "--steps", "2"], "its student must take fewer steps"),
        (["--teacher", student_run, "--distill.teacher_steps", "4"], "walks only its own 2 DDIM steps"),
        (["--teacher", student_run, "--distill.guidance_max", "5"], "keep --distill.guidance_min"),
        (["--teacher", trained_run, "--steps", "3"], "choose from 1, 2, 4"),
        (["--teacher", trained_run, "--distill.teacher_steps", "6"], "multiple of the student's 4 steps"),
        (["--teacher", trained_run, "--distill.teacher_sampler", "heun"], "distill.teacher_sampler must be one of"),
        (["--teacher", trained_run, "--distill.guidance_min", "4"], "guidance_min <= distill.guidance_max"),
        (["--teacher", trained_run, "--distill.guidance_lr", "-0.001"], "distill.guidance_lr must be between"),
        (["--teacher", trained_run, "--distill.guidance_warmup", "-1"], "distill.guidance_warmup must be between"),
        (["--teacher", trained_run, "--steps", "0"], "--steps"),
        (["--teacher", trained_run, "--run-dir", student_run], "already holds a run"),
    ]
    resumes = [
        (["--resume", student_run, "--teacher", trained_run], "keeps its teacher"),
        (["--resume", student_run, "--distill.teacher_steps", "8"], "keeps its network, diffusion and distillation"),
    ]
    before = files_of(student_run)
    for flags, expected in [(common + flags, expected) for flags, expected in cases] + resumes:
        code, _, err = cli(capsys, "distill", *flags)
        assert code == 2 and expected in err and "Traceback" not in err, (flags, err)
    assert not run.exists()
    assert files_of(student_run) == before  # nothing already on disk was touched


def test_a_trajectory_student_teaches_a_student_of_fewer_steps(student_run, consistency_student, tiny_data_dir,
                                                                 tmp_path, capsys):
    """A round of progressive distillation: the 2-step student teaches a 1-step one (by default, half its steps),
    walking its own DDIM steps with the guidance as its input; a consistency student is refused as a teacher."""
    run = tmp_path / "one"
    code, out, err = cli(capsys, "distill", "--teacher", student_run, "--data-dir", tiny_data_dir, "--run-dir", run,
                         "--max-steps", "1", "--batch-size", "8", "--no-progress", "--train.threads", "1",
                         "--train.sample_every_epoch", "false")
    assert code == 0, err
    config, teacher = load_config(run / "config.json"), load_config(student_run / "config.json")
    assert (config.distill.steps, config.distill.teacher_sampler, config.distill.teacher_steps) == (1, "ddim", 2)
    assert config.name == teacher.name.replace("-student-2", "-student-1")
    assert config.distill.teacher.endswith("ema.safetensors") and config.net == teacher.net
    assert config.distill.guidance_lr == 0  # its guidance embedding learned in the round before
    calls = []
    model = load_model(run, device="cpu")
    model.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images, _ = generate(model, 4, guidance=2)
    assert images.shape == (4, 1, 28, 28) and calls == [4]

    code, _, err = cli(capsys, "distill", "--teacher", consistency_student, "--data-dir", tiny_data_dir, "--run-dir",
                       tmp_path / "refused", "--max-steps", "1", "--no-progress")
    assert code == 2 and "is a consistency student" in err and "Traceback" not in err, err
    assert not (tmp_path / "refused").exists()


def test_a_changed_teacher_is_refused_on_resume(student_run, trained_run, tmp_path, capsys):
    config = load_config(student_run / "config.json")
    teacher_copy = tmp_path / "teacher.safetensors"
    shutil.copy(config.distill.teacher, teacher_copy)
    shutil.copy(trained_run / "config.json", tmp_path / "teacher.json")
    student = tmp_path / "student"
    shutil.copytree(student_run, student)
    text = (student / "config.json").read_text().replace(config.distill.teacher, str(teacher_copy))
    (student / "config.json").write_text(text)
    weights = load_file(str(teacher_copy))
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    from safetensors.torch import save_file

    save_file(weights, str(teacher_copy))
    code, _, err = cli(capsys, "distill", "--resume", student, "--no-progress", "--max-steps", "6")
    assert code == 2 and "has changed since this student's distillation started" in err


def test_sample_fast_draws_with_the_bundled_student(capsys, tmp_path):
    out = tmp_path / "fast.png"
    code, stdout, err = cli(capsys, "sample", "--fast", "--num", "8", "--class", "sneaker", "--seed", "3", "--out", out)
    assert code == 0, err
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] > 28 and grid.std() > 10  # a real grid of images, not a blank
    code, _, err = cli(capsys, "sample", "--fast", "--checkpoint", "x", "--out", out)
    assert code == 2 and "--fast" in err
    code, _, err = cli(capsys, "sample", "--fast", "--steps", "3", "--out", out)
    assert code == 2 and "bundled students of 1, 2, 4 steps, not 3" in err and "Traceback" not in err


@pytest.mark.parametrize("steps", [1, 2])
def test_sample_fast_steps_draws_with_the_bundled_student_of_those_steps(steps, capsys, tmp_path):
    """`sample --fast --steps K` and load_student(K): the bundled K-step student, K network evaluations of one
    batch each, the class asked for (the bundled classifier's judgement on 20 images)."""
    from tinydiffusion import load_student
    from tinydiffusion.data.pixels import to_model_space
    from tinydiffusion.evaluation import load_classifier

    student = load_student(steps, device="cpu")
    assert student.config.distill.steps == steps and student.config.distill.method == "trajectory"
    calls = []
    student.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images, labels = generate(student, 20, classes=[7], guidance=2)
    assert calls == [20] * steps
    classifier = load_classifier()
    with torch.no_grad():
        predicted = classifier(to_model_space(images)).argmax(1)
    assert (predicted == 7).float().mean() >= 0.9, predicted
    out = tmp_path / "fast.npz"
    code, _, err = cli(capsys, "sample", "--fast", "--steps", str(steps), "--num", "20", "--class", "sneaker",
                       "--guidance", "2", "--out", out)
    assert code == 0, err
    assert np.array_equal(np.load(out)["arr_0"], images.permute(0, 2, 3, 1).numpy())


def test_a_fresh_student_is_its_teachers_conditional_model(trained_run):
    """The guidance embedding's last layer starts at zero: before any distillation, the student's output at any
    scale is the teacher's conditional output, so distillation starts from the teacher, not from noise."""
    import dataclasses

    from tinydiffusion.training.distillation import student_network

    teacher = load_model(trained_run, device="cpu")
    config = dataclasses.replace(teacher.config, net=dataclasses.replace(teacher.config.net, guidance_input=True))
    student = student_network(config, teacher.net).eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([10.0, 500.0, 999.0]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        expected = teacher.net(x, t, y)
        for scale in (1.0, 2.0, 3.0):
            assert torch.equal(student(x, t, y, torch.full((3,), scale)), expected)


def test_resuming_a_finished_distillation_says_it_is_complete(student_run, capsys):
    before = files_of(student_run)
    code, out, err = cli(capsys, "distill", "--resume", student_run, "--no-progress")
    assert code == 0, err
    assert "is already complete: its checkpoint is at step 4 of 4" in out and "nan" not in out
    assert files_of(student_run) == before


def test_a_student_started_from_another_records_its_start(student_run, consistency_student, trained_run,
                                                          tiny_data_dir, tmp_path, capsys):
    """distill.init starts a new student from a trajectory student of the same steps, whose guidance embedding has
    learned already (train.lr for it); a start of other steps, a missing one or a consistency student is one
    sentence, before the data is read."""
    common = ["--teacher", trained_run, "--steps", "2", "--distill.teacher_steps", "4", "--data-dir", tiny_data_dir,
              "--batch-size", "8", "--max-steps", "1", "--no-progress", "--train.threads", "1",
              "--train.sample_every_epoch", "false"]
    run = tmp_path / "again"
    code, _, err = cli(capsys, "distill", *common, "--run-dir", run, "--distill.init", student_run)
    assert code == 0, err
    config = load_config(run / "config.json")
    assert config.distill.init == str(student_run.resolve()) and config.distill.guidance_lr == 0
    cases = [
        (["--steps", "1", "--distill.init", student_run], "is not a trajectory student of 1"),
        (["--distill.init", tmp_path / "missing", "--data", tmp_path / "no-data"], "missing does not exist"),
        (["--distill.init", consistency_student], "is not a trajectory student of 2"),
    ]
    before = files_of(student_run)
    for flags, expected in cases:
        code, _, err = cli(capsys, "distill", *common, "--run-dir", tmp_path / "refused", *flags)
        assert code == 2 and expected in err and "Traceback" not in err, (flags, err)
    assert not (tmp_path / "refused").exists() and files_of(student_run) == before


# --- the consistency and dmd methods, removed (issue 47): their students still load and sample; training one is
# refused ------------------------------------------------------------------------------------------------------------


def as_dmd(config: dict) -> dict:
    """A student's config as the dmd method wrote it: that method, and the critic's two fields it had."""
    config["distill"].update(method="dmd", critic_lr=3e-4, critic_warmup=200)
    return config


def test_an_old_dmd_student_loads_and_samples_as_a_trajectory_student(tmp_path, capsys):
    """A dmd student is a fine-tuned trajectory student: with the bundled 1-step student's weights and its config
    made a dmd one's (the start it fine-tuned in distill.init), it loads, its critic fields dropped, and samples with
    DDIM at its one step: one evaluation, the images the trajectory student draws. `sample` takes it too."""
    source = bundled("fashion-mnist").student(1)
    config = as_dmd(json.loads(source.with_suffix(".json").read_text()))
    config["distill"]["init"] = str(source)
    weights = tmp_path / "dmd-student.safetensors"
    shutil.copy(source, weights)
    weights.with_suffix(".json").write_text(json.dumps(config, indent=2))

    student = load_model(weights, device="cpu")
    assert (student.config.distill.method, student.config.distill.sampler) == ("dmd", "ddim")
    assert "critic_lr" not in student.config.to_dict()["distill"]
    assert sampling_settings(student, guidance=2)[:2] == ("ddim", 1)
    calls = []
    student.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images, _ = generate(student, 4, guidance=2, seed=5)
    assert calls == [4]
    assert torch.equal(images, generate(load_model(source, device="cpu"), 4, guidance=2, seed=5)[0])
    code, _, err = cli(capsys, "sample", "--checkpoint", weights, "--num", "2", "--out", tmp_path / "dmd.png")
    assert code == 0 and (tmp_path / "dmd.png").stat().st_size > 0, err


def test_an_old_consistency_student_loads_and_samples_at_any_steps(consistency_student, tmp_path, capsys):
    """A consistency student samples with its own sampler at any number of steps, one evaluation each; `sample`
    takes it too."""
    student = load_model(consistency_student, device="cpu")
    assert (student.config.distill.method, student.config.distill.sampler) == ("consistency", "consistency")
    assert sampling_settings(student, steps=3, guidance=2)[:2] == ("consistency", 3)
    calls = []
    student.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    for steps in (1, 3):
        calls.clear()
        images, _ = generate(student, 4, steps=steps, guidance=2, seed=5)
        assert calls == [4] * steps and torch.isfinite(images).all()
    out = tmp_path / "consistency.png"
    code, _, err = cli(capsys, "sample", "--checkpoint", consistency_student, "--steps", "3", "--num", "2",
                       "--out", out)
    assert code == 0 and out.stat().st_size > 0, err


@pytest.mark.parametrize("method, rewrite", [("dmd", as_dmd), ("consistency", as_consistency)])
def test_training_a_removed_methods_student_new_or_resumed_is_one_sentence(method, rewrite, student_run, trained_run,
                                                                           tiny_data_dir, tmp_path, capsys):
    """`distill --distill.method dmd` (or consistency) is refused before any work, and so is resuming such a run (a
    student run's config.json made one of that method's, stopped after step 2) by `distill` or `train`; training's
    own entry (task_for) refuses it too, for a caller of the Python API."""
    removed = (f"the {method} distillation method was removed", "still load and sample",
               "--distill.method trajectory")
    run = tmp_path / "new"
    code, _, err = cli(capsys, "distill", "--teacher", trained_run, "--distill.method", method, "--data-dir",
                       tiny_data_dir, "--run-dir", run, "--no-progress")
    assert_error(code, err, *removed)
    assert not run.exists()

    old = tmp_path / "old"
    shutil.copytree(student_run, old)
    shutil.rmtree(old / "checkpoints" / "step-00000004")
    (old / "checkpoints" / "latest").write_text("step-00000002\n")
    for config_file in (old / "config.json", old / "checkpoints" / "step-00000002" / "config.json"):
        config_file.write_text(json.dumps(rewrite(json.loads(config_file.read_text())), indent=2))
    before = files_of(old)
    for command in ("distill", "train"):
        code, _, err = cli(capsys, command, "--resume", old, "--no-progress")
        assert_error(code, err, *removed)
    assert files_of(old) == before
    with pytest.raises(UserError) as refused:
        task_for(load_config(old / "config.json"), None, torch.device("cpu"))
    one_sentence(refused, *removed)
