"""The plain diffusers + peft Z-Image loop that `bench/train_step.py --family zimage` measures lorabake's step
against (same tiny Z-Image model, same batch, same modules, same process; ratio, lower is better; target ≤ 1.0)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

ZIMAGE_VALUES = {"model_family": "zimage", "network_module": "networks.lora_zimage", "timestep_sampling": "shift",
                 "discrete_flow_shift": 3.0, "model_prediction_type": "raw"}
PEFT_TARGETS = (r".*(layers|noise_refiner|context_refiner)\.\d+\.(attention\.(to_q|to_k|to_v|to_out\.0)|"
                r"feed_forward\.w[123]|adaLN_modulation\.0)")


def plain_zimage_step(model_dir: Path, batch: dict):
    """What a minimal diffusers + peft Z-Image LoRA loop does per step, written as plainly as possible."""
    from diffusers import ZImagePipeline
    from peft import LoraConfig

    pipe = ZImagePipeline.from_pretrained(model_dir)
    transformer = pipe.transformer
    for module in (transformer, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=PEFT_TARGETS))
    transformer.train()
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad():
        # a copy: encode_prompt writes the chat-templated prompts back into the list it is given
        captions, _ = pipe.encode_prompt(list(batch["captions"]), do_classifier_free_guidance=False)
    latents = batch["latents"]

    def step() -> None:
        noise = torch.randn_like(latents)
        sigmas = torch.rand(latents.shape[0])
        shifted = (3 * sigmas / (1 + 2 * sigmas)).view(-1, 1, 1, 1)
        noisy = (1 - shifted) * latents + shifted * noise
        out = transformer(list(noisy.unsqueeze(2).unbind(0)), 1 - shifted.flatten(), captions, return_dict=False)[0]
        loss = F.mse_loss(-torch.stack(out).squeeze(2).float(), (noise - latents).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
