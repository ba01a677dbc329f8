"""Refusals that were a traceback, a wrong reason or a pointer to nothing, each now one sentence (issue 48): class
names in generate(), numbers given as strings, a student's teacher, files of samples that are no .npz or no file,
and a path named by the flag it came from."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import assert_error, cli, one_sentence
from PIL import Image

from tinydiffusion import UserError, generate, load_model, load_student
from tinydiffusion.data import read_idx
from tinydiffusion.editing import img2img, interpolate
from tinydiffusion.evaluation import load_classifier, load_samples_npz


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


# --- a. class names in generate(), as `sample --class` takes them -------------------------------------------------

def test_generate_takes_class_names_as_the_command_line_does(model):
    _, labels = generate(model, 3, classes=["sneaker", "Ankle boot", 2], steps=1)
    assert labels.tolist() == [7, 9, 2]
    for one in ("sneaker", 7, np.int64(7), torch.tensor(7)):  # one class alone, not in a list
        assert generate(model, 2, classes=one, steps=1)[1].tolist() == [7, 7]
    assert generate(model, 2, classes=torch.tensor([1, 3]), steps=1)[1].tolist() == [1, 3]


@pytest.mark.parametrize("classes, fragments", [
    (["sneakr"], ["unknown class 'sneakr'", "sneaker", "0-9"]),
    ([7.5], ["a class must be a name or an integer index, not 7.5"]),
    ([None], ["a class must be a name or an integer index, not None"]),
])
def test_a_class_that_is_no_class_is_one_sentence(model, classes, fragments):
    with pytest.raises(UserError) as refused:
        generate(model, 2, classes=classes, steps=1)
    one_sentence(refused, *fragments)


# --- b. numbers given as strings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", ["4", 3, "one"])
def test_load_student_says_its_steps_are_an_integer_of_1_2_or_4(steps):
    with pytest.raises(UserError) as refused:
        load_student(steps)
    one_sentence(refused, "must be an integer, one of 1, 2, 4", f"not {steps!r}")


@pytest.mark.parametrize("given, fragment", [
    ({"steps": "4"}, "the number of steps must be an integer, not '4'"),
    ({"seed": "0"}, "the seed must be an integer, not '0'"),
    ({"guidance": "1.5"}, "the guidance scale must be a number, not '1.5'"),
    ({"batch_size": "8"}, "the batch size must be an integer, not '8'"),
    ({"num": 2.0}, "the number of images must be an integer, not 2.0"),
])
def test_generate_says_which_number_is_not_one(model, given, fragment):
    with pytest.raises(UserError) as refused:
        generate(model, **{"num": 2, **given})
    one_sentence(refused, fragment)


def test_a_student_given_steps_as_a_string_is_refused_for_its_type():
    with pytest.raises(UserError) as refused:
        generate(load_student(2, device="cpu"), 1, steps="2")
    one_sentence(refused, "the number of steps must be an integer, not '2'")


# --- c. a student's teacher, named where it is --------------------------------------------------------------------

def refusal(call) -> str:
    with pytest.raises(UserError) as refused:
        call()
    return one_sentence(refused)


def test_a_bundled_student_s_refusals_name_its_teacher_as_it_can_be_loaded(model):
    two, one = load_student(2, device="cpu"), load_student(1, device="cpu")
    shirt = generate(model, 1, classes=[6], steps=1)[0][0]
    for sentence, teacher in [(refusal(lambda: generate(two, 1, steps=3)), "load_student(4)"),
                              (refusal(lambda: generate(load_student(4, device="cpu"), 1, steps=3)), "load_model()"),
                              (refusal(lambda: img2img(one, shirt, 0.5, classes=[3])), "load_student(2)"),
                              (refusal(lambda: interpolate(two, 3, images=(shirt, shirt))), "load_student(4)")]:
        assert teacher in sentence and "beside this file" not in sentence, sentence


def test_a_student_whose_teacher_is_gone_says_so(tmp_path):
    student = load_student(2, device="cpu")
    gone = tmp_path / "teacher.safetensors"
    student.config = dataclasses.replace(student.config,
                                         distill=dataclasses.replace(student.config.distill, teacher=str(gone)))
    assert f"({gone}, which is not found here)" in refusal(lambda: generate(student, 1, steps=3))


def test_an_exported_student_names_its_teacher_as_it_can_be_loaded(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tinydiffusion.export import load_onnx_model, onnx_bytes

    exported = tmp_path / "student.onnx"
    exported.write_bytes(onnx_bytes(load_student(2, device="cpu")))
    sentence = refusal(lambda: generate(load_onnx_model(exported, threads=1), 1, steps=3))
    assert "load_student(4)" in sentence and "beside this file" not in sentence, sentence


# --- d. what is not a file of samples, or no file -----------------------------------------------------------------

def test_evaluate_samples_names_the_format_it_reads_and_what_is_no_file(tmp_path, capsys):
    picture, fifo, folder = tmp_path / "x.png", tmp_path / "fifo", tmp_path / "folder"
    Image.new("L", (28, 28)).save(picture)
    os.mkfifo(fifo)
    folder.mkdir()
    for given, fragments in [(picture, ["is not an .npz file", "arr_0", "uint8 N x H x W x C"]),
                             (fifo, ["is a named pipe, not a regular file", ".npz"]),
                             (folder, ["is a folder, not a regular file"]),
                             (tmp_path / "missing.npz", ["does not exist"])]:
        code, _, err = cli(capsys, "evaluate", "--samples", given)
        assert "pickle" not in assert_error(code, err, str(given), *fragments)


def test_other_inputs_say_a_named_pipe_is_no_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert f"sample file {fifo} is a named pipe, not a regular file" in refusal(lambda: load_samples_npz(fifo))
    assert f"{fifo} is not a regular file" in refusal(lambda: read_idx(fifo))
    assert f"classifier file {fifo} is not a regular file" in refusal(lambda: load_classifier(fifo))
    assert f"{tmp_path / 'none.idx'} does not exist" in refusal(lambda: read_idx(tmp_path / "none.idx"))


def test_an_onnx_path_that_is_no_file_is_one_sentence(tmp_path):
    pytest.importorskip("onnxruntime")
    from tinydiffusion.export import load_onnx_model

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert f"{fifo} is not a regular file" in refusal(lambda: load_onnx_model(fifo))
    assert "does not exist" in refusal(lambda: load_onnx_model(tmp_path / "none.onnx"))


# --- f. a path named by its flag ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_missing_start_or_teacher_is_named_by_its_flag(tmp_path, capsys, command):
    flag = {"train": "--train.init", "distill": "--teacher"}[command]
    missing = tmp_path / "nowhere"
    code, _, err = cli(capsys, command, flag, missing, "--run-dir", tmp_path / "run")
    assert_error(code, err, exact=f"{flag} {missing} does not exist; pass a run directory, a checkpoint directory "
                 "or a .safetensors file.")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, _, err = cli(capsys, command, flag, notes, "--run-dir", tmp_path / "run")
    assert_error(code, err, f"{flag} {notes} is not a .safetensors file")
    assert not (tmp_path / "run").exists()
