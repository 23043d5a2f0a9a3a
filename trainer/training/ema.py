"""An exponential moving average of the LoRA's trained weights (ema_decay), through diffusers' EMAModel: updated
every `ema_every_n_steps` optimizer steps, with its warm-up schedule when asked, in CPU memory when asked. Saving,
previews and the training state read it here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.training_utils import EMAModel

from trainer.job.config import TrainConfig


class WeightsEMA:
    def __init__(self, parameters: list[torch.nn.Parameter], cfg: TrainConfig) -> None:
        self.parameters = parameters
        self.every = cfg.ema_every_n_steps
        self.device = torch.device("cpu") if cfg.ema_on_cpu else parameters[0].device
        # the average starts at the first update's weights; then a fixed decay (min_decay = decay turns off
        # EMAModel's default (1 + n) / (10 + n) ramp), or with ema_warmup its 1 − (1 + n)^−2/3 ramp up to the decay
        fixed = None if cfg.ema_warmup else cfg.ema_decay
        self.average = EMAModel([p.detach().to(self.device) for p in parameters], decay=cfg.ema_decay,
                                min_decay=fixed or 0.0, use_ema_warmup=cfg.ema_warmup)

    def after_step(self, step: int) -> None:
        if step % self.every == 0:
            self.average.step(self._on_its_device())

    def _on_its_device(self) -> list[torch.Tensor]:
        """The weights where the average lives (a copy when it is kept in CPU memory; EMAModel averages only
        tensors that require grad, so the copies say they do)."""
        return [p if p.device == self.device else p.detach().to(self.device).requires_grad_(True)
                for p in self.parameters]

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The network holds the averaged weights inside the block, its own again after it."""
        self.average.store(self.parameters)
        self.average.copy_to(self.parameters)
        try:
            yield
        finally:
            self.average.restore(self.parameters)

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state)
        self.average.shadow_params = [p.to(self.device) for p in self.average.shadow_params]
