"""What the benchmarks rely on: the diffusers adapter fits the network interface; train.max_seconds stops a run."""

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import smoke_config

from tinydiffusion.checkpoint import latest_checkpoint
from tinydiffusion.config import apply_overrides
from tinydiffusion.errors import UserError
from tinydiffusion.presets import get_preset
from tinydiffusion.training import Batch, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_diffusers_adapter_takes_the_network_interface():
    pytest.importorskip("diffusers")
    from baselines import NUM_CLASSES, DiffusersUNet

    net = DiffusersUNet().eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3.0, 999.5])  # samplers pass fractional timesteps
    with torch.no_grad():
        conditional = net(x, t, torch.tensor([0, 9]))
        unconditional = net(x, t, None)
        explicit_null = net(x, t, torch.full((2,), NUM_CLASSES))
    assert conditional.shape == unconditional.shape == x.shape
    assert torch.equal(unconditional, explicit_null)  # y=None means the "no class" index
    assert 3.5e6 < sum(p.numel() for p in net.parameters()) < 4.5e6


def test_max_seconds_ends_training_like_its_last_step(tiny_data_dir, tmp_path):
    config = apply_overrides(get_preset("smoke"), {
        # with max_steps set the budget only cuts the run short (without it, it plans the run: test_time_budget.py)
        "data.data_dir": str(tiny_data_dir), "train.threads": 1, "train.max_steps": 100_000, "train.max_seconds": 1.0,
        "train.sample_every_epoch": False, "train.log_every": 10_000,
    })
    trainer = Trainer(config, tmp_path / "run", progress=False)
    scheduled = trainer.total_steps
    result = trainer.run()
    assert 0 < result.step < scheduled and not result.stopped_early
    assert trainer.total_steps == scheduled  # the LR schedule keeps its length
    assert latest_checkpoint(tmp_path / "run").name == f"step-{result.step:08d}"
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == result.step  # the final partial window is logged


def test_max_seconds_must_not_be_negative():
    with pytest.raises(UserError, match="max_seconds"):
        apply_overrides(get_preset("smoke"), {"train.max_seconds": -1}).validate()


def test_the_gpu_session_graph_check_poisons_the_noise_and_the_step_is_skipped(tiny_data_dir, tmp_path):
    """benchmarks/gpu_session.py's graph check, its core run eagerly on the CPU on tiny data. Its batch hook makes
    the noise of one step NaN and leaves the images, classes and times as drawn (a hook that unpacked the batch by
    position once poisoned the times instead); the Trainer skips that step and trains on."""
    import gpu_session

    batch = Batch(x0=torch.rand(4, 1, 8, 8), y=torch.arange(4), noise=torch.randn(4, 1, 8, 8),
                  drawn=(torch.rand(4, dtype=torch.float64),))
    poison = gpu_session.poison_noise_at(3)
    poisoned = poison(3, batch)
    assert torch.isnan(poisoned.noise).all()
    assert torch.equal(poisoned.x0, batch.x0) and torch.equal(poisoned.y, batch.y)
    assert torch.equal(poisoned.drawn[0], batch.drawn[0])
    assert poison(2, batch) is batch
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 8, "train.log_every": 4, "train.fused_adamw": "on",
                                            "train.on_nan": "skip", "train.precision": "fp32", "train.device": "cpu"})
    records, weights = gpu_session.poisoned_runs(config, tmp_path, ("off",), bad_step=3)["off"]
    assert [r["skipped_steps"] for r in records] == [1, 1]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
