"""Windows of the prepared data (airwatt.prepare.WindowDataset) as Lightning dataloaders.

Windows are cut lazily from memory-mapped arrays; workers and DDP ranks open their own maps. Under DDP,
Lightning adds the distributed sampler itself.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from airwatt.errors import DataError
from airwatt.models.base import TargetPosition
from airwatt.prepare.windows import WindowDataset


class WindowDataModule(L.LightningDataModule):
    """Train (shuffled, every ``stride`` slots) and validation (every ``val_stride`` slots) windows."""

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
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.window_length = window_length
        self.target: TargetPosition = target
        self.stride = stride
        self.val_stride = val_stride
        self.max_invalid_fraction = max_invalid_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: WindowDataset | None = None
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
        )
        if len(ds) == 0:
            raise DataError(
                f"no usable {self.window_length}-reading windows in split {split!r} "
                f"({len(ds.index['devices'])} devices; max_invalid_fraction {self.max_invalid_fraction})",
                file=self.prepared_dir / split,
            )
        return ds

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self.windows("train", self.stride)
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self.windows("val", self.val_stride)

    def _loader(self, ds: WindowDataset | None, shuffle: bool) -> DataLoader:
        assert ds is not None, "setup() runs before the dataloaders"
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(ds) > self.batch_size,  # a batch of 1 breaks batch norm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
