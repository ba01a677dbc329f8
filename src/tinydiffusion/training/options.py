"""The speed options of a run ("auto", "on" or "off" in the config), resolved for the device it runs on."""

from __future__ import annotations

import torch

from ..config import RunConfig


def resolve_options(config: RunConfig, device: torch.device) -> dict[str, bool]:
    """Turn auto/on/off into booleans; "auto" enables an option only where it was measured to help at equal
    quality (docs/explanation/defaults.md): channels-last on a CPU in fp32, and fused AdamW on a GPU, so that a
    non-finite step is skipped without the host waiting."""
    train_cfg = config.train
    on_gpu = device.type == "cuda"
    bf16 = train_cfg.precision == "bf16"
    return {
        "bf16": bf16,
        "compile": train_cfg.compile == "on",
        "channels_last": train_cfg.channels_last == "on"
        or (train_cfg.channels_last == "auto" and not on_gpu and not bf16),
        "fused_adamw": train_cfg.fused_adamw == "on" or (train_cfg.fused_adamw == "auto" and on_gpu),
    }
