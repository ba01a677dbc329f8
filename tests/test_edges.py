"""The seams of issue 29 at the edges: the vocabulary of config checks taken from the registries, one definition
of each bound, sampler flags generated from the samplers' own options, a dataset carrying its own reference, a
checkpoint written through files.atomic_directory, one command per module."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import cli, command_lines

from tinydiffusion import bounds, files
from tinydiffusion.config import DistillConfig, RunConfig
from tinydiffusion.data.classes import first_of_each_class
from tinydiffusion.data.named import FASHION_MNIST, MNIST, NAMED, BundledReference
from tinydiffusion.distill_methods import DISTILL_METHODS, DistillMethod
from tinydiffusion.errors import UserError
from tinydiffusion.samplers import (
    FLAGS,
    SAMPLERS,
    Sampler,
    sampler_options,
    teacher_samplers,
    uniform_levels,
)
from tinydiffusion.samplers.ddim import ddim

# --- config checks take their vocabulary from the registries ---------------------------------------


def test_a_distillation_method_is_one_registration(monkeypatch):
    config = RunConfig(distill=DistillConfig(method="shortcut", sampler="ddim", steps=2, teacher="t"))
    with pytest.raises(UserError, match="distill.method must be trajectory"):  # a removed method is not offered
        config.validate()
    monkeypatch.setitem(DISTILL_METHODS, "shortcut", DistillMethod("ddim", to_clean=True))
    config.validate()


def test_teacher_samplers_are_the_deterministic_ones_on_the_process_own_steps(monkeypatch):
    assert set(teacher_samplers()) == {"ddim", "dpmpp-2m"}
    monkeypatch.setitem(SAMPLERS, "ddim-again", Sampler(ddim, uniform_levels, default_steps=50, deterministic=True))
    RunConfig(distill=DistillConfig(teacher_sampler="ddim-again")).validate()


# --- one definition of each bound -------------------------------------------------------------------


def test_the_seed_bound_is_one_for_the_command_line_the_pipeline_and_the_demo(capsys):
    from tinydiffusion.demo import handlers

    code, _, err = cli(capsys, "sample", "--seed", str(bounds.MAX_SEED + 1))
    assert code == 2 and f"between 0 and {bounds.MAX_SEED:,}" in err
    assert handlers.MAX_SEED is bounds.MAX_SEED


# --- sampler flags are the samplers' declared options ------------------------------------------------


def sample_help(capsys) -> str:
    code, out, _ = cli(capsys, "sample", "--help")
    assert code == 0
    return " ".join(out.split())


def test_each_sampler_flag_is_an_option_samplers_take_with_one_default():
    """`--help` reads a flag's takers and its default from the samplers' signatures: they must agree."""
    for option in FLAGS:
        defaults = {options[option] for options in map(sampler_options, SAMPLERS) if option in options}
        assert len(defaults) == 1, option


def stretched(denoise, x, levels, *, stretch=1.0, callback=None, generator=None):
    return ddim(denoise, x, levels, callback=callback, generator=generator)


def test_a_sampler_option_with_a_flag_is_offered_and_says_which_samplers_take_it(monkeypatch, capsys):
    monkeypatch.setitem(SAMPLERS, "ddim-stretched", Sampler(stretched, uniform_levels, default_steps=50))
    monkeypatch.setitem(FLAGS, "stretch", ((0, 2), "how far each step reaches"))
    text = sample_help(capsys)
    assert "--stretch STRETCH ddim-stretched only: how far each step reaches (default: 1)" in text
    assert "--eta ETA ddim only: the noise added at each step" in text
    code, _, err = cli(capsys, "sample", "--stretch", "3")
    assert code == 2 and "argument --stretch: 3 must be a finite number between 0 and 2" in err


# --- a named dataset carries its reference; the evaluation names none -------------------------------


def test_the_bundled_reference_is_the_dataset_and_the_metric_name_follows_it(monkeypatch):
    from tinydiffusion.config import DataConfig
    from tinydiffusion.evaluation.reference import metric_name

    assert FASHION_MNIST.reference.classifier_path.is_file() and FASHION_MNIST.reference.statistics_path.is_file()
    assert metric_name(DataConfig(source="fashion-mnist"), (1, 28, 28)) == "FD (fmnist-classifier features)"
    assert metric_name(DataConfig(source="mnist"), (1, 28, 28)) == "FD (mnist/train classifier features)"
    reference = BundledReference("digits.safetensors", "digits.npz", "FD (digit features)")
    monkeypatch.setitem(NAMED, "mnist", dataclasses.replace(MNIST, reference=reference))
    assert metric_name(DataConfig(source="mnist"), (1, 28, 28)) == "FD (digit features)"


def test_first_of_each_class_in_turn():
    labels = np.array([2, 0, 2, 1, 0, 1, 0])
    assert first_of_each_class(labels, 4) == [1, 3, 0]  # class 3 has no image
    assert first_of_each_class(labels, 3, per_class=2) == [1, 4, 3, 5, 0, 2]


# --- a checkpoint is an atomic directory that replaces its step's ------------------------------------


def test_an_atomic_directory_replaces_an_existing_one_only_when_asked(tmp_path):
    target = tmp_path / "step-00000004"
    for text, replace in (("first", False), ("second", False), ("third", True)):
        with files.atomic_directory(target, replace=replace) as folder:
            (folder / "weights").write_text(text)
    assert (target / "weights").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004"]  # no temporary or old copy left


# --- the command line: one module per command --------------------------------------------------------


def test_every_command_is_a_module_that_adds_its_parser_and_runs_it():
    from tinydiffusion import cli as command_line

    parser = command_line.build_parser()
    listed = parser.format_help()
    for command in command_line.COMMANDS:
        runs = [name for name in vars(command) if name == "run" or name.startswith("run_")]
        assert callable(command.add) and runs, command.__name__  # visualize runs forward and reverse
    assert all(command.__name__.rsplit(".", 1)[1] in listed.replace("-", "_") for command in command_line.COMMANDS)
    registered = {name[0] for name in command_lines() if name}  # every command registered is listed, none hidden
    assert registered == {command.__name__.rsplit(".", 1)[1].replace("_", "-") for command in command_line.COMMANDS}
