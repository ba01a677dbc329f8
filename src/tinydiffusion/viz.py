"""Figures with Pillow alone: sample grids, the forward-diffusion strip, the reverse process, a GIF."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .data.pixels import to_model_space, to_pixels
from .diffusion import GaussianDiffusion
from .files import atomic_write_bytes


def grid_image(images: torch.Tensor, nrow: int | None = None, padding: int = 2, scale: int = 1) -> Image.Image:
    """uint8 [N, C, H, W] (C = 1 or 3) -> one PIL image, `nrow` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top:top + h, left:left + w] = images[i]
    array = canvas.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_image(image: Image.Image, path: str | Path, **save_options) -> None:
    """Save atomically, so an interrupted write never leaves half an image under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="GIF" if path.suffix.lower() == ".gif" else "PNG", **save_options)
    atomic_write_bytes(path, buffer.getvalue())


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> None:
    save_image(grid_image(images, nrow, scale=scale), path)


def labelled_rows(rows: list[torch.Tensor], column_labels: list[str], scale: int = 3) -> Image.Image:
    """Rows of uint8 [K, C, H, W] images under a header of column labels (e.g. timesteps or class names)."""
    grid = grid_image(torch.cat(rows), nrow=rows[0].shape[0], scale=scale)
    header = 14
    canvas = Image.new(grid.mode, (grid.width, grid.height + header), "white")  # 255 alone is red in RGB
    canvas.paste(grid, (0, header))
    draw = ImageDraw.Draw(canvas)
    cell = grid.width / len(column_labels)
    for i, label in enumerate(column_labels):
        while len(label) > 1 and draw.textlength(label) > cell - 6:  # a long name is cut to its column
            label = label[:-1]
        draw.text((i * cell + 4, 1), label, fill="black")
    return canvas


def class_columns(images: torch.Tensor, class_names: tuple[str, ...], scale: int = 2) -> Image.Image:
    """Samples drawn for every class in turn (image i of class i % K) as K named columns."""
    return labelled_rows(list(images.split(len(class_names))), list(class_names), scale=scale)


def forward_strip(diffusion: GaussianDiffusion, images_uint8: torch.Tensor, columns: int = 9,
                  seed: int = 0) -> Image.Image:
    """Each image noised with q(x_t | x_0) at evenly spaced t from 0 to T (one row per image)."""
    T = diffusion.num_timesteps
    ts = [round(i * (T - 1) / (columns - 1)) for i in range(columns)]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for image in images_uint8:
        x0 = to_model_space(image[None]).repeat(columns, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = diffusion.q_sample(x0, diffusion.step_time(ts), noise)
        x_t[0] = x0[0]  # t = 0 column: the clean image itself
        rows.append(to_pixels(x_t))
    return labelled_rows(rows, ["x0"] + [f"t={t + 1}" for t in ts[1:]])


class ReverseRecorder:
    """A sampler callback that keeps x_t at every step, for the "samples at each t" figure and GIFs.

    generate() samples batch after batch, each calling back at steps 0, 1, ...; a later batch's x_t joins
    the earlier batches' chunks of the same step, so frame k holds every image at step k, in order (joined only for
    the steps a figure shows)."""

    def __init__(self):
        self.chunks: list[list[torch.Tensor]] = []  # per step: each batch's x_t
        self.timesteps: list[float] = []

    def __call__(self, i: int, t: float, x_t: torch.Tensor, x0_pred: torch.Tensor) -> None:
        if i == len(self.chunks):  # the first batch to reach this step
            self.chunks.append([])
            self.timesteps.append(t)
        self.chunks[i].append(x_t.detach().float().cpu())

    def _even_picks(self, k: int) -> list[int]:
        """Up to k recorded steps, evenly spread, always the first and the last."""
        k = min(k, len(self.chunks))
        if k < 2:
            return [len(self.chunks) - 1]
        return sorted({round(i * (len(self.chunks) - 1) / (k - 1)) for i in range(k)})

    def figure(self, columns: int = 10) -> Image.Image:
        """Rows: samples; columns: evenly chosen recorded steps, the last being the final image."""
        picks = self._even_picks(columns)
        frames = [to_pixels(torch.cat(self.chunks[p])) for p in picks]
        rows = [torch.stack([f[j] for f in frames]) for j in range(frames[0].shape[0])]
        labels = [f"t={int(self.timesteps[p])}" for p in picks]
        labels[-1] = "t=0"
        return labelled_rows(rows, labels, scale=2)

    def save_gif(self, path: str | Path, nrow: int | None = None, max_frames: int = 60, frame_ms: int = 80) -> None:
        """At most `max_frames` evenly chosen steps (a 1000-step DDPM would make a 35 MB file)."""
        picks = self._even_picks(max_frames)
        frames = [grid_image(to_pixels(torch.cat(self.chunks[p])), nrow, scale=2) for p in picks]
        frames += [frames[-1]] * 12  # hold the final image
        save_image(frames[0], path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
