"""Every training parameter a user may set, grouped, with one line on what it really does (see PARAMETERS.md).

Types, defaults, choices and bounds come from the trainer's own TrainConfig, so the form can never offer a value the
trainer would refuse. The service sets paths, the base model and the sample prompts itself: those are left out.
"""

from __future__ import annotations

from typing import Any

from api.training import SERVICE_KEYS
from trainer.families import FAMILIES, refused_keys
from trainer.job.config import TrainConfig

GROUPS: dict[str, dict[str, str]] = {
    "Network": {
        "network_dim": "LoRA rank: the size of the learned update. Larger learns more detail and makes a bigger file.",
        "network_alpha": "Scales the LoRA output by alpha / dim. 0 means alpha = dim (scale 1).",
        "conv_dim": "LoCon: also train the 3×3 convolutions with this rank (texture and style). Empty = off "
                    "(lycoris.kohya: network_dim).",
        "conv_alpha": "Scale for the convolution LoRA, as network_alpha is for the rest.",
        "network_train_unet_only": "Leave the text encoder alone; only the UNet learns.",
        "network_train_text_encoder_only": "Leave the UNet alone; only the text encoder learns.",
        "network_args": 'Extra "key=value" network options, as in sd-scripts; for lycoris.kohya: algo=locon|loha|lokr, '
                        "dora_wd=True (DoRA), factor=N (LoKr).",
        "network_module": "networks.lora / networks.lora_flux: kohya's LoRA (LoCon with conv_dim). lycoris.kohya: "
                          "LyCORIS's LoCon, LoHa, LoKr and DoRA, chosen by algo in network_args.",
        "dim_from_weights": "Take the rank from a starting LoRA's weights (only when the run starts from one).",
    },
    "Optimisation": {
        "learning_rate": "Fallback learning rate for any part without its own.",
        "unet_lr": "Learning rate of the UNet LoRA.",
        "text_encoder_lr": "Learning rate of the text-encoder LoRA; 0 leaves the text encoder out.",
        "optimizer_type": "The optimizer; AdamW8bit and Lion8bit save memory on CUDA.",
        "optimizer_args": 'Extra optimizer options as "key=value", e.g. weight_decay=0.01.',
        "lr_scheduler": "How the learning rate changes over the run. constant with warmup is refused (sd-scripts "
                        "errors on it).",
        "lr_warmup_steps": "Steps of linear warm-up; a value below 1 is a fraction of all optimizer steps.",
        "lr_scheduler_num_cycles": "Hard restarts of cosine_with_restarts.",
        "lr_scheduler_power": "Exponent of the polynomial scheduler.",
        "max_train_epochs": "Epochs to train; when set it decides the step count (max_train_steps is ignored).",
        "max_train_steps": "Optimizer steps to train when no epoch count is set.",
        "train_batch_size": "Images per step. Larger is faster per image and needs more memory.",
        "gradient_accumulation_steps": "Steps summed before one optimizer step; step counts are after it.",
        "max_grad_norm": "Gradients are clipped to this norm; 0 turns clipping off.",
        "seed": "Makes training and preview images repeatable.",
        "min_snr_gamma": "Weights the loss by min(SNR, γ)/SNR so easy, low-noise steps count less; 5 is usual.",
        "noise_offset": "Adds a per-image brightness shift to the noise; 0.05–0.1 helps very dark or bright images.",
        "multires_noise_iterations": "Pyramid (multi-resolution) noise; 6–10 is typical. Empty = off.",
        "multires_noise_discount": "How fast pyramid noise fades with each level.",
        "prior_loss_weight": "Loss multiplier for regularization images.",
        "mixed_precision": "Number format for the forward pass; bf16 on recent GPUs.",
        "gradient_checkpointing": "Recompute activations in the backward pass: much less memory, ~20–30 % slower.",
        "sdpa": "PyTorch's fused attention (fast, low memory).",
        "xformers": "xformers attention, where installed.",
        "use_8bit_adam": "Old name for optimizer AdamW8bit.",
    },
    "Data and captions": {
        "resolution": 'Training size, "512" or "768,512"; also the largest bucket area.',
        "enable_bucket": "Group images by aspect ratio instead of center-cropping them all to a square.",
        "min_bucket_reso": "Smallest bucket side.",
        "max_bucket_reso": "Largest bucket side.",
        "bucket_reso_steps": "Bucket sides are multiples of this.",
        "bucket_no_upscale": "One bucket per image and never upscaled; min/max bucket sizes are then ignored.",
        "shuffle_caption": "Shuffle the comma-separated tags each time an image is used.",
        "keep_tokens": "The first N tags (not CLIP tokens) stay first and are never shuffled or dropped: put the "
                       "trigger word there.",
        "caption_dropout_rate": "Chance that an image is trained with an empty caption.",
        "caption_dropout_every_n_epochs": "Every Nth epoch trains with all captions empty.",
        "caption_tag_dropout_rate": "Chance that each tag (outside keep_tokens) is left out.",
        "max_token_length": "Caption length in tokens: empty = 75, or 150 / 225 in 75-token chunks.",
        "clip_skip": "Use the text encoder's n-th layer from the end; 2 is usual for anime models.",
        "caption_extension": "Caption file extension in sd-scripts layouts (lorabake writes .txt).",
        "cache_latents": "Encode each image once with the VAE (faster); not with color_aug or random_crop.",
        "cache_latents_to_disk": "Keep the cached latents on disk between runs.",
        "cache_text_encoder_outputs": "Encode captions once; only when the text encoder is not trained and "
                                      "captions are not shuffled or dropped.",
        "cache_text_encoder_outputs_to_disk": "Keep cached text-encoder outputs on disk (FLUX's T5 outputs are "
                                              "large).",
        "color_aug": "Random hue and gamma changes.",
        "flip_aug": "Random horizontal flips (not for asymmetric subjects).",
        "random_crop": "Random instead of center crops inside each bucket.",
        "validation_split": "Share of the training images held out (chosen by the seed) and scored after every "
                            "epoch at fixed noise: the validation loss beside the training loss. 0 = off.",
        "num_workers": "Data-loading processes.",
        "persistent_workers": "Keep data-loading processes between epochs.",
    },
    "Flow matching (FLUX.1, Chroma)": {
        "timestep_sampling": "How noise levels are drawn: flux_shift (FLUX.1) and sigmoid (Chroma) are the usual "
                             "choices; sigma is sd-scripts' default.",
        "sigmoid_scale": "Spread of the sigmoid-based samplings (sigmoid, shift, flux_shift).",
        "discrete_flow_shift": "Shift of the noise schedule for sigma and shift sampling; 3.1582 is common.",
        "model_prediction_type": "raw trains the velocity as predicted (recommended); sigma_scaled and additive "
                                 "rewrite the prediction first.",
        "weighting_scheme": "SD3-style loss weighting and noise-level density (with sigma sampling).",
        "logit_mean": "Mean of logit_normal noise levels.",
        "logit_std": "Spread of logit_normal noise levels.",
        "mode_scale": "Scale of the mode weighting scheme.",
        "guidance_scale": "Guidance fed to FLUX.1-dev's guidance embedding while training: 1.0 (3.5 is for "
                          "inference and burns the LoRA in); Chroma has none.",
        "t5xxl_max_token_length": "T5 caption length in tokens; empty = 512 (dev, Chroma) or 256 (schnell).",
        "apply_t5_attn_mask": "Mask T5's padding in attention; Chroma requires it.",
        "fp8_base": "Keep the frozen transformer weights in float8: half the memory, compute stays bf16.",
        "fp8_base_unet": "sd-scripts' name for fp8 on the transformer only (text encoders stay as they are).",
        "blocks_to_swap": "Transformer blocks kept in CPU memory and streamed in: less VRAM, slower.",
        "cpu_offload_checkpointing": "Gradient-checkpoint activations kept in CPU memory.",
    },
    "Saving and previews": {
        "save_every_n_epochs": "Save a LoRA file every N epochs (each one appears as an epoch card).",
        "save_last_n_epochs": "Keep only the newest N saved epochs.",
        "save_model_as": "File format; safetensors is what A1111, ComfyUI, Forge and diffusers load safely.",
        "save_precision": "Number format of the saved file; empty keeps the training format.",
        "sample_every_n_epochs": "Render the preview prompts every N epochs.",
        "sample_at_first": "Also render previews before training starts.",
        "sample_sampler": "Sampler for previews; euler_a looks right on every family.",
        "sample_images_per_prompt": "Preview images per prompt and epoch.",
        "training_comment": "Text stored in the file as ss_training_comment.",
        "no_metadata": "Write only the minimal metadata keys.",
    },
}


def _field_spec(key: str, schema: dict[str, Any], default: Any) -> dict[str, Any]:
    options = schema.get("anyOf", [schema])
    types = sorted({o["type"] for o in options if "type" in o and o["type"] != "null"})
    choices = [value for o in options for value in o.get("enum", [])]
    spec: dict[str, Any] = {"key": key, "types": types, "nullable": any(o.get("type") == "null" for o in options),
                            "default": default}
    if choices:
        spec["choices"] = choices
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        for option in options:
            if bound in option:
                spec[bound] = option[bound]
    return spec


def catalog() -> list[dict[str, Any]]:
    """Groups of parameters; each says which families it applies to (the form shows only those)."""
    properties = TrainConfig.model_json_schema()["properties"]
    defaults = TrainConfig().model_dump()
    refused = {name: refused_keys(name) for name in FAMILIES}
    groups = []
    for group, helps in GROUPS.items():
        params = [{**_field_spec(key, properties[key], defaults[key]), "help": text,
                   "families": [name for name in FAMILIES if key not in refused[name]]}
                  for key, text in helps.items() if key not in SERVICE_KEYS]
        groups.append({"group": group, "params": params})
    return groups


def families(offered: list[str] | None = None) -> list[dict[str, Any]]:
    """What the web needs to know of each family: its name, training size and crop sizes; with `offered` (the
    families of the server's base models, first model first), just those, in that order."""
    names = list(dict.fromkeys(offered)) if offered is not None else list(FAMILIES)
    return [{"name": info.name, "label": info.label, "resolution": info.resolution,
             "crop_sizes": list(info.crop_sizes)} for info in (FAMILIES[n] for n in names if n in FAMILIES)]
