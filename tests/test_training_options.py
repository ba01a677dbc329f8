"""The training loop's speed options: what "auto" picks, and that each option trains the same model.

The step leaves nothing for the host to wait on: with fused AdamW a non-finite loss skips the update on
the device (found_inf), and the host reads the losses later. These tests hold that path to the same
results as the host-side skip, and check that runs resume across a change of options.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import final_weights, poison_loss, smoke_config

from tinydiffusion.checkpoint import latest_checkpoint
from tinydiffusion.config import apply_overrides
from tinydiffusion.errors import UserError
from tinydiffusion.presets import get_preset
from tinydiffusion.training import EMA, Batch, Trainer, resolve_options, train

CPU = torch.device("cpu")


def fp32_smoke(data_dir, **overrides):
    """The smoke preset in fp32: these tests compare numbers across options."""
    return smoke_config(data_dir, **{"train.precision": "fp32", **overrides})


def assert_same_weights(a, b, atol=1e-6) -> None:
    assert a.keys() == b.keys() and all(a[name].keys() == b[name].keys() for name in a)
    for name in a:
        for key in a[name]:
            torch.testing.assert_close(a[name][key], b[name][key], atol=atol, rtol=1e-5, msg=f"{name} {key}")


# --- what "auto" resolves to ------------------------------------------------------------------


def test_auto_on_a_cpu_is_fp32_with_channels_last():
    config = get_preset("fashion-mnist")
    options = resolve_options(config, CPU)
    assert options == {"bf16": False, "compile": False, "channels_last": True, "fused_adamw": False}
    config.train.precision = "bf16"  # channels-last made bf16 slower
    assert resolve_options(config, CPU)["channels_last"] is False
    config.train.channels_last, config.train.fused_adamw = "on", "on"
    options = resolve_options(config, CPU)
    assert options["bf16"] and options["channels_last"] and options["fused_adamw"]  # explicit choices win


def test_auto_fuses_adamw_on_gpus():
    config = get_preset("fashion-mnist")
    assert resolve_options(config, torch.device("cuda"))["fused_adamw"] is True


@pytest.mark.parametrize("field", ["fused_adamw", "compile_mode"])
def test_option_values_are_checked(field):
    with pytest.raises(UserError, match=f"train.{field}"):
        apply_overrides(get_preset("smoke"), {f"train.{field}": "sometimes"}).validate()


# --- the EMA update -------------------------------------------------------------------------


def test_ema_tensor_weight_matches_float_and_zero_skips():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    by_float, by_tensor = EMA(net, 0.9), EMA(net, 0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    weight = by_float.weight_at(5)
    assert weight == pytest.approx(1 - 6 / 15)  # the warm-up: decay_k = (1 + k) / (10 + k)
    by_float.update(net, weight)
    by_tensor.update(net, torch.tensor(weight))
    for a, b in zip(by_float.net.parameters(), by_tensor.net.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    before = [p.clone() for p in by_tensor.net.parameters()]
    by_tensor.update(net, torch.tensor(weight) * torch.tensor(False))  # a skipped step
    assert all(torch.equal(a, b) for a, b in zip(before, by_tensor.net.parameters(), strict=True))


# --- the same training whatever the options -------------------------------------------------


def test_device_side_skip_matches_the_host_side_skip(tiny_data_dir, tmp_path, monkeypatch):
    """A non-finite step leaves the weights, EMA and AdamW state as if it never happened, either way."""
    runs = {}
    for fused in ("on", "off"):
        with monkeypatch.context() as patch:  # a fresh count of calls for each run
            poison_loss(patch, {2, 3})
            run = tmp_path / fused
            result = train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 7, "train.on_nan": "skip",
                                                           "train.fused_adamw": fused, "train.log_every": 7}),
                           run, progress=False)
        assert result.step == 7 and math.isfinite(result.final_loss)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["skipped_steps"] == 2
        runs[fused] = final_weights(run)
    assert_same_weights(runs["on"], runs["off"], atol=1e-5)  # fused and foreach AdamW round differently


def test_fused_and_unfused_adamw_train_the_same_model(tiny_data_dir, tmp_path):
    runs = {}
    for fused in ("on", "off"):
        train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 6, "train.fused_adamw": fused}), tmp_path / fused,
              progress=False)
        runs[fused] = final_weights(tmp_path / fused)
    assert_same_weights(runs["on"], runs["off"], atol=1e-5)


@pytest.mark.parametrize("first, second", [("off", "on"), ("on", "off")])
def test_resume_across_a_change_of_adamw_implementation(tiny_data_dir, tmp_path, first, second):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 6, "train.fused_adamw": second}), straight,
          progress=False)
    train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 3, "train.fused_adamw": first}), split, progress=False)
    resumed = Trainer(fp32_smoke(tiny_data_dir, **{"train.max_steps": 6, "train.fused_adamw": second}), split,
                      resume=True, progress=False)
    group = resumed.state.optimizer.param_groups[0]
    assert group["fused"] is (second == "on")
    steps = [state["step"] for state in resumed.state.optimizer.state.values()]
    assert len(steps) == len(list(resumed.state.net.parameters()))
    assert all(s.dtype == torch.float32 and float(s) == 3 for s in steps)
    resumed.run()
    assert_same_weights(final_weights(straight), final_weights(split), atol=1e-5)


@pytest.mark.parametrize("fused", ["on", "off"])
def test_stop_on_a_non_finite_loss_names_its_step_with_either_adamw(tiny_data_dir, tmp_path, monkeypatch, fused):
    """The host reads a step's loss while the next is queued; the non-finite step's update was skipped
    already, and the run stops before any later checkpoint."""
    run = tmp_path / "run"
    poison_loss(monkeypatch, {5})  # step 5; checkpoints every 3 steps, so the last good one is step 3
    config = fp32_smoke(tiny_data_dir, **{"train.max_steps": 10, "train.checkpoint_every": 3,
                                            "train.fused_adamw": fused})
    with pytest.raises(UserError, match=r"at step 5\b.*step-00000003"):
        train(config, run, progress=False)
    assert latest_checkpoint(run).name == "step-00000003"


@pytest.mark.parametrize("poisoned, last_good", [(1, None), (2, "step-00000002"), (3, "step-00000002")],
                         ids=["before-a-checkpoint", "after-a-checkpoint", "the-last-step"])
def test_no_checkpoint_is_written_after_a_non_finite_loss(tiny_data_dir, tmp_path, monkeypatch, poisoned, last_good):
    """A checkpoint (step 2 here) and the end of the run read every pending loss before anything is saved."""
    run = tmp_path / "run"
    poison_loss(monkeypatch, {poisoned})
    config = fp32_smoke(tiny_data_dir, **{"train.max_steps": 4, "train.checkpoint_every": 2,
                                            "train.fused_adamw": "on", "train.log_every": 100})
    with pytest.raises(UserError, match=rf"at step {poisoned}\b"):
        train(config, run, progress=False)
    found = latest_checkpoint(run)
    assert (found.name if found else None) == last_good


# --- a non-finite batch, and a run saved by the removed CUDA-graph step ------------------------------


def poison_noise(bad_steps: set[int]):
    """A batch hook (the Trainer's on_batch) that makes the noise NaN at the given steps."""
    def poison(step: int, batch: Batch) -> Batch:
        return dataclasses.replace(batch, noise=batch.noise * float("nan")) if step in bad_steps else batch

    return poison


def test_nan_noise_is_skipped_on_the_device(tiny_data_dir, tmp_path):
    config = fp32_smoke(tiny_data_dir, **{"train.max_steps": 12, "train.fused_adamw": "on", "train.on_nan": "skip",
                                            "train.log_every": 4})
    Trainer(config, tmp_path, progress=False, on_batch=poison_noise({6})).run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 1, 1]
    assert all(torch.isfinite(w).all() for group in final_weights(tmp_path).values() for w in group.values())


def test_a_run_saved_by_the_removed_cuda_graph_step_resumes(tiny_data_dir, tmp_path):
    """`--train.cuda_graph` was removed in issue 47 (compile_mode reduce-overhead does its job). A run it saved
    holds the flag in its configs and, in its AdamW state, learning rates as tensors and capturable on: it resumes,
    the flag dropped, to the weights of a run never interrupted."""
    from tinydiffusion.checkpoint import load_config
    from tinydiffusion.cli import main

    straight, split = tmp_path / "straight", tmp_path / "split"
    train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 6, "train.fused_adamw": "on"}), straight, progress=False)
    train(fp32_smoke(tiny_data_dir, **{"train.max_steps": 3, "train.fused_adamw": "on"}), split, progress=False)
    checkpoint = latest_checkpoint(split)
    for config_file in (split / "config.json", checkpoint / "config.json"):
        config = json.loads(config_file.read_text())
        config["train"]["cuda_graph"] = "on"
        config_file.write_text(json.dumps(config, indent=2))
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    for group in state["optimizer"]["param_groups"]:
        group.update(lr=torch.tensor(group["lr"]), capturable=True)
    torch.save(state, checkpoint / "training_state.pt")
    assert main(["train", "--resume", str(split), "--max-steps", "6", "--no-progress"]) == 0
    assert "cuda_graph" not in load_config(split / "config.json").to_dict()["train"]
    assert_same_weights(final_weights(straight), final_weights(split), atol=1e-5)


# --- the options benchmark ---------------------------------------------------------------------


def test_options_benchmark_measures_each_set(tiny_data_dir):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import options

    runs = {label: options.worker(label, steps=15, threads=1, device="cpu", data_dir=str(tiny_data_dir),
                                  preset="smoke") for label in ("fp32", "fused_adamw")}
    for run in runs.values():
        assert [w["step"] for w in run["windows"]] == [5, 10, 15]
        steady, warmup = options.rates(run)
        assert steady > 0 and warmup >= 0
    results = {"sets": {label: [dict(run, cold_cache=True)] for label, run in runs.items()},
               "machine": {"cpu": "x", "logical_cpus": 1, "torch": "t", "device": "cpu", "date": "d",
                           "load_average_at_start": 0.0, "load_average_at_end": 0.0},
               "settings": {"steps": 15, "log_every": 5, "rounds": 1, "compile_rounds": 1, "threads": 1}}
    summary = options.summarize(results)  # two separate runs: the ratio is measured, not 1 by construction
    expected = options.rates(runs["fused_adamw"])[0] / options.rates(runs["fp32"])[0]
    assert summary["fused_adamw"]["speed_vs_fp32"] == pytest.approx(expected)
    assert summary["fp32"]["speed_vs_fp32"] == pytest.approx(1.0)
    row = summary["fused_adamw"]
    assert f"| fused_adamw | 1 | {row['steady_images_per_second']:.0f} |" in options.format_markdown(results, summary)
