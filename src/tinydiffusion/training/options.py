"""The speed options of a run ("auto", "on" or "off" in the config), resolved for the device it runs on."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..errors import UserError


def resolve_options(config: RunConfig, device: torch.device, world_size: int) -> dict[str, bool]:
    """Turn auto/on/off into booleans; "auto" enables an option only where it was measured to help at equal
    quality (docs/explanation/defaults.md): channels-last on a CPU in fp32, and fused AdamW on a GPU, so that a
    non-finite step is skipped without the host waiting. CUDA graphs are opt-in."""
    train_cfg = config.train
    on_gpu = device.type == "cuda"
    bf16 = train_cfg.precision == "bf16"
    options = {
        "bf16": bf16,
        "compile": train_cfg.compile == "on",
        "channels_last": train_cfg.channels_last == "on"
        or (train_cfg.channels_last == "auto" and not on_gpu and not bf16),
        "fused_adamw": train_cfg.fused_adamw == "on" or (train_cfg.fused_adamw == "auto" and on_gpu),
        "cuda_graph": train_cfg.cuda_graph == "on",
    }
    if options["cuda_graph"]:
        problems = [why for bad, why in ((not on_gpu, "a GPU (--train.device cuda)"),
                                         (world_size > 1, "a single process (not torchrun)"),
                                         (train_cfg.fused_adamw == "off", "fused AdamW (--train.fused_adamw on)"),
                                         (options["compile"], "torch.compile off (or compile_mode reduce-overhead "
                                                              "instead, which makes its own graphs)")) if bad]
        if problems:
            raise UserError(f"--train.cuda_graph on needs {' and '.join(problems)}.")
        options["fused_adamw"] = True
    return options
