"""The speed options of a run ("auto", "on" or "off" in the config), resolved for the device it runs on."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..errors import UserError


def resolve_options(config: RunConfig, device: torch.device, world_size: int) -> dict[str, bool]:
    """Turn auto/on/off into booleans; "auto" enables an option only where it was measured to help at equal
    quality (the measurements: docs/defaults.md). On a CPU: channels-last in fp32; fp32, not bf16, which
    trained faster but scored worse; no fused AdamW or torch.compile, which gained nothing in 5 epochs. On a
    GPU: fused AdamW, so that a non-finite step is skipped without the host waiting. CUDA graphs are opt-in
    until measured."""
    t = config.train
    on_gpu = device.type == "cuda"
    bf16 = t.precision == "bf16"
    options = {
        "bf16": bf16,
        "compile": t.compile == "on",
        "channels_last": t.channels_last == "on" or (t.channels_last == "auto" and not on_gpu and not bf16),
        "fused_adamw": t.fused_adamw == "on" or (t.fused_adamw == "auto" and on_gpu),
        "cuda_graph": t.cuda_graph == "on",
    }
    if options["cuda_graph"]:
        problems = [why for bad, why in ((not on_gpu, "a GPU (--train.device cuda)"),
                                         (world_size > 1, "a single process (not torchrun)"),
                                         (t.fused_adamw == "off", "fused AdamW (--train.fused_adamw on)"),
                                         (options["compile"], "torch.compile off (or compile_mode reduce-overhead "
                                                              "instead, which makes its own graphs)")) if bad]
        if problems:
            raise UserError(f"--train.cuda_graph on needs {' and '.join(problems)}.")
        options["fused_adamw"] = True
    return options
