"""One Settings object for api and worker. Defaults are the embedded mode; production comes from LORABAKE_* env."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.screen_policy import ScreenRule

EMBEDDED_SECRET = "embedded-only-secret-change-me"


class BaseModelEntry(BaseModel):
    """One base model the service offers: where it lives and what it is."""

    name: str
    family: str  # a name in trainer.families.FAMILIES; the API refuses to start on any other (api/main.py)
    location: str
    resolution: int = 512
    v_parameterization: bool = False
    train_overrides: dict[str, Any] = Field(default_factory=dict)  # applied over every preset for this model
    # False: a tiny test model (the embedded default's). Its family's memory estimate describes the full-size model,
    # so it is shown as that and not used to place or refuse jobs: a tiny model trains on any worker.
    full_size: bool = True


# the embedded default's tiny models train at 64 px, in float32, with a small rank
TINY_OVERRIDES: dict[str, Any] = {"resolution": "64", "min_bucket_reso": 32, "max_bucket_reso": 128,
                                  "bucket_reso_steps": 32, "mixed_precision": "no", "network_dim": 4,
                                  "network_alpha": 2, "learning_rate": 1e-3, "unet_lr": 1e-3, "text_encoder_lr": 5e-4}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORABAKE_", extra="ignore")

    mode: Literal["embedded", "production"] = "embedded"
    var_dir: Path = Path("var")
    tiny_first: str = "tiny-sd15"  # the embedded default's first (preselected) base model
    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None

    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "lorabake"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"

    secret_key: str = EMBEDDED_SECRET
    session_days: int = 14
    # Sign-in throttling never locks an account's owner out (README, "Security"): wrong passwords for one account
    # from one address are refused after `login_failures_per_pair`; an address's sign-ins after
    # `logins_per_address`; an account only slows down: past `login_failures_before_delay` wrong passwords every
    # sign-in for it waits a little longer, at most `login_delay_max_s`. All per 15 minutes.
    login_failures_per_pair: int = 10
    logins_per_address: int = 50
    login_failures_before_delay: int = 10
    login_delay_max_s: float = 3.0
    signups_per_address: int = 10  # new accounts from one client address in an hour
    # Proxies (addresses or networks) whose X-Forwarded-For is believed; empty: the connecting address is the client
    trusted_proxies: list[str] = Field(default_factory=list)
    metrics_token: str | None = None  # when set, GET /metrics needs `Authorization: Bearer <token>`
    metrics_public: bool = False  # /metrics without a token for anyone; without either, embedded: loopback only
    cookie_secure: bool = False
    # A worker's GPUs: the ones it owns (CUDA_VISIBLE_DEVICES order; empty: all), and the memory of each in MiB when
    # it declares it instead of what nvidia-smi reports (a CPU worker standing in for GPUs in tests, or part of a
    # card kept for something else). A job asks for up to max_gpus_per_job of them (core/placement.py).
    gpu_ids: str = ""
    gpu_memory_mib: list[int] = Field(default_factory=list)
    max_gpus_per_job: int = Field(default=8, ge=1, le=16)

    base_models: list[BaseModelEntry] = Field(default_factory=list)
    max_images_per_dataset: int = 1000
    max_upload_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    download_link_seconds: int = 3600
    import_max_entries: int = 4000  # entries in an imported zip (images, captions and folders)
    import_max_bytes: int = 8 * 1024**3  # uncompressed, all entries together
    import_max_ratio: float = 100.0  # uncompressed ÷ compressed of one entry: more is a zip bomb
    tagger_dir: Path | None = None  # folders of WD14-style taggers (model.onnx + selected_tags.csv); var/taggers
    taggers_from_hub: list[str] = Field(default_factory=list)  # hub ids, loaded from the local Hugging Face cache
    tag_on_upload: bool = True  # new images are auto-tagged as they arrive, when a tagger is installed
    # vision-language captioners (sentences): transformers folders under var/captioners, and hub ids fetched into the
    # Hugging Face cache on first use where the network allows
    captioners_dir: Path | None = None
    captioners_from_hub: list[str] = Field(
        default_factory=lambda: ["florence-community/Florence-2-base", "Qwen/Qwen2.5-VL-3B-Instruct"])

    job_time_limit_s: int = 24 * 3600
    visibility_timeout_s: int = 48 * 3600
    heartbeat_s: float = 10.0
    heartbeat_timeout_s: float = 120.0
    max_attempts: int = 3
    storage_retry_s: float = 120.0  # a worker waits out a storage outage this long, then interrupts the job
    reconcile_in_api: bool = True
    reconcile_every_s: float = 10.0  # the API runs the reconciler this often, whatever the workers are doing
    # A queued job's train message is sent again after this: a worker killed between taking a message and claiming
    # a job takes the message with it (Redis gives it back only after VISIBILITY_TIMEOUT_S). A message too many is
    # harmless: it is a turn that takes the next queued job, or finds none.
    resend_after_s: float = 300.0
    off_peak_start_hour: int = Field(default=1, ge=0, le=23)
    # Per user: jobs training at once (more wait their turn in the queue), and jobs waiting (queued or scheduled).
    max_running_jobs_per_user: int = Field(default=2, ge=1)
    max_waiting_jobs_per_user: int = Field(default=20, ge=1)
    webhook_tries: int = Field(default=8, ge=1)  # a webhook not answered 2xx is tried again, waiting 2× longer each
    webhook_first_wait_s: float = 5.0
    # Webhooks to loopback/private addresses: None = allowed in the embedded mode (one machine, its owner's own
    # tools), refused in production (a webhook must not reach into the server's network).
    webhook_private_targets: bool | None = None
    scratch_dir: Path | None = None

    # Credits (README, "Credits"): one epoch costs ceil(rate × samples per epoch × (W×H ÷ 1024²) ÷ 1000), the rate
    # per 1000 samples at 1024² coming from `credit_prices` by family, else `credit_price_default`; 0 is free (the
    # embedded default). `monthly_credits` are added to every account once per calendar month.
    credit_prices: dict[str, float] = Field(default_factory=dict)
    credit_price_default: float = Field(default=0.0, ge=0)
    monthly_credits: int = Field(default=0, ge=0)
    test_price: int = Field(default=0, ge=0)  # credits for one "test" of someone else's public model

    # Screening (README, "Screening"): with `screen_tagger` (a tagger's folder name or hub id, as GET /taggers lists
    # them), every image users upload and every image workers render is scored, and the rules decide, e.g.
    # [{"label": "explicit", "above": 0.5, "action": "hold"}]; `strikes_to_suspend` confirmed violations suspend.
    screen_tagger: str | None = None
    screen_rules: list[ScreenRule] = Field(default_factory=list)
    strikes_to_suspend: int = Field(default=3, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"LORABAKE_TRUSTED_PROXIES: {entry!r} is not an address or network") from exc
        return value

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        if self.mode == "production" and (self.secret_key == EMBEDDED_SECRET or len(self.secret_key) < 32):
            raise ValueError("LORABAKE_SECRET_KEY must be set to a random string of 32+ characters in production")
        if self.mode == "production" and not (self.metrics_token or self.metrics_public):
            raise ValueError("GET /metrics would show queue sizes, job counts and worker names to anyone: set "
                             "LORABAKE_METRICS_TOKEN (Prometheus sends it as a bearer token), or "
                             "LORABAKE_METRICS_PUBLIC=true to serve them openly on purpose")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("LORABAKE_S3_BUCKET is required with the s3 storage backend")
        return self

    @property
    def webhook_private_allowed(self) -> bool:
        return self.mode == "embedded" if self.webhook_private_targets is None else self.webhook_private_targets

    def signing_key(self) -> str:
        """SECRET_KEY; in the embedded mode without one, a random key made on first start and kept in the var dir
        (mode 0600), so no two installations share a key that would let anyone forge file links."""
        if self.secret_key != EMBEDDED_SECRET:
            return self.secret_key
        path = self.var_dir / "secret.key"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.var_dir.mkdir(parents=True, exist_ok=True)
        draft = self.var_dir / f".secret.key.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)  # appears whole or not at all; the first process to link it wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
        return path.read_text().strip()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'lorabake.sqlite').resolve()}"

    @property
    def celery_broker(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{(self.var_dir / 'broker.sqlite').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.storage_dir or self.var_dir / "storage"

    @property
    def scratch(self) -> Path:
        return self.scratch_dir or self.var_dir / "scratch"

    @property
    def taggers_dir(self) -> Path:
        return self.tagger_dir or self.var_dir / "taggers"

    @property
    def captioners_folder(self) -> Path:
        return self.captioners_dir or self.var_dir / "captioners"

    def models(self) -> list[BaseModelEntry]:
        """BASE_MODELS, or in the embedded default the tiny models under var/models (`tiny-<family>` folders that
        `lorabake models make-tiny` wrote), TINY_FIRST first and always (make run writes it)."""
        if self.base_models:
            return self.base_models
        made = {index.parent.name for index in (self.var_dir / "models").glob("tiny-*/model_index.json")}
        folders = [self.var_dir / "models" / name for name in [self.tiny_first, *sorted(made - {self.tiny_first})]]
        return [BaseModelEntry(name=folder.name, family=folder.name.removeprefix("tiny-"),
                               location=str(folder.resolve()), resolution=64, train_overrides=TINY_OVERRIDES,
                               full_size=False)
                for folder in folders]

    def model_named(self, name: str) -> BaseModelEntry | None:
        return next((m for m in self.models() if m.name == name), None)

    def offered_model(self, name: str) -> BaseModelEntry:
        """The named base model for a worker about to use it; ValueError (shown to the user) when it is gone."""
        model = self.model_named(name)
        if model is None:
            raise ValueError(f"base model {name!r} is no longer offered by this server")
        return model


@lru_cache
def get_settings() -> Settings:
    return Settings()
