"""TensorBoard event logs for `logging_dir`, with the tag names sd-scripts writes."""

from __future__ import annotations

import time
from pathlib import Path

from trainer.job.config import TrainConfig


class TrainingLog:
    """Writes scalars when `logging_dir` is set; every method is a no-op otherwise."""

    def __init__(self, cfg: TrainConfig, group_names: list[str]) -> None:
        self.folder: Path | None = None
        self._writer = None
        self._group_names = group_names
        self._recent: list[float] = []
        if not cfg.logging_dir:
            return
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package; only when asked for

        run = f"{cfg.output_name}_{time.strftime('%Y%m%d%H%M%S')}"
        self.folder = Path(cfg.logging_dir) / run / "network_train"
        self._writer = SummaryWriter(log_dir=str(self.folder))

    def step(self, step: int, loss: float, lrs: list[float]) -> None:
        if self._writer is None:
            return
        self._recent = (self._recent + [loss])[-100:]
        self._writer.add_scalar("loss/current", loss, step)
        self._writer.add_scalar("loss/average", sum(self._recent) / len(self._recent), step)
        for name, lr in zip(self._group_names, lrs, strict=False):
            self._writer.add_scalar(f"lr/{name}", lr, step)

    def epoch(self, epoch: int, mean_loss: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar("loss/epoch", mean_loss, epoch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
