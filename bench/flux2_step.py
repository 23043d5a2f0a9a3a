"""The plain diffusers + peft FLUX.2 [klein] loop that `bench/train_step.py --family flux2` measures lorabake's step
against (same tiny model, same batch, same modules, same process; ratio, lower is better; target ≤ 1.0)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

FLUX2_VALUES = {"model_family": "flux2", "network_module": "networks.lora_flux_2", "timestep_sampling": "sigmoid",
                "model_prediction_type": "raw"}
PEFT_TARGETS = (r".*(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|"
                r"to_add_out)|ff\.linear_in|ff\.linear_out|ff_context\.linear_in|ff_context\.linear_out)|"
                r"single_transformer_blocks\.\d+\.attn\.(to_qkv_mlp_proj|to_out))")


def plain_flux2_step(model_dir: Path, batch: dict):
    """What a minimal diffusers + peft FLUX.2 LoRA loop does per step, written as plainly as possible."""
    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig

    pipe = Flux2KleinPipeline.from_pretrained(model_dir)
    transformer = pipe.transformer
    for module in (transformer, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=PEFT_TARGETS))
    transformer.train()
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad():
        hidden, text_ids = pipe.encode_prompt(list(batch["captions"]))
    latents = batch["latents"]
    b, c, h, w = latents.shape
    latent_ids = pipe._prepare_latent_ids(latents)

    def step() -> None:
        noise = torch.randn_like(latents)
        sigmas = torch.sigmoid(torch.randn(b))
        view = sigmas.view(-1, 1, 1, 1)
        noisy = ((1 - view) * latents + view * noise).reshape(b, c, h * w).permute(0, 2, 1)
        out = transformer(hidden_states=noisy, encoder_hidden_states=hidden, timestep=sigmas, guidance=None,
                          img_ids=latent_ids, txt_ids=text_ids, return_dict=False)[0]
        loss = F.mse_loss(out.permute(0, 2, 1).reshape(b, c, h, w).float(), (noise - latents).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
