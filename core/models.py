"""SQLAlchemy models shared by api and worker. The schema itself is created only by Alembic migrations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A stored time with its zone: SQLite hands back naive datetimes (stored as UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class JobStatus(StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    interrupted = "interrupted"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[Any]: JSON}


class Role(StrEnum):
    user = "user"
    admin = "admin"  # the operator's console (api/routes/admin.py); granted by `lorabake admin grant EMAIL`


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("credits >= 0", name="ck_users_credits_not_negative"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)  # told when a job ends
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)  # signs what is sent there
    role: Mapped[str] = mapped_column(String(16), default=Role.user, server_default=Role.user)
    suspended_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # set while suspended, shown at sign-in
    suspended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # credits free to spend (core/credits.py); what queued and running jobs hold is on the jobs
    credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    granted_month: Mapped[str | None] = mapped_column(String(7), nullable=True)  # "YYYY-MM" of the last monthly grant
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the site's setting
    max_waiting_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    strikes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # confirmed content violations


class ApiToken(Base):
    """A login session or a personal token; only the sha256 of the secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    default_repeats: Mapped[int] = mapped_column(Integer, default=10)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    crop_family: Mapped[str | None] = mapped_column(String(32), nullable=True)  # its crops were made for this family
    images: Mapped[list[Image]] = relationship(back_populates="dataset", cascade="all, delete-orphan",
                                               order_by="Image.created_at")


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(512))
    thumb_key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    caption: Mapped[str] = mapped_column(Text, default="")
    repeats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    crop: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    is_reg: Mapped[bool] = mapped_column(Boolean, default=False)
    phash: Mapped[str | None] = mapped_column(String(16), nullable=True)  # 64-bit DCT hash, hex
    mask_key: Mapped[str | None] = mapped_column(String(512), nullable=True)  # masked loss: white trained, black not
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dataset: Mapped[Dataset] = relationship(back_populates="images")

    @property
    def text_kind(self) -> str:
        """What the image's text is: tags, a sentence (its caption), both, or none yet."""
        return {(True, True): "both", (True, False): "tags", (False, True): "sentence"}.get(
            (bool(self.tags), bool(self.caption.strip())), "none")


class TaskStatus(StrEnum):
    """Dataset tasks and test generations."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class DatasetTask(Base):
    """Long work over a dataset's images on the cpu queue (auto-tagging, focus crops), with its progress."""

    __tablename__ = "dataset_tasks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.queued)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint("credits_held >= 0", name="ck_jobs_credits_held_not_negative"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    base_model: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(8), default="basic")
    preset: Mapped[str | None] = mapped_column(String(50), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sample_prompts: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    epochs_total: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimated_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    start_after: Mapped[datetime | None] = mapped_column(nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)  # its train message last reached the broker
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    state_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(300), nullable=True)  # the end's announcement
    log_tail: Mapped[list[Any]] = mapped_column(default=list)
    history: Mapped[list[Any]] = mapped_column(default=list)  # [step, loss, lr] points for the charts
    # credits (core/credits.py): the price of one epoch, what is still held for the epochs to come, and how many
    # epochs were charged (the fence that keeps a resumed attempt from charging an epoch twice)
    epoch_price: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    charged_epochs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # placement (core/placement.py): processes, one per GPU, and the estimated peak memory on each GPU
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    epochs: Mapped[list[Epoch]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                               order_by="Epoch.n")

    def epoch_lora_name(self, n: int) -> str:
        """Epoch n's file stem as sd-scripts names it, `{name}-{n:06d}`; `<lora:…>` tags may use it too."""
        return f"{self.name}-{n:06d}"


class Epoch(Base):
    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("job_id", "n"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    file_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    validation_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # on the held-out images
    previews: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job: Mapped[Job] = relationship(back_populates="epochs")


class PublishedModel(Base):
    __tablename__ = "published_models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch_id: Mapped[str] = mapped_column(ForeignKey("epochs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    trigger_words: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(8), default="private")
    hidden_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # kept off public view by moderation
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cover_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a showcase item; None: the first
    license: Mapped[str] = mapped_column(String(64), default="", server_default="")
    recommended_weight: Mapped[float] = mapped_column(Float, default=0.8, server_default="0.8")
    tags: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    downloads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    family: Mapped[str] = mapped_column(String(32), default="", server_default="")  # its base model's family
    keywords: Mapped[str] = mapped_column(Text, default="", server_default="")  # what the gallery's search reads
    showcase: Mapped[list[ShowcaseItem]] = relationship(cascade="all, delete-orphan", order_by="ShowcaseItem.position")

    @hybrid_property
    def shown_publicly(self) -> bool:  # noqa: D102 - public, and not hidden by moderation (works in SQL too)
        return self.visibility == "public" and self.hidden_reason is None

    @shown_publicly.inplace.expression
    @classmethod
    def _shown_publicly(cls) -> ColumnElement[bool]:
        return and_(cls.visibility == "public", cls.hidden_reason.is_(None))


class ShowcaseItem(Base):
    """One picture on a model's page: one of its previews or test images, or an upload (screened like any)."""

    __tablename__ = "showcase_items"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("published_models.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(16))  # preview, generation, upload
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sweep(Base):
    """An epoch × LoRA-weight grid: the same prompt and seed in every cell, plus a column without the LoRA."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)  # prompt, seed, …, epochs, weights
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.queued)
    done: Mapped[int] = mapped_column(Integer, default=0)  # cells rendered
    total: Mapped[int] = mapped_column(Integer, default=0)
    cell_keys: Mapped[list[Any]] = mapped_column(default=list)  # rows (epochs) of columns (no LoRA, weights…)
    grid_key: Mapped[str | None] = mapped_column(String(512), nullable=True)  # the labelled PNG of them all
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Generation(Base):
    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch_n: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.queued)
    image_keys: Mapped[list[Any]] = mapped_column(default=list)
    notes: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")  # e.g. LoRA modules that fit nothing
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversion(Base):
    """An epoch as a plain LoRA of `rank` (worker.conversion): the file, and what the rank left out (`report`)."""

    __tablename__ = "conversions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch_n: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.queued)
    file_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)  # rank, modules, relative_error, worst_…
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunTiming(Base):
    """One finished training run on this server, as the estimator reads it: duration ≈ setup_s + steps · step_s +
    epochs · epoch_s (an epoch's end: saving, uploading, previews)."""

    __tablename__ = "run_timings"
    __table_args__ = (Index("ix_run_timings_family", "family", "resolution", "batch_size"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    family: Mapped[str] = mapped_column(String(32))
    resolution: Mapped[str] = mapped_column(String(16))  # "WxH"
    batch_size: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    setup_s: Mapped[float] = mapped_column(Float)
    step_s: Mapped[float] = mapped_column(Float)
    epoch_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditMove(Base):
    """One move of a user's credits: `amount` with `kind` saying which way (grant, top-up and release add to the
    balance, hold takes from it, charge spends what a job held), and the balance after it."""

    __tablename__ = "credit_moves"
    __table_args__ = (Index("ix_credit_moves_user_id", "user_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # kept when the job is deleted
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One admin action (or one the policy took by itself, actor None): who, what, on what, and why."""

    __tablename__ = "audit_entries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    actor_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor_email: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(32))
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Screening(Base):
    """What the site's classifier said of one stored image (core/screening.py), and what an admin decided. An image
    without a row was never screened (screening was off) and counts as allowed."""

    __tablename__ = "screenings"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(16))  # image, preview, generation, sweep, showcase
    subject_id: Mapped[str] = mapped_column(String(32), index=True)  # the image, epoch, generation, sweep or model
    key: Mapped[str] = mapped_column(String(512), unique=True, index=True)  # the file in storage
    name: Mapped[str] = mapped_column(String(255))  # what its owner calls it (a file name, "epoch 2 preview 1")
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # in words, for its owner
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)  # label → score, for the labels the rules name
    decided_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Report(Base):
    """A user's report of a public model; it waits in the moderation queue until an admin dismisses or upholds it."""

    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("published_models.id", ondelete="CASCADE"), index=True)
    reporter_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open, dismissed, upheld
    decided_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    decision: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Worker(Base):
    """A worker process as it last reported itself: its queues and GPUs (what it runs is on the jobs)."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[Any]] = mapped_column(default=list)
    gpus: Mapped[list[Any]] = mapped_column(default=list)  # [{index, name, memory_total_mb, memory_used_mb}]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


# the rows of tasks sent to a queue by id (api.deps.dispatch_task, api.waiting)
TaskRow = DatasetTask | Generation | Sweep | Conversion
