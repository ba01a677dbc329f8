"""The models that ship with the package, by name: `--model NAME` on the commands that draw, `--train.init NAME`,
`load_model(NAME)`. Adding one is its weights and config in assets/ plus one entry here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class BundledModel:
    name: str
    file: str  # its EMA weights in assets/, with its config beside them (the same name, .json)
    about: str  # what it draws, for --help
    students: dict[int, str] = field(default_factory=dict)  # its distilled students by their steps (--fast)
    fast_steps: int = 4  # the student --fast uses without --steps

    @property
    def weights(self) -> Path:
        return ASSETS / self.file

    def student(self, steps: int | None = None) -> Path:
        """The distilled student of `steps` steps (default: fast_steps); one sentence if there is none."""
        steps = self.fast_steps if steps is None else steps
        if steps not in self.students:
            raise UserError(f"--fast draws with the {self.name} model's bundled students of "
                            f"{', '.join(map(str, sorted(self.students)))} steps, not {steps}; choose one of those "
                            "--steps.")
        return ASSETS / self.students[steps]


MODELS = {model.name: model for model in (
    BundledModel("fashion-mnist", "fashion-mnist.safetensors", "28x28 grey clothes of Fashion-MNIST's 10 classes",
                 {4: "fashion-mnist-student.safetensors", 2: "fashion-mnist-student-2.safetensors",
                  1: "fashion-mnist-student-1.safetensors"}),
    BundledModel("emoji", "emoji.safetensors", "32x32 colour emoji of 9 categories (Noto and Twemoji)",
                 {4: "emoji-student.safetensors"}),
)}
DEFAULT_MODEL = "fashion-mnist"


def bundled(name: str | None = None) -> BundledModel:
    """The bundled model of that name (default: DEFAULT_MODEL); an unknown name is one sentence naming them all."""
    name = DEFAULT_MODEL if name is None else name
    if name not in MODELS:
        raise UserError(f"there is no bundled model named {name!r}; the bundled models are {', '.join(MODELS)}.")
    return MODELS[name]


def bundled_file(path: Path) -> tuple[BundledModel, int | None] | None:
    """(the bundled model, the student's steps or None) whose file has this name, else None. By name alone: a
    record of where a bundled model was made names no path of this machine."""
    for model in MODELS.values():
        if path.name == model.file:
            return model, None
        for steps, student in model.students.items():
            if path.name == student:
                return model, steps
    return None
