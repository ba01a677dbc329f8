"""`tinydiffusion evaluate`: a model's samples, or a file of samples, scored against real data (evaluation/)."""

from __future__ import annotations

import dataclasses

from ..autoencoders import image_shape
from ..bundled import DEFAULT_MODEL
from ..config import DataConfig, RunConfig, apply_overrides
from ..data import NAMED
from ..data.named import BUNDLED_DATASET
from ..errors import UserError
from ..files import atomic_write_bytes
from .common import (
    add_checkpoint,
    add_sampling_options,
    check_not_an_input,
    model_source,
    output_path,
    run_sampling,
    sampling_flags,
    writing,
)


def add(sub) -> None:
    p = sub.add_parser("evaluate", help="score samples: FD in a classifier's features of the data, precision, recall",
                       description="Score a model's samples, or a file of samples, against real data: FD in the "
                       f"features of a classifier of that data ({BUNDLED_DATASET.title}'s bundled one; for any other "
                       "labelled data, one trained once on its train split and cached), with the floor of N real "
                       "images, precision, recall and class accuracy. Unlabelled data gets Inception FID through "
                       "torch-fidelity, where it and its weights are installed.")
    add_checkpoint(p, positional=True)  # a run is scored against the data it was trained on
    p.add_argument("--samples", help="score the images in this .npz (arr_0: uint8 N x H x W x C, optional labels) "
                   "instead")
    add_sampling_options(p, default_num=10_000)
    p.add_argument("--data", metavar="SOURCE", help=f"score against this data: a named dataset ({', '.join(NAMED)}), "
                   f"a folder of images, a .zip or an .npz/.npy (default: the run's own data; {DataConfig().source} "
                   "with --samples)")
    p.add_argument("--data-dir", metavar="DIR", help="where a named dataset's files are (default: the run's; else the "
                   "cache, where train downloads them)")
    p.add_argument("--data.download", dest="data.download", default=None, metavar="BOOL",
                   help="download a named dataset that is missing (default: false, unlike train's true: evaluate "
                   "never downloads unless told to, even for a run whose training did)")
    for field, what in (("image_size", "resize the data's images to N pixels, as train does"),
                        ("channels", "convert the data's images to N channels (1 or 3), as train does")):
        p.add_argument(f"--data.{field}", dest=f"data.{field}", default=None, metavar="N",
                       help=f"{what}: e.g. 32-pixel --samples against a folder of 64-pixel images (default: the run's "
                       "own; the data's own with --samples)")
    p.add_argument("--json", metavar="FILE", help="also write the figures to this FILE.json (replaced if it exists)")
    p.add_argument("--inception", action="store_true",
                   help="also compute Inception FID (needs torch-fidelity and its weights)")
    p.set_defaults(run=run)


def evaluation_data(args, model=None) -> DataConfig:
    """What to score against: a run's own data (its config.data, so the same shape), or --data; --data-dir,
    --data.download, --data.image_size and --data.channels apply to either. A bundled model's recorded folder is
    where it was trained, so not used: the default one is scored against its named dataset, another (its shape
    kept) against the folder --data names."""
    other_bundled = model is not None and args.model not in (None, DEFAULT_MODEL)  # its shape, your folder
    if other_bundled and not args.data:
        raise UserError(f"the bundled {args.model} model is scored against a folder of such images: add --data "
                        "FOLDER, a train folder with its test folder beside it (as emoji/train).")
    data = model.config.data if model is not None and (args.checkpoint or other_bundled) else DataConfig()
    data = dataclasses.replace(data, autoencoder="", latent_mean=(), latent_std=())  # samples are scored as pixels
    if args.data:
        data = dataclasses.replace(data, source=args.data, data_dir="")
    if args.data_dir:
        data = dataclasses.replace(data, data_dir=args.data_dir)
    download = getattr(args, "data.download")
    given = {"data.download": False if download is None else download}
    given.update({name: getattr(args, name) for name in ("data.image_size", "data.channels")
                  if getattr(args, name) is not None})
    config = apply_overrides(RunConfig(data=data), given)
    config.validate()  # a bad size or channel count is one sentence before any data is read
    return config.data


def run(args) -> int:
    import json
    import time

    from .. import evaluation
    from ..pipeline import load_model, sampling_settings

    started = time.perf_counter()
    json_out = output_path(args.json, "--json", (".json",)) if args.json else None
    if json_out and args.samples:
        check_not_an_input(json_out, "--json", [("--samples", args.samples)])
    # The data, classifier and reference are made ready before any sample is drawn: a missing dataset or
    # an unscorable one is one sentence, not an error after minutes of sampling.
    if args.samples:
        if args.checkpoint or args.model:
            raise UserError("give either a model or --samples, not both.")
        images, labels = evaluation.load_samples_npz(args.samples)  # N x H x W x C
        evaluator = evaluation.Evaluator(evaluation_data(args), inception=args.inception,
                                         sample_shape=(images.shape[3], *images.shape[1:3]))
        info = {"source": str(args.samples)}
    else:
        model = load_model(model_source(args), args.device)
        evaluator = evaluation.Evaluator(evaluation_data(args, model), inception=args.inception,
                                         sample_shape=image_shape(model.config),
                                         model_classes=model.class_names)
        images, labels = run_sampling(args, model)
        sampler, steps, guidance = sampling_settings(model, **sampling_flags(args))
        info = {"source": str(model.source), "sampler": sampler, "steps": steps, "guidance": guidance}
    result = evaluator.score(images, labels)
    result.update(info, seconds=time.perf_counter() - started)
    print(evaluation.format_table(result))
    if json_out:
        with writing(json_out):
            atomic_write_bytes(json_out, (json.dumps(result, indent=2, default=float) + "\n").encode())
        print(f"wrote {json_out}")
    return 0
