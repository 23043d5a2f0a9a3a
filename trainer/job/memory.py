"""How much GPU memory a run of a large DiT needs: an estimate from the model's declared size and the run's
settings, shown before a job is queued and compared with the workers' GPUs. No torch.

The formula (docs/memory.md explains each term):
  weights      denoiser parameters × bytes per stored weight (base_weights; bf16 is the run's precision: 4 bytes with
               mixed_precision no), less the swapped blocks (one stays in flight)
  text, VAE    stored like the transformer (the VAE in bf16); with cached captions the text encoder is on the GPU
               only while they are cached, so the peak is the larger of that phase and training
  LoRA         rank × Σ(in + out) of the wrapped Linears; fp32 weights and gradients, plus the optimizer's state
  activations  per sample, per token of the joint sequence (image tokens + text tokens), per block:
               with gradient checkpointing only the block's input (2 · hidden bytes) is kept, plus one block's
               full set while it is recomputed (ACTIVATION_FACTOR · hidden bytes); without, the full set per block.
               A UNet's tokens are latent pixels, and its blocks count as first-level equivalents
               (ModelSize.activation_blocks)
  overhead     the CUDA context and the allocator's slack
It is an estimate until the benchmark measures the same settings on a GPU (bench/train_step.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.families.declare import ModelSize
from trainer.families.flow_params import stored_as
from trainer.job.config import TrainConfig
from trainer.job.optimizers import OPTIMIZERS

GIB = 2**30
# bytes per stored weight, scales included: fp8 / int8 keep one bf16 scale per row, nf4 4.13 bits (QLoRA's
# double-quantized block scales)
BYTES_PER_WEIGHT = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "nf4": 0.516}
ACTIVATION_FACTOR = 40  # bytes per hidden unit per token a DiT block keeps for its backward pass, in bf16
OVERHEAD = 1.5 * GIB


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, float]  # GiB per term
    total: float  # GiB
    measured: bool = False  # always False until a GPU benchmark of these settings replaces the formula

    def line(self) -> str:
        terms = ", ".join(f"{name} {value:.1f}" for name, value in self.parts.items() if value >= 0.05)
        return f"about {self.total:.1f} GiB of GPU memory at its peak (estimate, GiB: {terms})"


def _bytes_per_weight(cfg: TrainConfig) -> float:
    stored = stored_as(cfg)
    return 4.0 if stored == "bf16" and cfg.mixed_precision == "no" else BYTES_PER_WEIGHT[stored]


def estimate_memory(size: ModelSize, cfg: TrainConfig) -> MemoryEstimate:
    width, height = cfg.resolution_wh
    swapped = min(cfg.blocks_to_swap or 0, size.blocks - 1)
    resident = size.transformer * (size.blocks - swapped + (1 if swapped else 0)) / size.blocks
    weights = resident * _bytes_per_weight(cfg)
    unquantized = 4.0 if cfg.mixed_precision == "no" else 2.0  # a trained text encoder is never quantized
    text = size.text_encoder * (unquantized if cfg.fp8_base_unet or cfg.train_text_encoder else _bytes_per_weight(cfg))
    vae = size.vae * 2
    rank = cfg.network_dim or 4
    lora = rank * size.lora_width * (8 + OPTIMIZERS[cfg.optimizer_type].state_bytes)
    tokens = (width // size.pixels_per_token) * (height // size.pixels_per_token) + size.text_tokens
    per_block = tokens * size.hidden * cfg.train_batch_size
    blocks = size.activation_blocks or size.blocks
    if cfg.gradient_checkpointing:
        activations = per_block * (2 * blocks + ACTIVATION_FACTOR)
    else:
        activations = per_block * ACTIVATION_FACTOR * blocks
    parts = {"weights": weights, "text encoder": text, "VAE": vae, "LoRA and optimizer": lora,
             "activations": activations, "overhead": OVERHEAD}
    in_gib = {name: value / GIB for name, value in parts.items()}
    training = sum(in_gib.values())
    if cfg.cache_text_encoder_outputs:  # the text encoder leaves before the LoRA trains
        caching = in_gib["weights"] + in_gib["text encoder"] + in_gib["VAE"] + in_gib["overhead"]
        return MemoryEstimate(in_gib, max(caching, training - in_gib["text encoder"]))
    return MemoryEstimate(in_gib, training)
