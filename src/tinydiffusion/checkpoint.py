"""Crash-safe checkpoints: safetensors weights, a JSON config, and a weights-only training state, each checkpoint
written into a temporary directory and renamed into place only when complete. The run directory's layout and
what `--resume` continues: docs/reference/run-directory.md; one checkpoint's files: docs/reference/checkpoint-format.md.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .bundled import ASSETS, MODELS, bundled, bundled_file
from .config import FORMAT_VERSION, RunConfig
from .errors import UserError
from .files import atomic_directory, atomic_write_bytes, check_run_not_in_use, fsync_dir
from .nets import build_network

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE, EMA_FILE, CONFIG_FILE, STATE_FILE, INFO_FILE = (
    "model.safetensors", "ema.safetensors", "config.json", "training_state.pt", "checkpoint.json")
# The weights in a folder `export --format diffusers` wrote, with the run's config beside them (NAME.json)
DIFFUSERS_WEIGHTS = Path("denoiser") / "diffusion_pytorch_model.safetensors"
CLASS_TABLE = "class_embedding.weight"  # a conditional network's table of classes (nets/layers.py), "no class" last
MAX_STEP = 10**12  # far beyond any real run; a training state claiming more is damaged
_STEP_NAME = re.compile(r"step-(\d+)")


def plain_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights without DistributedDataParallel's `module.` or torch.compile's `_orig_mod.` prefixes."""
    net = getattr(net, "module", net)
    net = getattr(net, "_orig_mod", net)
    return {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, config: RunConfig, model_weights: dict, ema_weights: dict,
                    training_state: dict, keep: int = 2) -> Path:
    """Write one checkpoint atomically, point `latest` at it, and keep only the newest `keep`."""
    root = Path(run_dir) / CHECKPOINTS
    name = f"step-{step:08d}"
    final = root / name
    try:
        with atomic_directory(final, replace=True) as tmp:  # re-saving a step (after a resume) replaces it
            save_file(model_weights, str(tmp / MODEL_FILE))
            save_file(ema_weights, str(tmp / EMA_FILE))
            (tmp / CONFIG_FILE).write_text(config.to_json())
            torch.save(training_state, tmp / STATE_FILE)
            (tmp / INFO_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "step": step}) + "\n")
    except (SafetensorError, RuntimeError) as err:  # how safetensors and torch.save report a failed write
        first_line = str(err).split("\n")[0]
        raise OSError(f"writing {name} failed: {first_line}") from err
    atomic_write_bytes(root / LATEST, (name + "\n").encode())
    _prune(root, keep, name)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    for stale in root.glob(".step-*"):  # temporaries left by a crash
        shutil.rmtree(stale, ignore_errors=True)
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
        if old.name != newest:
            # Renamed first, so a crash during the deletion leaves a temporary, not half a checkpoint.
            doomed = root / f".{old.name}.deleting"
            try:
                old.rename(doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)


def is_complete(checkpoint_dir: Path) -> bool:
    """A checkpoint under its real name (step-N) with its checkpoint.json: what `latest_checkpoint`, and so
    `sample --checkpoint RUN` and `train --resume`, count as a checkpoint."""
    return checkpoint_dir.name.startswith("step-") and (checkpoint_dir / INFO_FILE).is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run: the `latest` pointer, else the newest step dir."""
    root = Path(run_dir) / CHECKPOINTS
    try:
        name = (root / LATEST).read_text().strip()
    except (OSError, ValueError):  # missing, or damaged into bytes that are not text
        name = ""
    if "/" not in name and is_complete(root / name):
        return root / name
    complete = sorted(p for p in root.glob("step-*") if is_complete(p))
    return complete[-1] if complete else None


def check_new_run_dir(run_dir: Path, resume: str) -> None:
    """Refuse a run directory that a run is using, or that already holds a run (`resume` says how to continue it,
    e.g. "--resume RUN"), before any work."""
    check_run_not_in_use(run_dir)  # a run still going is "in use", not merely "already holds a run"
    if (run_dir / CHECKPOINTS).exists() or (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with {resume} or choose another --run-dir.")


def resume_target(path: str | Path) -> tuple[Path, Path | None]:
    """What `train --resume PATH` continues: (the run directory, the checkpoint to continue from, None for its
    latest). PATH is a run directory, its checkpoints folder, or one of its checkpoint directories. A run in use by
    another process is refused here, before anything else is read."""
    path = Path(path)
    if path.name == CHECKPOINTS and not (path / "config.json").is_file():
        path = path.parent
    in_checkpoints = path.parent.name == CHECKPOINTS and path.name.lstrip(".").startswith("step-")
    if not in_checkpoints and not (path / INFO_FILE).is_file():  # a run directory
        check_run_not_in_use(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a run directory (it has no config.json).")
        return path, None
    run_dir = path.parent.parent
    check_run_not_in_use(run_dir)  # (a checkpoint being pruned by the run that holds it is not "missing")
    if not path.is_dir():
        raise UserError(f"{path} is not a checkpoint directory; --resume takes a run directory or one of its "
                        f"checkpoints ({run_dir}/{CHECKPOINTS}/step-N).")
    if not in_checkpoints or not (run_dir / "config.json").is_file():
        raise UserError(f"{path} is a checkpoint outside a run directory; --resume takes a run directory "
                        f"or one of its checkpoints (RUN/{CHECKPOINTS}/step-N).")
    resolve_checkpoint(path)  # refused as `sample --checkpoint` would refuse it
    if not is_complete(path):
        raise UserError(f"{path} is not one of the run's complete checkpoints (it has a temporary name or no "
                        f"{INFO_FILE}); resume the run directory {run_dir} to continue from its latest complete "
                        "checkpoint.")
    return run_dir, path


def continue_from(run_dir: Path, checkpoint: Path, step: int) -> list[str]:
    """Make `checkpoint` (of step `step`) the run's latest: set aside its checkpoints of later steps and point
    `latest` at it; returns the names set aside. The later ones are no longer the run's history: renamed to hidden
    temporaries (`.step-N.superseded`) they are no checkpoint to `latest_checkpoint` or to pruning, and the next save
    deletes them with the other temporaries."""
    root = Path(run_dir) / CHECKPOINTS
    later = sorted(p for p in root.glob("step-*")
                   if is_complete(p) and (m := _STEP_NAME.fullmatch(p.name)) and int(m.group(1)) > step)
    for old in later:
        aside = root / f".{old.name}.superseded"
        shutil.rmtree(aside, ignore_errors=True)
        old.rename(aside)
    if latest_checkpoint(run_dir) != root / checkpoint.name:
        atomic_write_bytes(root / LATEST, f"{checkpoint.name}\n".encode())
    elif later:
        fsync_dir(root)
    return [p.name for p in later]


def resolve_checkpoint(path: str | Path | None, flag: str = "") -> tuple[Path, Path]:
    """(weights file, config file) of a bundled model's name (bundled.MODELS, a string: write `./emoji` for a folder
    of that name; None: the default model), a run dir, a checkpoint dir (its EMA weights) or a .safetensors file.
    `flag` (as "--train.init") leads each refusal where the path is not the command's model itself."""
    lead = f"{flag} " if flag else ""
    if path is None or (isinstance(path, str) and path in MODELS):
        path = bundled(path).weights
    path = Path(path)
    found = bundled_file(path) if path.parent == ASSETS else None
    if found and not path.is_file():
        model, steps = found
        what = f"{steps}-step student of the {model.name} model" if steps else f"{model.name} model"
        raise UserError(f"this installation has no bundled {what}; pass --checkpoint RUN_DIR.")
    if not path.exists():
        raise UserError(f"{lead}{path} does not exist; pass a run directory, a checkpoint directory or a .safetensors "
                        "file.")
    if path.is_dir() and (path / CHECKPOINTS).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"{lead}{path} holds no complete checkpoint yet.")
        path = found
    if path.is_dir() and (path / DIFFUSERS_WEIGHTS).is_file():
        path = path / DIFFUSERS_WEIGHTS
    if path.is_dir():
        if (path / INFO_FILE).exists():
            read_checkpoint_info(path)
        weights = path / EMA_FILE if (path / EMA_FILE).is_file() else path / MODEL_FILE
        if not weights.is_file() or not (path / CONFIG_FILE).is_file():
            raise UserError(f"{lead}{path} is not a checkpoint (no {EMA_FILE}/{MODEL_FILE} with {CONFIG_FILE}).")
        return weights, path / CONFIG_FILE
    if path.suffix != ".safetensors":
        raise UserError(f"{lead}{path} is not a .safetensors file; only safetensors weights are loaded.")
    for config in (path.with_suffix(".json"), path.parent / CONFIG_FILE):
        if config.is_file():
            return path, config
    raise UserError(f"{lead}{path} has no config beside it ({path.with_suffix('.json').name} or {CONFIG_FILE}).")


def load_weights(path: Path, flag: str = "") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; `flag` leads a refusal as in resolve_checkpoint."""
    lead = f"{flag} " if flag else ""
    if not Path(path).is_file():  # a named pipe would block the read forever, a device would never end
        raise UserError(f"{lead}{path} is not a regular file (a named pipe, a device or a folder); weights are read "
                        "only from files.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{lead}{path} is not a readable safetensors file ({err}); "
                        "it may be truncated or corrupted.") from None


def weights_mismatch(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str | None:
    """How the weights' names and shapes differ from the network's, in words; None if they agree exactly."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if not (missing or unexpected or wrong):
        return None
    example = (missing + unexpected + wrong)[0]
    return (f"{len(missing)} missing, {len(unexpected)} unexpected and {len(wrong)} wrongly shaped tensors "
            f"(e.g. {example})")


def first_non_finite(weights: dict[str, torch.Tensor]) -> str | None:
    """The name of a floating-point tensor holding NaN or infinity (a diverged run's weights); None if none does."""
    return next((name for name, tensor in weights.items()
                 if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)


def check_weights_fit(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], source: Path) -> None:
    """Names and shapes must agree exactly; a mismatch is one clear sentence."""
    detail = weights_mismatch(expected, weights)
    if detail:
        raise UserError(f"the weights in {source} do not match the network its config describes ({detail}).")


def load_into(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights strictly into `net`."""
    check_weights_fit(net.state_dict(), weights, source)
    net.load_state_dict(weights)


def load_starting_weights(nets: list[torch.nn.Module], source: str, class_names: tuple[str, ...] = ()) -> None:
    """train.init: a new run's network (and its EMA) start from another run's EMA weights. Their names and shapes
    must agree with this network's; a UNet's do not depend on the image size, so a run at one size may start a run
    at another. Data whose classes (`class_names`) are not the start's gets a fresh class table: the rows of the
    network's own initialisation, with the start's "no class" row, and the rest of the start's network."""
    weights_path, config_path = resolve_checkpoint(source, "train.init")
    weights = load_weights(weights_path, "train.init")
    own = nets[0].state_dict()
    table = next((key for key in own if key.endswith(CLASS_TABLE)), None)
    started = tuple(load_config(config_path).data.class_names)
    if (table in weights and weights[table].shape[1:] == own[table].shape[1:]  # another width: another network
            and (started != tuple(class_names) or weights[table].shape != own[table].shape)):
        fresh = own[table].clone()
        fresh[-1] = weights[table][-1]  # the "no class" token that classifier-free guidance samples with
        weights[table] = fresh
        print(f"train.init: these {len(class_names)} classes are not those of {source}; the network starts from it "
              "with a fresh class table")
    detail = weights_mismatch(own, weights)
    if detail:
        raise UserError(f"train.init {source} holds another network than this run's ({detail}); start from a run "
                        "of the same network, channels and classes.")
    broken = first_non_finite(weights)
    if broken:
        raise UserError(f"train.init {source} holds weights that are not finite (e.g. {broken}); start from an "
                        "earlier checkpoint of that run.")
    for net in nets:
        net.load_state_dict(weights)


def build_and_load(net_config, weights_path: Path) -> torch.nn.Module:
    """Build the network a config describes and load weights into it. It is first built on the "meta" device
    (shapes only, no memory), so a config that describes a huge network is refused before anything is allocated."""
    weights = load_weights(weights_path)
    with torch.device("meta"):
        check_weights_fit(build_network(net_config).state_dict(), weights, weights_path)
    net = build_network(net_config)
    net.load_state_dict(weights)
    return net


def read_checkpoint_info(checkpoint_dir: Path) -> dict:
    """checkpoint.json, refused if it is damaged or was written by a newer tinydiffusion."""
    info_path = Path(checkpoint_dir) / INFO_FILE
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not even text
        raise UserError(f"{info_path} cannot be read ({err}); the checkpoint is incomplete or damaged.") from None
    version = info.get("format_version", 0) if isinstance(info, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{info_path} is not a tinydiffusion checkpoint record (it has no integer format_version).")
    if version > FORMAT_VERSION:
        raise UserError(f"{checkpoint_dir} was written by a newer tinydiffusion (format {version}; this one reads "
                        f"up to {FORMAT_VERSION}); upgrade tinydiffusion to use it.")
    return info


def load_training_state(checkpoint_dir: Path) -> dict:
    """training_state.pt, refused unless it is plain data whose step is the checkpoint's own."""
    path = Path(checkpoint_dir) / STATE_FILE
    info = read_checkpoint_info(checkpoint_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        call = re.search(r"GLOBAL (\S+)", str(err))  # torch names the function the file would have called
        if call:
            raise UserError(f"{path} was refused: loading it would call {call.group(1)}, and tinydiffusion "
                            "never runs code from a file.") from None
        raise UserError(f"{path} was refused: it holds something other than tensors and plain data, "
                        "or is damaged.") from None
    except Exception as err:  # damaged bytes make the weights-only unpickler raise almost anything
        detail = str(err).split("\n")[0][:200]
        raise UserError(f"{path} cannot be read ({type(err).__name__}: {detail}); it may be truncated or "
                        "corrupted.") from None
    if not isinstance(state, dict) or "step" not in state:
        raise UserError(f"{path} is not a tinydiffusion training state.")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        raise UserError(f"{path} records step {repr(step)[:40]}, not a whole number from 0 to {MAX_STEP:,}; "
                        "the file is damaged.")
    by_name = _STEP_NAME.fullmatch(Path(checkpoint_dir).name)
    for recorded in (info.get("step"), int(by_name.group(1)) if by_name else None):
        if isinstance(recorded, int) and recorded != step:
            raise UserError(f"{path} records step {step}, but its checkpoint is of step {recorded}; "
                            "the checkpoint is damaged.")
    return state


def load_config(path: Path) -> RunConfig:
    try:
        config = RunConfig.from_json_file(path)
    except UserError:
        if is_classifier_config(path):  # the bundled FD classifier's .json sits beside the bundled model's
            raise UserError(f"{Path(path).with_suffix('.safetensors').name} is a feature classifier (the one evaluate "
                            "scores in), not a diffusion model; give a run directory, a checkpoint or a model's "
                            ".safetensors file.") from None
        raise
    config.validate()
    return config


def is_classifier_config(path: Path) -> bool:
    try:
        return json.loads(Path(path).read_text()).get("format") == "tinydiffusion-classifier"
    except (OSError, ValueError, AttributeError, RecursionError):
        return False
