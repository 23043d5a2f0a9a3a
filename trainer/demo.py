"""`make run`: train a demo LoRA on the embedded tiny model with a generated dataset, from the CLI path."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.cli import TerminalCallbacks
from trainer.data.synthetic import make_dataset
from trainer.job.config import build_config
from trainer.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--var", default="var")
    var = Path(parser.parse_args().var)
    data = var / "demo" / "dataset"
    if not data.exists():
        make_dataset(data, count=12, repeats=2)
    cfg = build_config({
        "pretrained_model_name_or_path": str(var / "models" / "tiny-sd15"), "train_data_dir": str(data),
        "output_dir": str(var / "demo" / "output"), "output_name": "demo", "resolution": "64",
        "enable_bucket": True, "min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_reso_steps": 32,
        "max_train_epochs": 3, "save_every_n_epochs": 1, "learning_rate": 1e-3, "network_dim": 8,
        "network_alpha": 4, "shuffle_caption": True, "keep_tokens": 1, "sample_every_n_epochs": 1,
        "sample_prompts": ["sks, red circle --n blurry --s 8 --w 64 --h 64"],
    })
    result = train(cfg, TerminalCallbacks())
    print(f"LoRA files: {', '.join(str(p) for p in result.epoch_paths)}")
    print(f"previews: {var / 'demo' / 'output' / 'sample'}")


if __name__ == "__main__":
    main()
