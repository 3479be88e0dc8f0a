"""Windows of the prepared data (airwatt.prepare.windows.WindowDataset) as Lightning dataloaders.

Windows are cut lazily from memory-mapped arrays; workers and DDP ranks open their own maps.

Several processes (DDP, ``train.devices``): ``batch_size`` is the global batch, B / N windows per process.
Every process draws the same seeded order of training windows per epoch (EpochDraw) and process r of N
takes its positions r, r + N, r + 2N...: the k-th global batch holds positions kB..(k+1)B-1 of the draw,
the windows one process would put in its k-th batch, so N processes see the same data, batch for batch, as
one (Lightning's own DistributedSampler would replace the draw with a permutation of its own). Validation
windows are dealt the same way (r, r + N, ...): together the processes score the same windows as one.

``source_weights`` ({source dataset: weight}) sets the training mix: a window of source s is drawn with
probability weight_s / (sum of weights x windows of s), so each source gets its weight's share of the
training windows whatever its size (torch's WeightedRandomSampler, with replacement). A source of the data
without a weight is an error naming it; weight 0 leaves a source out. Empty: every window alike (shuffle).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from airwatt.config import AugmentParams
from airwatt.errors import ConfigError, DataError
from airwatt.models.base import TargetPosition
from airwatt.prepare.activations import PAD_S
from airwatt.prepare.windows import WindowDataset
from airwatt.training.augment import ActivationBank, AugmentedWindows


class WindowDataModule(L.LightningDataModule):
    """Train (shuffled, every ``stride`` slots) and validation (every ``val_stride`` slots) windows; with
    ``targets`` S > 1, chunks of S targets each (airwatt.prepare.windows), the validation chunks S slots
    apart (every validation target once)."""

    def __init__(
        self,
        prepared_dir: Path,
        *,
        window_length: int,
        target: TargetPosition,
        stride: int,
        val_stride: int,
        max_invalid_fraction: float,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        source_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        augment: AugmentParams | None = None,
        aggregate_norm: tuple[float, float] | None = None,
        targets: int = 1,
    ) -> None:
        super().__init__()
        self.targets = targets
        self.prepared_dir = Path(prepared_dir)
        self.window_length = window_length
        self.target: TargetPosition = target
        self.stride = stride
        self.val_stride = val_stride
        self.max_invalid_fraction = max_invalid_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.source_weights = dict(source_weights or {})
        self.seed = seed
        self.augment = augment
        self.aggregate_norm = aggregate_norm
        self.bank: ActivationBank | None = None
        self.train_set: WindowDataset | AugmentedWindows | None = None
        self.val_set: WindowDataset | None = None

    def windows(self, split: str, stride: int) -> WindowDataset:
        """The usable windows of one split; DataError when there are none."""
        ds = WindowDataset(
            self.prepared_dir,
            split,
            self.window_length,
            target=self.target,
            stride=stride,
            max_invalid_fraction=self.max_invalid_fraction,
            aggregate_norm=self.aggregate_norm,
            targets=self.targets,
        )
        if len(ds) == 0:
            raise DataError(
                f"no usable {self.window_length}-reading windows"
                f"{f' (chunks of {self.targets} targets)' if self.targets > 1 else ''} in split {split!r} "
                f"({len(ds.index['devices'])} devices; max_invalid_fraction {self.max_invalid_fraction})",
                file=self.prepared_dir / split,
            )
        return ds

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            windows = self.windows("train", self.stride)
            self.train_set = self._augmented(windows) if self.augment and self.augment.enabled else windows
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self.windows("val", self.val_stride if self.targets == 1 else self.targets)

    def _augmented(self, windows: WindowDataset) -> AugmentedWindows:
        """The training windows with activation augmentation (airwatt.training.augment); its bank comes from
        the training split only."""
        assert self.augment is not None
        interval_s = float(windows.index["interval_s"])
        self.bank = ActivationBank.from_split(
            windows,
            pad_slots=round(PAD_S / interval_s),
            max_slots=round(self.augment.max_s / interval_s),
            max_per_appliance=self.augment.max_per_appliance,
            seed=self.seed,
        )
        return AugmentedWindows(
            windows,
            self.bank,
            add_ratio=self.augment.add_ratio,
            remove_ratio=self.augment.remove_ratio,
            seed=self.seed,
            distract_ratio=self.augment.distract_ratio,
            scale_jitter=self.augment.scale_jitter,
        )

    def mix(self) -> dict[str, dict[str, float]]:
        """Per source of the training windows: windows and the share of draws (what MLflow logs)."""
        assert self.train_set is not None, "setup('fit') runs first"
        names, counts = np.unique(self.train_set.window_sources().astype(str), return_counts=True)
        weights = self.source_weights or {str(n): float(c) for n, c in zip(names, counts, strict=True)}
        missing = [str(n) for n in names if str(n) not in weights]
        if missing:
            raise ConfigError(
                f"train.source_weights has no weight for source(s) {missing} of the training data "
                f"(sources: {[str(n) for n in names]})"
            )
        total = sum(weights[str(n)] for n in names)
        if total <= 0:
            raise ConfigError(
                f"train.source_weights gives every source of the training data weight 0 "
                f"(sources: {[str(n) for n in names]})"
            )
        return {
            str(n): {"windows": float(c), "share": weights[str(n)] / total}
            for n, c in zip(names, counts, strict=True)
        }

    def draw_weights(self) -> torch.Tensor | None:
        """(n,) draw weight of every training window under ``source_weights``; None without them."""
        if not self.source_weights:
            return None
        assert self.train_set is not None
        mix = self.mix()
        names, which = np.unique(self.train_set.window_sources().astype(str), return_inverse=True)
        per_window = np.array([mix[str(n)]["share"] / mix[str(n)]["windows"] for n in names])
        return torch.as_tensor(per_window[which], dtype=torch.double)

    def ranks(self) -> tuple[int, int]:
        """(this process's rank, number of processes) of the Trainer using us; (0, 1) without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def rank_batch_size(self) -> int:
        """Windows per batch in this process: ``batch_size`` (the global batch) over the processes."""
        processes = self.ranks()[1]
        if self.batch_size % processes:
            raise ConfigError(
                f"train.batch_size {self.batch_size} is the global batch, split evenly between the "
                f"{processes} training processes (train.devices): make it a multiple of {processes}"
            )
        return self.batch_size // processes

    def sampler(self) -> EpochDraw:
        """This process's share of each epoch's training draw (EpochDraw)."""
        assert self.train_set is not None, "setup('fit') runs first"
        rank, processes = self.ranks()
        return EpochDraw(len(self.train_set), self.seed, rank, processes, self.draw_weights())

    def _loader(self, ds: WindowDataset | AugmentedWindows | None, train: bool) -> DataLoader:
        assert ds is not None, "setup() runs before the dataloaders"
        rank, processes = self.ranks()
        batch_size = self.rank_batch_size()
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=self.sampler() if train else range(rank, len(ds), processes),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=train and len(ds) // processes > batch_size,  # a batch of 1 breaks batch norm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)


class EpochDraw(Sampler[int]):
    """Process ``rank`` of ``processes``: positions rank, rank + processes, ... of the epoch's draw.

    The draw (seeded by seed + epoch, the same in every process) is a permutation of the ``n`` windows, or
    with ``weights`` n windows drawn with replacement (torch's WeightedRandomSampler's draw). The last
    n mod processes positions are left out, so every process takes as many steps (DDP averages the gradients
    at every step). Lightning calls ``set_epoch`` before each epoch, including a resumed one.
    """

    def __init__(
        self, n: int, seed: int, rank: int = 0, processes: int = 1, weights: torch.Tensor | None = None
    ) -> None:
        self.n, self.seed, self.rank, self.processes, self.weights = n, seed, rank, processes, weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> torch.Tensor:
        """(n,) window indices of this epoch, the same in every process."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank : len(self) * self.processes : self.processes].tolist())

    def __len__(self) -> int:
        return self.n // self.processes
