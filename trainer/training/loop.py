"""The training loop, top to bottom: load, attach the network, then epochs of denoising steps.

What differs between model families (loading, text, noise and target, previews) is asked of the family."""

from __future__ import annotations

import math
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import InitProcessGroupKwargs

from trainer.data.cache import cache_latents, cache_text, stack_text
from trainer.data.dataset import DatasetScan, scan_dataset
from trainer.data.loader import BatchDataset, EpochPlan, noise_seed
from trainer.data.masks import mask_source
from trainer.families import resolve_family, runtime
from trainer.families.base import LoadedModel, ModelFamily
from trainer.job import preflight
from trainer.job.config import ConfigError, FieldProblem, TrainConfig
from trainer.job.prompts import parse_prompts
from trainer.job.steps import ImageSpec, bucket_info, plan_for_config, run_report, warmup_steps
from trainer.networks.adapters import file_rank
from trainer.networks.network import LoRANetwork
from trainer.networks.spec import NetworkSpec
from trainer.output.generate import load_lora_file
from trainer.output.previews import render_previews
from trainer.output.saving import (
    SAVE_DTYPES,
    RunFacts,
    build_metadata,
    epoch_file,
    prune_old_epochs,
    raw_file,
    save_lora,
)
from trainer.training.callbacks import Callbacks, EpochSaved, PreviewsReady, Progress
from trainer.training.ema import WeightsEMA
from trainer.training.optim import align_lr, build_optimizer, build_scheduler, optimizer_name
from trainer.training.ranks import RANK_TIMEOUT, any_process, average_gradients
from trainer.training.state import Position, load_state, save_state
from trainer.training.tb_log import TrainingLog
from trainer.training.validation import ValidationSet, prepare_validation, validation_loss


@dataclass
class TrainResult:
    final_path: Path | None
    epoch_paths: list[Path] = field(default_factory=list)
    stopped: bool = False
    state_dir: Path | None = None
    steps: int = 0
    epochs: int = 0  # how many the run has in all


@dataclass
class Session:
    """Everything a run holds, so the loop body and the save/resume code share one object."""

    cfg: TrainConfig
    accelerator: Accelerator
    family: ModelFamily
    model: LoadedModel
    network: LoRANetwork
    scan: DatasetScan
    plan: EpochPlan
    optimizer: torch.optim.Optimizer
    scheduler: object
    noise_generator: torch.Generator
    facts: RunFacts
    latent_cache: dict | None
    text_cache: dict | None
    validation: ValidationSet | None = None
    ema: WeightsEMA | None = None  # ema_decay: the average of the trained weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(cfg: TrainConfig, callbacks: Callbacks) -> tuple[Session, int, int]:
    found = preflight.check(cfg)
    if bad := preflight.errors(found):
        raise ConfigError([FieldProblem(f.field, f.message) for f in bad])
    for finding in found:
        callbacks.on_log(str(finding))
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError.about("mixed_precision", "fp16 needs a GPU; use bf16 or no on a CPU")
    seed_everything(cfg.seed)
    scan = scan_dataset(cfg.train_data_dir, cfg.reg_data_dir, cfg.caption_extension)
    for warning in scan.warnings:
        callbacks.on_log(f"warning: {warning}")
    if not scan.train:
        raise ConfigError.about("train_data_dir", f"no training images in {cfg.train_data_dir}")
    if cfg.masked_loss:
        masked = sum(mask_source(r.path, cfg.alpha_mask, cfg.conditioning_data_dir) is not None for r in scan.train)
        callbacks.on_log(f"masked loss: {masked} of {len(scan.train)} training images have a mask; the others are "
                         "trained whole")

    # accelerate keeps process-wide state; a worker process trains job after job with different precisions (and
    # numbers of processes: ranks.py sets the environment it reads)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=RANK_TIMEOUT)])
    model = runtime(resolve_family(cfg)).load(cfg)
    family = runtime(model.family)  # a single file may turn out to be another family than its flags said
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    device = accelerator.device
    family.place(model, cfg, device, weight_dtype)
    vae_dtype = next(model.vae.parameters()).dtype

    te_lrs = cfg.text_encoder_learning_rates(len(model.text_encoders))
    lrs = {"unet": cfg.unet_learning_rate, **{f"te{i + 1}": lr for i, lr in enumerate(te_lrs)}}
    network = make_network(cfg, family, model)
    network.drop_groups({group for group, lr in lrs.items() if lr <= 0})
    network.to(device)
    network.attach()
    if cfg.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
        if network.trains_text_encoder:
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable()
    model.denoiser.train()
    for encoder in model.text_encoders:
        encoder.train(network.trains_text_encoder)

    plan = EpochPlan(scan, cfg)
    step_plan = plan_for_config(cfg, [ImageSpec(r.width, r.height, r.repeats) for r in scan.train],
                                [ImageSpec(r.width, r.height, r.repeats) for r in scan.reg])
    folders = [(name, d["img_count"], d["n_repeats"], is_reg) for is_reg in (False, True)
               for name, d in scan.dataset_dirs(reg=is_reg).items()]
    for line in run_report(folders, step_plan, cfg):
        callbacks.on_log(line)
    optimizer = build_optimizer(cfg, network.param_groups(lrs))
    scheduler = build_scheduler(cfg, optimizer, step_plan.total_steps, warmup_steps(cfg, step_plan.total_steps))
    optimizer = accelerator.prepare_optimizer(optimizer)

    latent_cache = text_cache = None
    with accelerator.main_process_first():  # the others read the disk caches the first one wrote
        if cfg.cache_latents:
            disk = Path(cfg.output_dir) / ".latent_cache" if cfg.cache_latents_to_disk else None
            latent_cache = cache_latents(plan, family, model, device, vae_dtype, disk, cfg.flip_aug)
        if cfg.cache_text_encoder_outputs:
            disk = Path(cfg.output_dir) / ".text_cache" if cfg.cache_text_encoder_outputs_to_disk else None
            text_cache = cache_text(plan, family, model, cfg, disk)

    noise_generator = torch.Generator(device).manual_seed(cfg.seed)
    location = Path(cfg.pretrained_model_name_or_path)
    facts = RunFacts(
        model.family, family.facts(model), model.name, step_plan.epochs, time.time(), total_steps=step_plan.total_steps,
        batches_per_epoch=step_plan.batches_per_epoch, optimizer=optimizer_name(optimizer.optimizer, cfg),
        bucket_info=bucket_info(cfg, step_plan, [(r.width, r.height, b) for r, b in zip(scan.images, plan.buckets,
                                                                                          strict=True)]),
        session_id=random.SystemRandom().randint(0, 2**32), base_file=str(location) if location.is_file() else None,
    )
    validation = prepare_validation(cfg, family, model, device, vae_dtype, not network.trains_text_encoder)
    if text_cache is not None:
        family.park_text_encoders(model)
    ema = WeightsEMA([p for p in network.parameters() if p.requires_grad], cfg) if cfg.ema_decay else None
    session = Session(cfg, accelerator, family, model, network, scan, plan, optimizer, scheduler, noise_generator,
                      facts, latent_cache, text_cache, validation, ema)
    return session, step_plan.total_steps, step_plan.epochs


def make_network(cfg: TrainConfig, family: ModelFamily, model: LoadedModel) -> LoRANetwork:
    weights = family.kohya_weights(load_lora_file(cfg.network_weights)) if cfg.network_weights else None
    dim = cfg.network_dim
    if weights is not None and cfg.dim_from_weights:
        dim = file_rank(weights) or dim
    spec = NetworkSpec.of(cfg)
    text = family.default_text_encoders(cfg) if cfg.train_text_encoder else False
    candidates = family.lora_targets(model, with_conv=cfg.effective_conv_dim is not None, denoiser=cfg.train_unet,
                                     text=text, network_args=cfg.network_args,
                                     names=family.info.lycoris_names if spec.lycoris else ())
    network = LoRANetwork.from_candidates(candidates, dim=dim, alpha=cfg.effective_alpha, spec=spec,
                                          conv_dim=cfg.effective_conv_dim, conv_alpha=cfg.effective_conv_alpha)
    if weights is not None:
        network.load_kohya(weights)
    return network


def batch_loss(s: Session, batch: dict, epoch: int, index: int) -> torch.Tensor:
    cfg, model, device = s.cfg, s.model, s.accelerator.device
    s.noise_generator.manual_seed(noise_seed(cfg.seed, epoch, index))
    if "latents" in batch:
        latents = batch["latents"].to(device)
    else:
        with torch.no_grad():
            pixels = batch["pixels"].to(device, next(model.vae.parameters()).dtype)
            latents = s.family.encode_images(model, pixels)
    latents = latents.float()
    if s.text_cache is not None:
        text = stack_text([s.text_cache[c] for c in batch["captions"]], device)
    else:
        with torch.set_grad_enabled(s.network.trains_text_encoder), s.accelerator.autocast():
            text = s.family.encode_text(model, batch["captions"], cfg)
    with s.accelerator.autocast():
        loss = s.family.loss(model, cfg, latents, text, batch, s.noise_generator)
    loss = loss * torch.where(batch["is_reg"].to(device), cfg.prior_loss_weight, 1.0)
    return loss.mean()


def _save_epoch(s: Session, epoch: int, step: int, final: bool) -> tuple[Path, dict[str, str]]:
    """The epoch's file; with EMA it holds what save_ema says (and says so), `both` adds the raw weights beside it."""
    cfg = s.cfg
    dtype = SAVE_DTYPES.get(cfg.save_precision) if cfg.save_precision else None
    metadata = build_metadata(cfg, s.facts, s.family.metadata(cfg, s.facts.model), s.scan, epoch, step,
                              finished=final)
    path = epoch_file(cfg, None if final else epoch)
    if s.ema is None:
        save_lora(path, s.network.kohya_state_dict(dtype), metadata, cfg.save_model_as)
        return path, metadata
    averaged = {**metadata, "lorabake_weights": "ema" if cfg.save_ema != "raw" else "raw",
                "lorabake_ema_decay": str(cfg.ema_decay)}
    with _averaged(s):
        save_lora(path, s.network.kohya_state_dict(dtype), averaged, cfg.save_model_as)
    if cfg.save_ema == "both":
        save_lora(raw_file(path), s.network.kohya_state_dict(dtype), {**averaged, "lorabake_weights": "raw"},
                  cfg.save_model_as)
    return path, averaged


def _averaged(s: Session) -> AbstractContextManager[None]:
    """The weights the files and previews show: the average unless save_ema says raw."""
    return s.ema.applied() if s.ema is not None and s.cfg.save_ema != "raw" else nullcontext()


def _previews(s: Session, epoch: int, callbacks: Callbacks) -> None:
    specs = parse_prompts(s.cfg.sample_prompts)
    if not specs:
        return
    with _averaged(s):
        paths = _render(s, specs, epoch)
    callbacks.on_previews(PreviewsReady(epoch, paths))


def _render(s: Session, specs: list, epoch: int) -> list[Path]:
    return render_previews(
        s.model, specs, Path(s.cfg.output_dir) / "sample", s.cfg.output_name, epoch,
        images_per_prompt=s.cfg.sample_images_per_prompt, base_seed=s.cfg.seed,
        settings=s.family.render_settings(s.cfg),
    )


def _previews_due(cfg: TrainConfig, epoch: int, last: bool) -> bool:
    return bool(cfg.sample_every_n_epochs) and (epoch % cfg.sample_every_n_epochs == 0 or last)


def _missing_previews(s: Session, position: Position, epochs: int, callbacks: Callbacks) -> None:
    """A state saved at an epoch's end holds that epoch's weights: previews it owed are rendered from it now."""
    ended = position.epoch - 1
    due = ended >= 1 and _previews_due(s.cfg, ended, last=ended >= epochs)
    if position.batch == 0 and due and callbacks.previews_missing(ended):
        callbacks.on_log(f"rendering the previews of epoch {ended}, which the stopped attempt did not keep")
        _previews(s, ended, callbacks)


def _state(s: Session, position: Position, name: str) -> Path:
    folder = Path(s.cfg.output_dir) / f"{s.cfg.output_name}-{name}-state"
    return save_state(folder, network=s.network, optimizer=s.optimizer.optimizer, scheduler=s.scheduler,
                      scaler=s.accelerator.scaler, noise_generator=s.noise_generator, position=position, ema=s.ema)


def train(cfg: TrainConfig, callbacks: Callbacks | None = None) -> TrainResult:
    """One process's part of a run: the whole run on one process, or its share when ranks.py started several. Only
    the main process writes files and calls `callbacks`; the others keep in step through the gradient averaging."""
    callbacks = callbacks or Callbacks()
    s, total_steps, epochs = setup(cfg, callbacks)
    main = s.accelerator.is_main_process
    result = TrainResult(final_path=None, epochs=epochs)
    position = Position(epoch=1, batch=0, step=0)
    if cfg.resume:
        position = load_state(Path(cfg.resume), network=s.network, optimizer=s.optimizer.optimizer,
                              scheduler=s.scheduler, scaler=s.accelerator.scaler, noise_generator=s.noise_generator,
                              ema=s.ema)
        align_lr(s.optimizer.optimizer, s.scheduler)
        callbacks.on_log(f"resumed at epoch {position.epoch}, batch {position.batch}, step {position.step}")
        if main:
            _missing_previews(s, position, epochs, callbacks)
        if position.epoch > epochs:
            callbacks.on_log("nothing left to train: every epoch was saved before the stop")
            result.steps = position.step
            return result
    elif cfg.sample_at_first and main:
        _previews(s, 0, callbacks)

    logged = cfg if main else cfg.model_copy(update={"logging_dir": None})
    log = TrainingLog(logged, [group.get("name", "lora") for group in s.optimizer.optimizer.param_groups])
    try:
        return _run_epochs(s, cfg, callbacks, result, position, total_steps, epochs, log)
    finally:
        log.close()


def _run_epochs(s: Session, cfg: TrainConfig, callbacks: Callbacks, result: TrainResult, position: Position,
                total_steps: int, epochs: int, log: TrainingLog) -> TrainResult:
    """Rounds of one batch per process; every `gradient_accumulation_steps` rounds (or at the epoch's end) the
    gradients are averaged over the processes and the optimizer steps. Batch numbers count the whole epoch's
    batches, so a state resumes with any number of processes."""
    accum, processes, rank = cfg.gradient_accumulation_steps, s.accelerator.num_processes, s.accelerator.process_index
    main = s.accelerator.is_main_process
    started, images_seen = time.monotonic(), 0
    step = position.step
    for epoch in range(position.epoch, epochs + 1):
        first = position.batch if epoch == position.epoch else 0
        dataset = BatchDataset(s.plan, epoch, s.latent_cache, first_batch=first, every=processes, offset=rank)
        batches = iter(torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False,
                                                   num_workers=cfg.num_workers,
                                                   persistent_workers=cfg.persistent_workers and cfg.num_workers > 0))
        n_batches = dataset.epoch_batches
        losses: list[float] = []
        mine = [0.0, 0, 0]  # this process's summed batch losses, batches and images since the last step
        for round_index in range(math.ceil((n_batches - first) / processes)):
            if first + round_index * processes + rank < n_batches:  # the last round may leave a process without
                batch = next(batches)
                index = dataset.batch_index(round_index)
                loss = batch_loss(s, batch, epoch, index)
                s.accelerator.backward(loss / accum)
                mine = [mine[0] + loss.item(), mine[1] + 1, mine[2] + len(batch["captions"])]
            consumed = first + (round_index + 1) * processes
            if (round_index + 1) % accum and consumed < n_batches:
                continue
            loss_sum, counted, images = average_gradients(s.accelerator, s.network, mine)
            mine = [0.0, 0, 0]
            if cfg.max_grad_norm:
                s.accelerator.clip_grad_norm_(s.network.parameters(), cfg.max_grad_norm)
            s.optimizer.step()
            s.scheduler.step()
            s.optimizer.zero_grad(set_to_none=True)
            step += 1
            if s.ema is not None:
                s.ema.after_step(step)
            losses.append(loss_sum / max(counted, 1))
            images_seen += int(images)
            elapsed = time.monotonic() - started
            rate = images_seen / elapsed if elapsed > 0 else 0.0
            per_step = elapsed / max(1, step - position.step)
            log.step(step, losses[-1], s.scheduler.get_last_lr())
            callbacks.on_progress(Progress(step, total_steps, epoch, epochs, losses[-1],
                                           s.scheduler.get_last_lr()[0], rate, per_step * (total_steps - step)))
            if step >= total_steps:
                break
            if any_process(s.accelerator, main and callbacks.should_stop()):
                if main:
                    result.state_dir = _state(s, Position(epoch, min(consumed, n_batches), step), f"step{step:08d}")
                result.stopped, result.steps = True, step
                return result
        log.epoch(epoch, _mean(losses))
        last = epoch == epochs or step >= total_steps
        if main:
            _epoch_end(s, cfg, callbacks, result, epoch, step, last, _mean(losses))
        if last:
            break
    s.network.detach()
    result.steps = step
    return result


def _epoch_end(s: Session, cfg: TrainConfig, callbacks: Callbacks, result: TrainResult, epoch: int, step: int,
               last: bool, mean_loss: float) -> None:
    """The main process's part of an epoch's end: validation, the file, the state and the previews."""
    held_out = None
    if s.validation is not None:
        with _averaged(s):
            held_out = validation_loss(s.validation, s.family, s.model, cfg, s.accelerator.autocast)
        callbacks.on_log(f"epoch {epoch}: validation loss {held_out:.4f} on {len(s.validation.latents)} "
                         f"held-out image(s)")
    due = cfg.save_every_n_epochs is not None and epoch % cfg.save_every_n_epochs == 0
    if last or due:
        path, metadata = _save_epoch(s, epoch, step, final=last)
        result.epoch_paths.append(path)
        if last:
            result.final_path = path
        else:
            prune_old_epochs(cfg, epoch)
        callbacks.on_epoch_saved(EpochSaved(epoch, step, path, metadata, mean_loss, held_out))
        if cfg.save_state:
            result.state_dir = _state(s, Position(epoch + 1, 0, step), "last" if last else f"{epoch:06d}")
            callbacks.on_state_saved(result.state_dir, epoch)
    if _previews_due(cfg, epoch, last):
        _previews(s, epoch, callbacks)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
