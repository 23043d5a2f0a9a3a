"""What the trainer reports while it runs; the worker and the CLI subclass `Callbacks`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    loss: float
    lr: float
    images_per_sec: float
    eta_seconds: float | None


@dataclass(frozen=True)
class EpochSaved:
    epoch: int
    step: int
    path: Path
    metadata: dict[str, str]
    mean_loss: float
    validation_loss: float | None = None  # on the held-out images (validation_data_dir), when there are any


@dataclass(frozen=True)
class PreviewsReady:
    epoch: int
    paths: list[Path]


class Callbacks:
    def on_progress(self, progress: Progress) -> None:
        pass

    def on_epoch_saved(self, saved: EpochSaved) -> None:
        pass

    def on_previews(self, previews: PreviewsReady) -> None:
        pass

    def on_state_saved(self, folder: Path, epoch: int) -> None:
        """A resumable state for the end of `epoch` is complete in `folder` (only with save_state)."""

    def on_log(self, message: str) -> None:
        pass

    def previews_missing(self, epoch: int) -> bool:
        """Asked on resume about the epoch the state ends with: its previews were due but may not have been kept
        (the run stopped between storing the state and rendering them). True renders them before going on."""
        return False

    def should_stop(self) -> bool:
        return False
