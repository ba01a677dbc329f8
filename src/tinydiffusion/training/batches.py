"""The batch of each step: the epoch's order of the data, the images (flipped), their labels (dropped to the null
class), the noise and the task's draws (the times t, for denoising).

One process or many (torchrun) draw the same way. Every process draws the noise, the task's values, the
label-dropout mask and the flips of the whole *global* batch from one shared generator and keeps its own slice, so
N processes take exactly the steps one process would with the same global batch and seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..data import ImageDataset
from ..data.pixels import to_model_space
from ..errors import UserError
from .state import RunState


@dataclass(frozen=True)
class Batch:
    x0: torch.Tensor  # this process's images, in model space
    y: torch.Tensor | None  # their classes, num_classes (the null class) where dropped; None: unconditional
    noise: torch.Tensor
    drawn: tuple[torch.Tensor, ...]  # what the task drew per image (the times t, for denoising)


def epoch_order(num_images: int, seed: int, epoch: int, device: torch.device, labels: torch.Tensor | None = None,
                class_balance: float = 0.0) -> torch.Tensor:
    """The order of the dataset for one epoch; a function of (seed, epoch) alone, so resumable. A permutation, or
    with class_balance above 0 (and labels), num_images draws with replacement that favour the rarer classes
    (balanced_draw)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if labels is None or class_balance == 0:
        return torch.randperm(num_images, generator=generator).to(device)
    return balanced_draw(labels, class_balance, num_images, generator).to(device)


def balanced_draw(labels: torch.Tensor, class_balance: float, num: int, generator: torch.Generator) -> torch.Tensor:
    """`num` image indices drawn with replacement: a class of n images in proportion to n ** (1 - class_balance),
    then one of its images uniformly. 0 keeps the data's own frequencies, 1 draws every class equally often, 0.5
    in proportion to the square root of its count (the square-root sampling of Mahajan et al. 2018, sec. 3.1)."""
    labels = torch.as_tensor(labels).cpu().long()
    counts = torch.bincount(labels).double()
    share = torch.where(counts > 0, counts.clamp(min=1) ** (1 - class_balance), 0.0)
    classes = torch.multinomial(share, num, replacement=True, generator=generator)
    by_class = torch.argsort(labels, stable=True)  # the images' indices, class 0's first, then class 1's, ...
    first = torch.cumsum(counts, 0) - counts  # where each class's run of indices starts in by_class
    within = (torch.rand(num, generator=generator, dtype=torch.float64) * counts[classes]).long()
    return by_class[first[classes].long() + within]


def steps_per_epoch(dataset: ImageDataset, batch_size: int) -> int:
    """Whole global batches in one pass over the data (the rest of an epoch's order is left out)."""
    steps = len(dataset) // batch_size
    if steps == 0:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}.")
    return steps


class Batches:
    def __init__(self, run: RunState, dataset: ImageDataset):
        self.config, self.task, self.generator, self.device = run.config, run.task, run.generator, run.device
        batch_size, rank = run.config.train.batch_size, run.dist.rank
        self.num_images, self.steps_per_epoch = len(dataset), steps_per_epoch(dataset, batch_size)
        local_batch = batch_size // run.dist.world_size
        self.mine = slice(rank * local_batch, (rank + 1) * local_batch)  # this process's slice of a global batch
        # The whole dataset stays resident on the device, unless it is memory-mapped (too big for memory):
        # then batches are gathered on the host and copied over.
        self.on_host = dataset.memory_mapped
        self.images = dataset.images if self.on_host else dataset.images.to(self.device)
        self.labels = dataset.labels if self.on_host or dataset.labels is None else dataset.labels.to(self.device)
        self.order, self.order_epoch = None, None

    def draw(self, step: int) -> Batch:
        """This process's slice of the global batch of `step`, with the global batch's noise, the task's draws and
        the label dropout."""
        batch_size, net, mine = self.config.train.batch_size, self.config.net, self.mine
        epoch, index_in_epoch = divmod(step, self.steps_per_epoch)  # one flat count of steps; the epoch follows
        if self.order_epoch != epoch:  # a new epoch, or a resume inside one: that epoch's order of the data
            self.order = epoch_order(self.num_images, self.config.train.seed, epoch, self.device, self.labels,
                                     self.config.train.class_balance)
            self.order_epoch = epoch
        global_idx = self.order[index_in_epoch * batch_size:(index_in_epoch + 1) * batch_size]
        shape = (batch_size, net.in_channels, net.image_size, net.image_size)
        noise = torch.randn(shape, generator=self.generator, device=self.device)
        drawn = self.task.draw(batch_size, self.generator, self.device)
        drop = torch.rand(batch_size, generator=self.generator, device=self.device) < self.config.train.label_dropout
        idx = global_idx[mine]
        host_idx = idx.cpu() if self.on_host else idx
        x0 = self.images[host_idx].to(self.device, non_blocking=True)
        x0 = to_model_space(x0) if x0.dtype == torch.uint8 else x0  # a latent run's are standardised already
        if self.config.data.hflip:  # drawn for the whole global batch, like the noise, so any process count agrees
            flip = (torch.rand(batch_size, generator=self.generator, device=self.device) < 0.5)[mine]
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        y = None
        if net.num_classes > 0:
            y = torch.where(drop[mine], net.num_classes, self.labels[host_idx].to(self.device))
        return Batch(x0, y, noise[mine], tuple(values[mine] for values in drawn))


def check_data_fits(config: RunConfig, dataset: ImageDataset) -> None:
    """The data's shape and classes against the network's, and a resumed run's data against the data it began on."""
    _, c, h, w = dataset.images.shape
    n = config.net
    if (c, h, w) != (n.in_channels, n.image_size, n.image_size):
        raise UserError(f"the data is {c}x{h}x{w} but the network expects "
                        f"{n.in_channels}x{n.image_size}x{n.image_size}; set --net.in_channels/--net.image_size.")
    if n.num_classes > 0 and dataset.labels is None:
        raise UserError(f"{config.data.source} is unlabelled (no class folders), but the network is "
                        f"class-conditional ({n.num_classes} classes); set --net.num_classes 0.")
    if config.train.class_balance and dataset.labels is None:
        raise UserError(f"{config.data.source} is unlabelled (no class folders), so there are no classes for "
                        "--train.class_balance to balance; drop it.")
    if n.num_classes > 0 and len(dataset.class_names) > n.num_classes:
        raise UserError(f"{config.data.source} has {len(dataset.class_names)} classes but the network "
                        f"has {n.num_classes}; set --net.num_classes {len(dataset.class_names)}.")
    recorded = config.data.prepared_sha256
    if recorded and recorded != dataset.manifest.get("sha256", recorded):
        raise UserError(f"the data of this run ({config.data.source}) has changed since it started; "
                        "a resumed run needs the same images. Start a new --run-dir to train on the new data.")


def record_data(config: RunConfig, dataset: ImageDataset) -> RunConfig:
    """The config with what the run trains on written into it, so config.json says (and sampling knows)
    the data's size, shape (the images', for a latent run too), class names and the prepared array's hash, and for a
    latent run (data/latents.py) the statistics its latents were standardised with."""
    manifest = dataset.manifest
    latent = {"latent_mean": tuple(manifest["latent_mean"]), "latent_std": tuple(manifest["latent_std"])} \
        if "latent_mean" in manifest else {}
    data = dataclasses.replace(config.data, num_images=len(dataset),
                               image_shape=tuple(manifest.get("pixel_shape") or dataset.images.shape[1:]),
                               class_names=tuple(dataset.class_names) if dataset.labels is not None else (),
                               prepared_sha256=manifest.get("sha256", ""), **latent)
    return dataclasses.replace(config, data=data)
