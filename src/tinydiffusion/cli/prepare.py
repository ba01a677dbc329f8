"""`tinydiffusion prepare SOURCE --out FILE.npy`: a source of images decoded once into a prepared array."""

from __future__ import annotations

from ..config import DataConfig, RunConfig, apply_overrides, config_fields
from ..data import NAMED
from .common import check_not_an_input, field_help, metavar, output_path, overrides, writing


def add(sub) -> None:
    p = sub.add_parser("prepare", help="decode a dataset once into a prepared array (.npy + JSON manifest)",
                       description="Decode a source of images into a prepared uint8 array ahead of training "
                       "(on a cluster's login node, say); then train with --data FILE.")
    p.add_argument("source", help=f"a folder of images, a .zip, an .npz/.npy, or a named dataset ({', '.join(NAMED)})")
    p.add_argument("--out", required=True, help="the prepared file, FILE.npy (FILE.labels.npy and FILE.json beside it)")
    p.add_argument("--data-dir", dest="data.data_dir", default=None, metavar="DIR", help="where a named dataset's "
                   "files are (default: the cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    fields = dict(config_fields())
    for dotted in ("data.image_size", "data.channels", "data.alpha_background", "data.download"):
        p.add_argument(f"--{dotted}", dest=dotted, default=None, metavar=metavar(dotted, fields[dotted]),
                       help=field_help(RunConfig(), dotted, fields[dotted]))
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data import prepare_source

    out = output_path(args.out, "--out", (".npy",))
    check_not_an_input(out, "--out", [("source", args.source)])
    config = apply_overrides(RunConfig(data=DataConfig(source=args.source)), overrides(args))
    config.validate()
    with writing(out):
        prepare_source(config.data, out, progress=not args.no_progress)
    print(f"wrote {out} (use it with: tinydiffusion train --data {out})")
    return 0
