"""The training loop, top to bottom: load, attach the network, then epochs of noise prediction."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from trainer import preflight
from trainer.cache import cache_latents, cache_text
from trainer.callbacks import Callbacks, EpochSaved, PreviewsReady, Progress
from trainer.config import ConfigError, TrainConfig
from trainer.data import BatchDataset, EpochPlan
from trainer.dataset import DatasetScan, scan_dataset
from trainer.models import BaseModel, encode_text, load_base_model, sdxl_time_ids
from trainer.network import LoRANetwork
from trainer.noise import min_snr_weight, sample_noise
from trainer.optim import build_optimizer, build_scheduler
from trainer.prompts import parse_prompts
from trainer.sampling import render_previews
from trainer.saving import SAVE_DTYPES, RunFacts, build_metadata, epoch_file, prune_old_epochs, save_lora
from trainer.state import Position, load_state, save_state
from trainer.steps import ImageSpec, plan_for_config, warmup_steps
from trainer.tb_log import TrainingLog


@dataclass
class TrainResult:
    final_path: Path | None
    epoch_paths: list[Path] = field(default_factory=list)
    stopped: bool = False
    state_dir: Path | None = None
    steps: int = 0


@dataclass
class Session:
    """Everything a run holds, so the loop body and the save/resume code share one object."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: BaseModel
    network: LoRANetwork
    scan: DatasetScan
    plan: EpochPlan
    optimizer: torch.optim.Optimizer
    scheduler: object
    noise_generator: torch.Generator
    facts: RunFacts
    latent_cache: dict | None
    text_cache: dict | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(cfg: TrainConfig, callbacks: Callbacks) -> tuple[Session, int, int]:
    found = preflight.check(cfg)
    if bad := preflight.errors(found):
        raise ConfigError([f"{f.field}: {f.message}" for f in bad])
    for finding in found:
        callbacks.on_log(str(finding))
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(["mixed_precision: fp16 needs a GPU; use bf16 or no on a CPU"])
    seed_everything(cfg.seed)
    scan = scan_dataset(cfg.train_data_dir, cfg.reg_data_dir, cfg.caption_extension)
    for warning in scan.warnings:
        callbacks.on_log(f"warning: {warning}")
    if not scan.train:
        raise ConfigError([f"train_data_dir: no training images in {cfg.train_data_dir}"])

    # accelerate keeps process-wide state; a worker process trains job after job with different precisions.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    model = load_base_model(cfg.pretrained_model_name_or_path, v2=cfg.v2,
                            v_parameterization=cfg.v_parameterization, sdxl=cfg.sdxl or None, vae=cfg.vae,
                            single_file_config=cfg.pretrained_model_config)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    vae_dtype = torch.float32 if model.family == "sdxl" and weight_dtype == torch.float16 else weight_dtype
    device = accelerator.device
    for module in (model.unet, model.vae, *model.text_encoders):
        module.requires_grad_(False)
    model.unet.to(device, weight_dtype)
    model.vae.to(device, vae_dtype)
    for encoder in model.text_encoders:
        encoder.to(device, weight_dtype)
    if cfg.xformers:
        model.unet.enable_xformers_memory_efficient_attention()
    elif not cfg.sdpa:
        from diffusers.models.attention_processor import AttnProcessor

        model.unet.set_attn_processor(AttnProcessor())

    te_lrs = cfg.text_encoder_learning_rates(len(model.text_encoders))
    lrs = {"unet": cfg.unet_learning_rate, **{f"te{i + 1}": lr for i, lr in enumerate(te_lrs)}}
    network = make_network(cfg, model)
    network.drop_groups({group for group, lr in lrs.items() if lr <= 0})
    network.to(device)
    network.attach()
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if network.trains_text_encoder:
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable()
    model.unet.train()
    for encoder in model.text_encoders:
        encoder.train(network.trains_text_encoder)

    plan = EpochPlan(scan, cfg)
    step_plan = plan_for_config(cfg, [ImageSpec(r.width, r.height, r.repeats) for r in scan.train],
                                [ImageSpec(r.width, r.height, r.repeats) for r in scan.reg])
    optimizer = build_optimizer(cfg, network.param_groups(lrs))
    scheduler = build_scheduler(cfg, optimizer, step_plan.total_steps, warmup_steps(cfg, step_plan.total_steps))
    optimizer = accelerator.prepare_optimizer(optimizer)

    latent_cache = None
    if cfg.cache_latents:
        disk = Path(cfg.output_dir) / ".latent_cache" if cfg.cache_latents_to_disk else None
        latent_cache = cache_latents(plan, model, device, vae_dtype, disk, cfg.flip_aug)
    text_cache = None
    if cfg.cache_text_encoder_outputs:
        text_cache = cache_text(plan, model, cfg.clip_skip, cfg.max_token_length)

    noise_generator = torch.Generator(device).manual_seed(cfg.seed)
    facts = RunFacts(model.family, model.v_prediction, model.name, step_plan.epochs, time.time())
    session = Session(cfg, accelerator, model, network, scan, plan, optimizer, scheduler, noise_generator, facts,
                      latent_cache, text_cache)
    return session, step_plan.total_steps, step_plan.epochs


def make_network(cfg: TrainConfig, model: BaseModel) -> LoRANetwork:
    weights = load_file(cfg.network_weights) if cfg.network_weights else None
    dim = cfg.network_dim
    if weights is not None and cfg.dim_from_weights:
        dim = next(v.shape[0] for k, v in weights.items() if k.endswith(".lora_down.weight"))
    network = LoRANetwork.create(
        model.unet, model.text_encoders, model.family, dim=dim, alpha=cfg.effective_alpha,
        conv_dim=cfg.effective_conv_dim, conv_alpha=cfg.effective_conv_alpha,
        train_unet=cfg.train_unet, train_text_encoder=cfg.train_text_encoder,
    )
    if weights is not None:
        network.load_kohya(weights)
    return network


def batch_loss(s: Session, batch: dict) -> torch.Tensor:
    cfg, model, device = s.cfg, s.model, s.accelerator.device
    unet_dtype = next(model.unet.parameters()).dtype
    if "latents" in batch:
        latents = batch["latents"].to(device)
    else:
        with torch.no_grad():
            pixels = batch["pixels"].to(device, next(model.vae.parameters()).dtype)
            latents = model.vae.encode(pixels).latent_dist.mean * model.vae.config.scaling_factor
    latents = latents.float()
    noise = sample_noise(latents, s.noise_generator, cfg.noise_offset, cfg.multires_noise_iterations,
                         cfg.multires_noise_discount)
    scheduler = model.noise_scheduler
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=s.noise_generator, device=device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if s.text_cache is not None:
        entries = [s.text_cache[c] for c in batch["captions"]]
        hidden = torch.stack([e[0] for e in entries]).to(device)
        pooled = torch.stack([e[1] for e in entries]).to(device) if model.family == "sdxl" else None
    else:
        with torch.set_grad_enabled(s.network.trains_text_encoder), s.accelerator.autocast():
            hidden, pooled = encode_text(model, batch["captions"], cfg.clip_skip, cfg.max_token_length)
    extra = {}
    if model.family == "sdxl":
        height, width = latents.shape[-2] * 8, latents.shape[-1] * 8
        time_ids = sdxl_time_ids(batch["original_sizes"], batch["crops"], [(height, width)] * latents.shape[0])
        extra["added_cond_kwargs"] = {"text_embeds": pooled.to(device, unet_dtype),
                                      "time_ids": time_ids.to(device, unet_dtype)}
    with s.accelerator.autocast():
        prediction = model.unet(noisy.to(unet_dtype), timesteps, hidden.to(unet_dtype), **extra).sample
    target = scheduler.get_velocity(latents, noise, timesteps) if model.v_prediction else noise
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    loss = loss * torch.where(batch["is_reg"].to(device), cfg.prior_loss_weight, 1.0)
    if cfg.min_snr_gamma:
        loss = loss * min_snr_weight(scheduler.alphas_cumprod, timesteps, cfg.min_snr_gamma, model.v_prediction)
    return loss.mean()


def _save_epoch(s: Session, epoch: int, step: int, final: bool) -> tuple[Path, dict[str, str]]:
    cfg = s.cfg
    dtype = SAVE_DTYPES.get(cfg.save_precision) if cfg.save_precision else None
    metadata = build_metadata(cfg, s.facts, s.scan, epoch, step, finished=final)
    path = epoch_file(cfg, None if final else epoch)
    save_lora(path, s.network.kohya_state_dict(dtype), metadata, cfg.save_model_as)
    return path, metadata


def _previews(s: Session, epoch: int, callbacks: Callbacks) -> None:
    specs = parse_prompts(s.cfg.sample_prompts)
    if not specs:
        return
    paths = render_previews(
        s.model, specs, Path(s.cfg.output_dir) / "sample", s.cfg.output_name, epoch,
        images_per_prompt=s.cfg.sample_images_per_prompt, base_seed=s.cfg.seed,
        default_size=s.cfg.resolution_wh, default_sampler=s.cfg.sample_sampler, clip_skip=s.cfg.clip_skip,
        max_token_length=s.cfg.max_token_length,
    )
    callbacks.on_previews(PreviewsReady(epoch, paths))


def _state(s: Session, position: Position, name: str) -> Path:
    folder = Path(s.cfg.output_dir) / f"{s.cfg.output_name}-{name}-state"
    return save_state(folder, network=s.network, optimizer=s.optimizer.optimizer, scheduler=s.scheduler,
                      scaler=s.accelerator.scaler, noise_generator=s.noise_generator, position=position)


def train(cfg: TrainConfig, callbacks: Callbacks | None = None) -> TrainResult:
    callbacks = callbacks or Callbacks()
    s, total_steps, epochs = setup(cfg, callbacks)
    result = TrainResult(final_path=None)
    position = Position(epoch=1, batch=0, step=0)
    if cfg.resume:
        position = load_state(Path(cfg.resume), network=s.network, optimizer=s.optimizer.optimizer,
                              scheduler=s.scheduler, scaler=s.accelerator.scaler, noise_generator=s.noise_generator)
        callbacks.on_log(f"resumed at epoch {position.epoch}, batch {position.batch}, step {position.step}")
    elif cfg.sample_at_first:
        _previews(s, 0, callbacks)

    log = TrainingLog(cfg, [group.get("name", "lora") for group in s.optimizer.optimizer.param_groups])
    try:
        return _run_epochs(s, cfg, callbacks, result, position, total_steps, epochs, log)
    finally:
        log.close()


def _run_epochs(s: Session, cfg: TrainConfig, callbacks: Callbacks, result: TrainResult, position: Position,
                total_steps: int, epochs: int, log: TrainingLog) -> TrainResult:
    accum = cfg.gradient_accumulation_steps
    started, images_seen = time.monotonic(), 0
    step = position.step
    for epoch in range(position.epoch, epochs + 1):
        first = position.batch if epoch == position.epoch else 0
        dataset = BatchDataset(s.plan, epoch, s.latent_cache, first_batch=first)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=cfg.num_workers,
                                             persistent_workers=cfg.persistent_workers and cfg.num_workers > 0)
        n_batches = first + len(dataset)
        losses: list[float] = []
        for offset, batch in enumerate(loader):
            index = first + offset
            loss = batch_loss(s, batch)
            s.accelerator.backward(loss / accum)
            losses.append(float(loss))
            images_seen += len(batch["captions"])
            if (index + 1) % accum and index + 1 != n_batches:
                continue
            if cfg.max_grad_norm:
                s.accelerator.clip_grad_norm_(s.network.parameters(), cfg.max_grad_norm)
            s.optimizer.step()
            s.scheduler.step()
            s.optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.monotonic() - started
            rate = images_seen / elapsed if elapsed > 0 else 0.0
            per_step = elapsed / max(1, step - position.step)
            log.step(step, losses[-1], s.scheduler.get_last_lr())
            callbacks.on_progress(Progress(step, total_steps, epoch, epochs, losses[-1],
                                           s.scheduler.get_last_lr()[0], rate, per_step * (total_steps - step)))
            if step >= total_steps:
                break
            if callbacks.should_stop():
                result.state_dir = _state(s, Position(epoch, index + 1, step), f"step{step:08d}")
                result.stopped, result.steps = True, step
                return result
        log.epoch(epoch, _mean(losses))
        last = epoch == epochs or step >= total_steps
        due = cfg.save_every_n_epochs is not None and epoch % cfg.save_every_n_epochs == 0
        if last or due:
            path, metadata = _save_epoch(s, epoch, step, final=last)
            result.epoch_paths.append(path)
            if last:
                result.final_path = path
            else:
                prune_old_epochs(cfg, epoch)
            callbacks.on_epoch_saved(EpochSaved(epoch, step, path, metadata, _mean(losses)))
            if cfg.save_state:
                result.state_dir = _state(s, Position(epoch + 1, 0, step), "last" if last else f"{epoch:06d}")
                callbacks.on_state_saved(result.state_dir, epoch)
        if cfg.sample_every_n_epochs and (epoch % cfg.sample_every_n_epochs == 0 or last):
            _previews(s, epoch, callbacks)
        if last:
            break
    s.network.detach()
    result.steps = step
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
