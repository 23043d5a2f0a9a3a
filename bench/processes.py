"""Two processes against one on the CPU (gloo): the same run, the same global batch (one process accumulates two
batches per step, each of two processes takes one), timed per optimizer step in this process, reported as a ratio
(below 1.0: two processes step faster; the ideal on two cores is 0.5).

    python -m bench.processes [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainer.training.callbacks import Callbacks, Progress


class StepClock(Callbacks):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_progress(self, p: Progress) -> None:
        self.times.append(time.perf_counter())

    def per_step(self) -> float:
        """The median time between steps, the first (warm-up) and the epochs' ends left out by the median."""
        return statistics.median(b - a for a, b in zip(self.times[1:], self.times[2:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    from trainer.data.synthetic import make_dataset
    from trainer.families.tiny import make_tiny
    from trainer.job.config import build_config
    from trainer.training.ranks import train_processes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny(root / "model", "sd15")
        make_dataset(root / "data", count=args.images, repeats=1, sizes=((64, 64),))
        clocks = {}
        for name, extra in (("1 process, accumulation 2", {"gradient_accumulation_steps": 2}),
                            ("2 processes", {"gpus": 2})):
            cfg = build_config({"pretrained_model_name_or_path": str(model), "train_data_dir": str(root / "data"),
                                "output_dir": str(root / name.replace(" ", "-")), "resolution": "64",
                                "train_batch_size": 2, "max_train_epochs": args.epochs, "network_dim": 8,
                                "network_alpha": 8, "cache_latents": True, "learning_rate": 1e-4, **extra})
            clocks[name] = StepClock()
            train_processes(cfg, clocks[name])
        one, two = (clocks[name].per_step() for name in clocks)
        print(f"cpu tiny sd15, global batch 4 at 64 px: 1 process {one * 1e3:.1f} ms/step, 2 processes "
              f"{two * 1e3:.1f} ms/step, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
