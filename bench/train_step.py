"""Training-step benchmark: lorabake's step vs. a minimal plain diffusers + peft loop, same model, same batch,
same process, reported as a ratio (lower is better; the target is ≤ 1.0). On a GPU it also measures full-size
SD1.5 (512 px, bs 8) and SDXL (1024 px, bs 4) UNets with random weights, bf16, cached latents: images/s, MFU and
peak memory, plus SDXL bs 1 with gradient checkpointing.

    python bench/train_step.py [--steps 30] [--gpu-only] [--family sd15|flux|flux-fused|zimage|flux2]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# the plain diffusers + peft loops DiT families are measured against: (family, module, config values, builder);
# flux-fused is the reference for sd-scripts' speed (its FLUX model runs q, k, v fused)
PLAIN_LOOPS = {"flux": ("flux", "bench.flux_step", "FLUX_VALUES", "plain_flux_step"),
               "flux-fused": ("flux", "bench.flux_step", "FLUX_VALUES", "fused_flux_step"),
               "zimage": ("zimage", "bench.zimage_step", "ZIMAGE_VALUES", "plain_zimage_step"),
               "flux2": ("flux2", "bench.flux2_step", "FLUX2_VALUES", "plain_flux2_step")}
FLOP_PER_IMAGE = {"sd15": 1.73e12, "sdxl": 14.2e12}  # forward + backward, per the reference figures
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _timed(step, n: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(n):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours_step(model_dir: Path, data_dir: Path, out: Path, batch_size: int, **family_values: object):
    from trainer.data.loader import BatchDataset
    from trainer.job.config import build_config
    from trainer.training.loop import Callbacks, batch_loss, setup

    cfg = build_config({
        "pretrained_model_name_or_path": str(model_dir), "train_data_dir": str(data_dir), "output_dir": str(out),
        "resolution": "64", "train_batch_size": batch_size, "max_train_epochs": 1, "network_dim": 8,
        "network_alpha": 8, "network_train_unet_only": True, "cache_text_encoder_outputs": True,
        "cache_latents": True, "learning_rate": 1e-4, **family_values,
    })
    session, _, _ = setup(cfg, Callbacks())
    batch = BatchDataset(session.plan, 1, session.latent_cache)[0]

    def step() -> None:
        loss = batch_loss(session, batch, 1, 0)
        session.accelerator.backward(loss)
        session.optimizer.step()
        session.optimizer.zero_grad(set_to_none=True)

    return step, batch


def plain_step(model_dir: Path, batch: dict, adapter=None):
    """What a minimal diffusers + peft LoRA loop does per step, written as plainly as possible (`adapter`: another
    peft config over the UNet, LoRA on the attention layers when None)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None)
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    for module in (unet, text_encoder, pipe.vae):
        module.requires_grad_(False)
    unet.add_adapter(adapter or LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                           target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out",
                                                           "ff.net.0.proj", "ff.net.2"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    ids = tokenizer(batch["captions"], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = text_encoder(ids)[0]
    latents = batch["latents"]

    def step() -> None:
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],))
        pred = unet(scheduler.add_noise(latents, noise, t), t, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def cpu_ratio(steps: int, family: str = "sd15", plain_builder=plain_step, **family_values: object) -> None:
    """Ours vs. the plain loop on the family's tiny model, same batch (8 images at 64 px)."""
    from trainer.data.synthetic import make_dataset
    from trainer.families.tiny import make_tiny

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny(root / "model", family)
        make_dataset(root / "data", count=8, repeats=1, sizes=((64, 64),))
        ours, batch = ours_step(model, root / "data", root / "out", batch_size=8, **family_values)
        plain = plain_builder(model, batch)
        t_ours, reference = _timed_pair(ours, plain, steps)
        print(f"cpu tiny {family} bs8 64px: ours {t_ours * 1e3:.1f} ms/step, plain diffusers+peft "
              f"{reference * 1e3:.1f} ms/step, ratio {t_ours / reference:.2f}")


def _timed_pair(ours, plain, n: int) -> tuple[float, float]:
    """Median step times of two loops run in turns, so that drift in the machine's speed hits both alike."""
    for _ in range(3):
        ours()
        plain()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for step, record in ((ours, times[0]), (plain, times[1])):
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(
    sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def gpu_run(family: str, batch: int, checkpointing: bool, steps: int) -> tuple[float, float]:
    """Images/s and peak GiB for one full-size UNet with a rank-16 LoRA, bf16, latents given (as if cached)."""
    from diffusers import UNet2DConditionModel

    from trainer.families.sd.targets import unet_candidates
    from trainer.networks.network import LoRANetwork

    sdxl = family == "sdxl"
    unet = UNet2DConditionModel(**(SDXL_UNET if sdxl else SD15_UNET)).to("cuda", torch.bfloat16)
    unet.requires_grad_(False)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    network = LoRANetwork.from_candidates(unet_candidates(unet, family, with_conv=False), dim=16, alpha=8).to("cuda")
    network.attach()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    side = 128 if sdxl else 64
    x = torch.randn(batch, 4, side, side, device="cuda", dtype=torch.bfloat16)
    hidden = torch.randn(batch, 77, 2048 if sdxl else 768, device="cuda", dtype=torch.bfloat16)
    extra = {}
    if sdxl:
        time_ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * batch, device="cuda", dtype=torch.bfloat16)
        pooled = torch.randn(batch, 1280, device="cuda", dtype=torch.bfloat16)
        extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}

    def step() -> None:
        t = torch.randint(0, 1000, (batch,), device="cuda")
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.mse_loss(unet(x, t, hidden, **extra).sample.float(), x.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = _timed(step, steps)
    return batch / seconds, torch.cuda.max_memory_allocated() / 2**30


def gpu_throughput(steps: int) -> None:
    if not torch.cuda.is_available():
        print("gpu: skipped (no CUDA device)")
        return
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    for family, batch, checkpointing in (("sd15", 8, False), ("sdxl", 4, False), ("sdxl", 1, True)):
        images, memory = gpu_run(family, batch, checkpointing, steps)
        mfu = images * FLOP_PER_IMAGE[family] / peak if peak else float("nan")
        print(f"gpu {name} {family} bs{batch}{' ckpt' if checkpointing else ''}: {images:.2f} img/s, "
              f"MFU {mfu:.1%}, peak {memory:.2f} GiB")
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--family", choices=["sd15", *PLAIN_LOOPS], default="sd15")
    args = parser.parse_args()
    if args.family in PLAIN_LOOPS:
        family, module, values, builder = PLAIN_LOOPS[args.family]
        loop = importlib.import_module(module)
        cpu_ratio(args.steps, family, getattr(loop, builder), **getattr(loop, values))
        return
    if not args.gpu_only:
        cpu_ratio(args.steps)
    gpu_throughput(args.steps)


if __name__ == "__main__":
    main()
