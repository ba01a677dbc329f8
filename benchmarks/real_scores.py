"""The real held-out images scored as if they were a model's samples: the classifier's accuracy on real images of
each category is the ceiling a model's class accuracy can reach (`evaluate --samples` of them, in the features of
the classifier trained on DATA at SIZE pixels).

    python benchmarks/real_scores.py runs/emoji-twitter/test --data runs/emoji-twitter/train --size 64 --json OUT
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation.samples import save_npz


def evaluate(args: list[str], out: Path) -> dict:
    """`tinydiffusion evaluate ARGS --json OUT` in a subprocess, as a user runs it; its scores."""
    command = [sys.executable, "-m", "tinydiffusion", "evaluate", *args, "--json", str(out)]
    print("$ tinydiffusion evaluate " + " ".join(args), flush=True)
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def real_scores(folder: str, data: str, size: int, channels: int, out: Path) -> dict:
    """The held-out folder's images, prepared as training prepares them, scored as samples into OUT."""
    real = load_data(DataConfig(source=folder, image_size=size, channels=channels), "train", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "real.npz"
        save_npz(npz, real.images.numpy(), real.labels.numpy(), real.class_names)
        return evaluate(["--samples", str(npz), "--data", data, "--data.image_size", str(size),
                         "--data.channels", str(channels)], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the held-out split's folder")
    parser.add_argument("--data", required=True, help="the training folder whose classifier scores them")
    parser.add_argument("--size", type=int, required=True, help="the image size, as the models were trained")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--json", required=True, help="write the scores here")
    args = parser.parse_args()
    try:
        scores = real_scores(args.folder, args.data, args.size, args.channels, Path(args.json))
    except (UserError, OSError, subprocess.CalledProcessError) as err:  # evaluate said its own sentence already
        parser.error(str(err))
    accuracy = scores["per_class_accuracy"]
    print(f"class accuracy {scores['class_accuracy']:.3f} over the images, {sum(accuracy) / len(accuracy):.3f} "
          "over the categories")


if __name__ == "__main__":
    main()
