"""The plain diffusers + peft FLUX loop that `bench/train_step.py --family flux` measures lorabake's step against
(same tiny FLUX model, same batch, same process; ratio, lower is better; target ≤ 1.0)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

FLUX_VALUES = {"model_family": "flux", "network_module": "networks.lora_flux", "timestep_sampling": "sigmoid",
               "model_prediction_type": "raw", "guidance_scale": 1.0}
PEFT_TARGETS = (r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_out\.0|"
                r"to_add_out)|proj_mlp|proj_out|norm1\.linear|norm1_context\.linear|norm\.linear|ff\.net\.0\.proj|"
                r"ff\.net\.2|ff_context\.net\.0\.proj|ff_context\.net\.2)")


# sd-scripts' FLUX model runs each stream's q, k, v as one Linear: diffusers' fused projections are that layout
FUSED_TARGETS = PEFT_TARGETS.replace("to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj", "to_qkv|to_added_qkv")


def plain_flux_step(model_dir: Path, batch: dict, fused: bool = False):
    """What a minimal diffusers + peft FLUX LoRA loop does per step, written as plainly as possible; `fused`: on
    the fused q/k/v projections sd-scripts' own FLUX model has (the reference for sd-scripts' speed)."""
    from diffusers import FluxPipeline
    from peft import LoraConfig

    from trainer.families.flux.model import image_ids, pack, unpack

    pipe = FluxPipeline.from_pretrained(model_dir)
    transformer = pipe.transformer
    if fused:
        transformer.fuse_qkv_projections()
    for module in (transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                       target_modules=FUSED_TARGETS if fused else PEFT_TARGETS))
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad():
        hidden, pooled, _ = pipe.encode_prompt(batch["captions"], None, max_sequence_length=512)
    latents = batch["latents"]
    _, channels, height, width = latents.shape

    def step() -> None:
        noise = torch.randn_like(latents)
        sigmas = torch.sigmoid(torch.randn(latents.shape[0])).view(-1, 1, 1, 1)
        noisy = (1 - sigmas) * latents + sigmas * noise
        out = transformer(hidden_states=pack(noisy), timestep=sigmas.flatten(), guidance=torch.ones(latents.shape[0]),
                          pooled_projections=pooled, encoder_hidden_states=hidden,
                          txt_ids=torch.zeros(hidden.shape[1], 3), img_ids=image_ids(height, width)).sample
        loss = F.mse_loss(unpack(out, height, width, channels).float(), (noise - latents).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def fused_flux_step(model_dir: Path, batch: dict):
    return plain_flux_step(model_dir, batch, fused=True)
