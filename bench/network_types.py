"""Network-type benchmark: lorabake's LyCORIS LoCon, LoHa, LoKr and DoRA steps vs. peft's LoRA, LoHa, LoKr and DoRA
in the plain diffusers loop, on exactly the same UNet modules (LyCORIS's full preset), same batch, same process.
Reported as ratios (lower is better).

    python bench/network_types.py [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch

from bench.train_step import _timed, ours_step, plain_step

RANK = 8


def peft_config(kind: str, targets: list[str]):
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    if kind == "loha":
        return LoHaConfig(r=RANK, alpha=RANK, target_modules=targets, init_weights=True)
    if kind == "lokr":
        return LoKrConfig(r=RANK, alpha=RANK, target_modules=targets, init_weights=True)
    return LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, use_dora=kind == "dora")


def lycoris_paths(model_dir: Path) -> list[str]:
    """The diffusers paths of the modules lorabake adapts with lycoris.kohya (its UNet part)."""
    from trainer.families import FAMILIES
    from trainer.families.sd.loading import load_base_model
    from trainer.families.sd.targets import named_candidates, unet_candidates

    unet = load_base_model(str(model_dir)).unet
    chosen = {id(c.module) for c in unet_candidates(unet, "sd15", with_conv=True)
              + named_candidates(unet, "sd15", FAMILIES["sd15"].lycoris_names)}
    return [path for path, module in unet.named_modules() if id(module) in chosen]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    steps = parser.parse_args().steps
    from trainer.data.synthetic import make_dataset
    from trainer.families.tiny import make_tiny

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny(root / "model", "sd15")
        make_dataset(root / "data", count=8, repeats=1, sizes=((64, 64),))
        targets = [f"^{path.replace('.', '[.]')}$" for path in lycoris_paths(model)]
        for kind, args in (("lora", ["algo=locon"]), ("loha", ["algo=loha"]), ("lokr", ["algo=lokr"]),
                           ("dora", ["algo=locon", "dora_wd=True"])):
            ours, batch = ours_step(model, root / "data", root / f"out-{kind}", batch_size=8,
                                    network_module="lycoris.kohya", network_args=args, network_dim=RANK,
                                    network_alpha=RANK)
            plain = partial(plain_step, model, batch, peft_config(kind, "|".join(targets)))()
            t_plain = _timed(plain, steps)
            t_ours = _timed(ours, steps)
            t_plain_again = _timed(plain, steps)
            reference = (t_plain + t_plain_again) / 2
            print(f"cpu tiny sd15 bs8 64px {kind:5s} ({len(targets)} modules): ours {t_ours * 1e3:.1f} ms/step, "
                  f"peft {reference * 1e3:.1f} ms/step, ratio {t_ours / reference:.2f}")


if __name__ == "__main__":
    main()
