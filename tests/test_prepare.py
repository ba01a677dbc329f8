"""The prepared-data cache (reused, rebuilt when the source changes, memory-mapped above the limit), the
`prepare` command, bad input through the command line, and training and sampling end to end on image folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from test_sources import assert_cache_clean, load, make_class_folder, nhwc, prepared_entries, random_rgb, save

from tinydiffusion import cli
from tinydiffusion.data import prepared
from tinydiffusion.errors import UserError
from tinydiffusion.run_configs import new_run
from tinydiffusion.training import train


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every image decoded by the preparation code (one entry per call)."""
    calls, real = [], prepared.open_image

    def counting(payload):
        calls.append(None)
        return real(payload)

    monkeypatch.setattr(prepared, "open_image", counting)
    return calls


def later(path: Path, seconds: float = 10) -> None:
    """Move a file's modification time on, as a later edit would (whatever the file system's clock resolution)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


# --- the cache --------------------------------------------------------------------------------


def test_a_prepared_source_is_reused_not_decoded_again(tmp_path, decodes):
    written = make_class_folder(tmp_path / "pets")
    first = load(tmp_path / "pets")
    assert len(decodes) >= len(written)
    entries = prepared_entries()
    decodes.clear()
    second = load(tmp_path / "pets")
    assert decodes == [] and prepared_entries() == entries
    assert np.array_equal(nhwc(first), nhwc(second)) and second.manifest == first.manifest


def test_the_cache_is_rebuilt_when_the_source_changes(tmp_path, decodes):
    root = tmp_path / "pets"
    make_class_folder(root)
    load(root)

    decodes.clear()  # one image rewritten: new pixels, same size and dimensions
    save(root / "cat" / "0.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    later(root / "cat" / "0.png")
    rewritten = load(root)
    assert decodes and (nhwc(rewritten)[0] == (1, 2, 3)).all()

    decodes.clear()  # only its time touched
    later(root / "dog" / "1.png")
    touched = load(root)
    assert decodes and np.array_equal(nhwc(touched), nhwc(rewritten))

    decodes.clear()  # an image added
    save(root / "dog" / "2.png", Image.fromarray(random_rgb(np.random.default_rng(1))))
    added = load(root)
    assert decodes and len(added) == 5 and added.labels.tolist() == [0, 0, 1, 1, 1]

    decodes.clear()  # an image removed
    (root / "cat" / "1.png").unlink()
    assert len(load(root)) == 4 and decodes

    decodes.clear()  # another size asked for; then the first again, still cached
    assert load(root, image_size=4).images.shape == (4, 3, 4, 4) and decodes
    decodes.clear()
    assert load(root).images.shape == (4, 3, 8, 8) and decodes == []
    assert load(root, channels=1).images.shape == (4, 1, 8, 8) and decodes
    assert_cache_clean()


def test_an_array_file_that_changes_is_prepared_again(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    assert (nhwc(load(tmp_path / "a.npy")) == 0).all()
    np.save(tmp_path / "a.npy", np.full((2, 4, 4), 9, np.uint8))  # same size on disk
    later(tmp_path / "a.npy")
    assert (nhwc(load(tmp_path / "a.npy")) == 9).all()


def test_a_prepared_array_above_the_memory_limit_is_memory_mapped(tmp_path):
    make_class_folder(tmp_path / "pets")  # 4 x 8 x 8 x 3 = 768 bytes
    in_memory = load(tmp_path / "pets", memory_limit_mb=1)
    mapped = load(tmp_path / "pets", memory_limit_mb=0.0001)  # 104 bytes
    assert not in_memory.memory_mapped and mapped.memory_mapped
    assert np.array_equal(nhwc(mapped), nhwc(in_memory)) and mapped.labels.tolist() == in_memory.labels.tolist()
    assert not load(tmp_path / "pets").memory_mapped  # the default: half the machine's memory


def test_training_reads_a_memory_mapped_dataset(tmp_path):
    make_class_folder(tmp_path / "pets", per_class=4)
    dataset = load(tmp_path / "pets", memory_limit_mb=0.0001)
    assert dataset.memory_mapped
    overrides = {"data.source": str(tmp_path / "pets"), "data.memory_limit_mb": 0.0001, "train.max_steps": 2,
                 "train.batch_size": 4, "train.threads": 1, "train.sample_every_epoch": False}
    config = new_run("smoke", None, overrides, (tuple(dataset.images.shape[1:]), 2, len(dataset)))
    result = train(config, tmp_path / "run", dataset=dataset, progress=False)
    assert result.step == 2 and np.isfinite(result.final_loss)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert recorded["num_images"] == 8 and recorded["class_names"] == ["cat", "dog"]


# --- `prepare`, and its file used as --data ----------------------------------------------------------


def test_prepare_writes_a_file_that_data_uses_directly(tmp_path, capsys):
    written = make_class_folder(tmp_path / "pets")
    out = tmp_path / "pets.npy"
    assert cli.main(["prepare", str(tmp_path / "pets"), "--out", str(out), "--no-progress"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets", "pets.json", "pets.labels.npy", "pets.npy"]
    manifest = json.loads((tmp_path / "pets.json").read_text())
    assert manifest["count"] == 4 and manifest["class_names"] == ["cat", "dog"]

    entries = prepared_entries()
    dataset = load(out)
    assert prepared_entries() == entries  # read as it is: no new cache entry
    assert np.array_equal(nhwc(dataset), np.stack(list(written.values())))
    assert dataset.class_names == ("cat", "dog") and dataset.labels.tolist() == [0, 0, 1, 1]
    assert dataset.manifest["sha256"] == manifest["sha256"]

    assert cli.main(["prepare", str(out), "--out", str(tmp_path / "again.npy")]) == 2
    assert "is prepared already; use it with --data" in capsys.readouterr().err


def test_prepare_of_bad_input_writes_nothing(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    out = tmp_path / "out" / "bad.npy"
    out.parent.mkdir()
    assert cli.main(["prepare", str(tmp_path / "bad"), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: the only file in")
    assert list(out.parent.iterdir()) == []


def test_a_failed_prepare_leaves_the_previous_file_as_it_was(tmp_path, capsys):
    make_class_folder(tmp_path / "pets")
    out = tmp_path / "pets.npy"
    assert cli.main(["prepare", str(tmp_path / "pets"), "--out", str(out), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    assert cli.main(["prepare", str(tmp_path / "bad"), "--out", str(out), "--no-progress"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # no temporaries either


def test_a_prepared_file_refuses_another_shape(tmp_path, capsys):
    make_class_folder(tmp_path / "pets", size=(8, 8))
    out = tmp_path / "pets.npy"
    assert cli.main(["prepare", str(tmp_path / "pets"), "--out", str(out), "--no-progress"]) == 0
    with pytest.raises(UserError, match="was prepared with data.image_size 8, not 4"):
        load(out, image_size=4)
    assert load(out, image_size=8).images.shape[-1] == 8


def test_a_manifest_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path, capsys):
    make_class_folder(tmp_path / "pets", size=(8, 8))
    out = tmp_path / "pets.npy"
    assert cli.main(["prepare", str(tmp_path / "pets"), "--out", str(out), "--no-progress"]) == 0
    manifest = tmp_path / "pets.json"
    manifest.unlink()
    os.mkfifo(manifest)  # no writer: an ordinary read would wait for ever
    check = ("import sys; from tinydiffusion.data import prepared; from tinydiffusion.errors import UserError\n"
             "assert not prepared.is_prepared(sys.argv[1])\n"
             "try:\n    prepared.open_prepared(sys.argv[1])\nexcept UserError as err:\n    print(err)")
    # in a process of its own, so that a read that waits fails the test (TimeoutExpired) instead of hanging it
    done = subprocess.run([sys.executable, "-c", check, str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "is not a readable prepared-data manifest" in done.stdout, done.stdout


def test_eps_files_are_never_decoded(tmp_path, capsys):
    """Pillow decodes EPS by running Ghostscript: files in that format are skipped, whatever their name says."""
    make_class_folder(tmp_path / "pets")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    (tmp_path / "pets" / "cat" / "drawing.eps").write_bytes(eps)
    (tmp_path / "pets" / "dog" / "disguised.png").write_bytes(eps)
    dataset = load(tmp_path / "pets")
    skipped = dict(dataset.manifest["skipped"])
    assert skipped["cat/drawing.eps"] == "is not an image file"
    assert skipped["dog/disguised.png"] == "is not an image Pillow can read"
    assert len(dataset) == 4


# --- bad input through the command line: `error: <one sentence>`, exit 2 ---------------------------------


def cli_error(args: list, capsys) -> str:
    """Run the command line in this process; it must exit 2 with one `error:` sentence and nothing else."""
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert_cache_clean()
    return err


def test_bad_sources_are_one_sentence_each(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "empty holds no image files" in cli_error(["prepare", tmp_path / "empty", "--out", tmp_path / "x.npy"],
                                                     capsys)
    for split in ("train", "test"):
        make_class_folder(tmp_path / "splits" / split)
    err = cli_error(["prepare", tmp_path / "splits", "--out", tmp_path / "x.npy"], capsys)
    assert f"point --data at its train folder ({tmp_path / 'splits' / 'train'})" in err
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 1]))
    assert "mismatch.npz" in cli_error(["prepare", tmp_path / "mismatch.npz", "--out", tmp_path / "x.npy"], capsys)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    err = cli_error(["prepare", tmp_path / "objects.npy", "--out", tmp_path / "x.npy"], capsys)
    assert "objects.npy holds Python objects" in err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.slow
def test_bad_sources_in_a_real_process(tmp_path):
    (tmp_path / "photos.zip").write_text("not a zip")
    for source, fragment in ((tmp_path / "photos.zip", "photos.zip is not a readable zip archive"),
                             (tmp_path / "nowhere", "nowhere does not exist")):
        done = run_cli(["train", "--preset", "smoke", "--data", source, "--run-dir", tmp_path / "run",
                        "--no-progress"], cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and fragment in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "run").exists()
    assert_cache_clean()


# --- training and sampling end to end --------------------------------------------------------------


def train_cli(source: Path, run: Path, *extra):
    done = run_cli(["train", "--preset", "smoke", "--data", source, "--run-dir", run, "--max-steps", "3",
                    "--batch-size", "4", "--no-progress", "--train.threads", "1", *extra], cwd=run.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def sample_cli(run: Path, out: Path, *extra):
    return run_cli(["sample", "--checkpoint", run, "--num", "2", "--steps", "2", "--out", out, *extra],
                   cwd=run.parent, timeout=120)


@pytest.mark.slow
def test_train_and_sample_a_class_of_an_image_folder(tmp_path):
    folder = tmp_path / "birds"
    make_class_folder(folder, classes=("finch", "owl", "wren"), per_class=3, size=(32, 32))
    expected = load(folder)  # what training reads: the same cache entry
    train_cli(folder, tmp_path / "run")
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert Path(data["source"]).resolve() == folder.resolve()
    assert data["num_images"] == 9 and data["image_shape"] == [3, 32, 32]
    assert data["class_names"] == ["finch", "owl", "wren"] and data["prepared_sha256"] == expected.manifest["sha256"]

    done = sample_cli(tmp_path / "run", tmp_path / "owls.npz", "--class", "owl")
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "owls.npz") as samples:
        assert samples["arr_0"].shape == (2, 32, 32, 3) and samples["labels"].tolist() == [1, 1]
        assert samples["class_names"].tolist() == ["finch", "owl", "wren"]  # the labels' names travel with them
    assert load(tmp_path / "owls.npz").class_names == ("finch", "owl", "wren")  # a sample file is a dataset too

    done = sample_cli(tmp_path / "run", tmp_path / "grid.png", "--num", "6")  # every class in turn: named columns
    assert done.returncode == 0, done.stderr
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    assert grid.shape == (14 + 2 * (2 + 2 * (32 + 2)), 2 * (2 + 3 * (32 + 2)))  # a header, then 2 rows of 3
    assert (grid[:14] < 128).any()  # the header holds text

    done = sample_cli(tmp_path / "run", tmp_path / "none.npz", "--class", "nonexistent")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: unknown class 'nonexistent'; choose one of finch, owl, wren or an index 0-2."
    assert not (tmp_path / "none.npz").exists()


@pytest.mark.slow
def test_an_unlabelled_folder_trains_unconditionally(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        save(tmp_path / "flat" / f"{i}.png", Image.fromarray(random_rgb(rng, (32, 32))))
    train_cli(tmp_path / "flat", tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["net"]["num_classes"] == 0 and config["data"]["class_names"] == []
    assert config["data"]["num_images"] == 8
    done = sample_cli(tmp_path / "run", tmp_path / "x.npz", "--class", "x")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "unconditional" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_train_from_a_prepared_file_memory_mapped(tmp_path, capsys):
    make_class_folder(tmp_path / "pets", per_class=4, size=(16, 16))
    out = tmp_path / "pets.npy"
    assert cli.main(["prepare", str(tmp_path / "pets"), "--out", str(out), "--no-progress"]) == 0
    entries = prepared_entries()
    done = train_cli(out, tmp_path / "run", "--data.memory_limit_mb", "0.0001")
    assert not [line for line in done.stdout.splitlines() if line.startswith("prepared ")]  # used as it is
    assert prepared_entries() == entries
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["memory_limit_mb"] == 0.0001 and data["num_images"] == 8 and data["class_names"] == ["cat", "dog"]
    assert data["prepared_sha256"] == json.loads((tmp_path / "pets.json").read_text())["sha256"]


@pytest.mark.parametrize("source,name", [("fashion-mnist", "fashion-mnist"), ("/data/mnist-10k/train", "mnist-10k"),
                                         ("/data/mnist-10k/train.zip", "mnist-10k"), ("pets", "pets"),
                                         ("x/pets.npz", "pets"), ("train", "train")])
def test_a_run_is_named_after_its_data(source, name):
    assert cli.run_name(source) == name


def test_a_held_out_split_takes_the_train_splits_shape(tmp_path):
    """Mixed sizes make a folder's default size its most common one: the test split follows train's, not its own."""
    make_class_folder(tmp_path / "train", size=(16, 16), per_class=3)
    make_class_folder(tmp_path / "test", size=(24, 24), per_class=2)
    train, test = load(tmp_path / "train"), load(tmp_path / "train", "test")
    assert train.images.shape[1:] == test.images.shape[1:] == (3, 16, 16)
