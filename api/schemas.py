"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from core.kohya_layout import MAX_REPEATS
from core.models import FINISHED
from trainer.families import FAMILIES

TAG_MAX = 200
TAGS_MAX = 500


def _printable(value: str | None) -> str | None:
    if value is not None and any(not ch.isprintable() and ch not in "\n\t" for ch in value):
        raise ValueError("control characters (such as NUL) are not allowed")
    return value


def _visible(value: str | None) -> str | None:
    if value is not None:
        value = " ".join(value.split())
        if not value:
            raise ValueError("needs at least one letter, digit or sign (not only spaces)")
    return value


Text = Annotated[str, AfterValidator(_printable)]  # free text a person typed: no NUL or other control codes
Title = Annotated[str, AfterValidator(_printable), AfterValidator(_visible)]  # a name shown as a link or heading


class Registration(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=256)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str
    created_at: datetime
    role: str = Field(description="user, or admin (the console)")


class NewApiToken(BaseModel):
    name: Text = Field(default="script", max_length=100)
    days: int | None = Field(default=None, ge=1, le=3650)


class DatasetIn(BaseModel):
    name: Title = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=5000)
    default_repeats: int = Field(default=10, ge=1, le=MAX_REPEATS)


class DatasetPatch(BaseModel):
    name: Title | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=5000)
    default_repeats: int | None = Field(default=None, ge=1, le=MAX_REPEATS)


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    description: str
    default_repeats: int
    created_at: datetime
    image_count: int = 0
    crop_family: str | None = Field(None, description="the model family its crops were made for")


def clean_tags(tags: list[str]) -> list[str]:
    if len(tags) > TAGS_MAX:
        raise ValueError(f"{len(tags)} tags; at most {TAGS_MAX} per image")
    out: list[str] = []
    for tag in tags:
        tag = " ".join("".join(ch for ch in tag.replace(",", " ") if ch.isprintable()).split())
        if len(tag) > TAG_MAX:
            raise ValueError(f"tag longer than {TAG_MAX} characters: {tag[:30]}…")
        if tag and tag not in out:
            out.append(tag)
    return out


Tags = Annotated[list[str], AfterValidator(clean_tags)]
# A LoRA name is also its file name and its `<lora:name:weight>` tag: no spaces, colons or slashes.
LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
LoraName = Annotated[str, Field(min_length=1, max_length=100, pattern=LORA_NAME_PATTERN)]
# what a pattern means, for people: pydantic's own message quotes the regular expression
PATTERN_HINTS = {LORA_NAME_PATTERN: "use letters, digits and _ . - only, starting with a letter or digit (it becomes "
                                    "the file name and the <lora:name:weight> tag)"}


def readable_error(error: dict[str, Any]) -> str:
    """A validation error's message as a person reads it."""
    if error.get("type") == "string_pattern_mismatch":
        return PATTERN_HINTS.get(error.get("ctx", {}).get("pattern"), "has characters that are not allowed here")
    return str(error["msg"]).removeprefix("Value error, ")


class CropBox(BaseModel):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(ge=8)
    height: int = Field(ge=8)


class ImagePatch(BaseModel):
    tags: Tags | None = None
    caption: Text | None = Field(default=None, max_length=5000)
    repeats: int | None = Field(default=None, ge=1, le=MAX_REPEATS)
    is_reg: bool | None = None
    crop: CropBox | None = None
    clear_crop: bool = False



class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    filename: str
    sha256: str
    size: int
    format: str
    width: int
    height: int
    tags: list[str]
    caption: str
    text_kind: Literal["none", "tags", "sentence", "both"] = Field(
        "none", description="what the image's text is: tags, a sentence (caption), or both")
    repeats: int | None
    is_reg: bool
    crop: dict[str, int] | None
    thumb_url: str | None = None
    url: str | None = None
    mask_url: str | None = Field(None, description="masked loss: the image's mask (white trained, black not), at "
                                                   "the image's size; null: trained whole")
    screening: str = Field("allowed", description="pending, allowed, private, held, refused or removed: only "
                                                  "allowed and private images are trained on")
    screening_reason: str = Field("", description="why, in words, when not allowed")


class UploadResult(BaseModel):
    filename: str
    id: str | None = None
    error: str | None = None


class CropRequest(BaseModel):
    mode: Literal["center", "focus"] = "center"
    width: int = Field(ge=64, le=4096, description="target width; only the aspect ratio decides the box")
    height: int = Field(ge=64, le=4096)
    image_ids: list[str] | None = None
    family: str | None = Field(None, description="the model family the crop is for (GET /families); remembered on "
                                                 "the dataset so a job on another family is warned")

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        if value is not None and value not in FAMILIES:
            raise ValueError(f"unknown model family {value!r}; known: {', '.join(FAMILIES)}")
        return value


class AutotagRequest(BaseModel):
    tagger: str | None = Field(default=None, description="a name from GET /taggers; default: the first installed")
    general_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    character_threshold: float = Field(default=0.85, ge=0.0, le=1.0)
    include_ratings: bool = False
    underscores_to_spaces: bool = True
    blacklist: Tags = Field(default_factory=list)
    mode: Literal["append", "overwrite", "skip_tagged"] = "append"
    image_ids: list[str] | None = None


class CaptionRequest(BaseModel):
    captioner: str | None = Field(default=None, description="a name from GET /captioners; default: the first "
                                                            "installed")
    length: Literal["short", "detailed"] = "detailed"
    instruction: str = Field("", max_length=500, description="added to the request (Qwen2.5-VL; Florence-2 reads its "
                                                             "own task prompts only)")
    trigger: str = Field("", max_length=100, description="the trigger word to put in every caption")
    trigger_position: Literal["start", "end", "none"] = "start"
    tag_hints: bool = Field(False, description="give each image's tags to the captioner as hints")
    mode: Literal["skip_captioned", "overwrite"] = Field(
        "skip_captioned", description="skip_captioned keeps every caption already there (hand edits included)")
    image_ids: list[str] | None = None


class MaskRequest(BaseModel):
    """Masks for masked loss, made by a worker from each image's subject or faces."""

    source: Literal["subject", "faces"] = Field(
        "subject", description="subject: the region the focus crop centres on (the salient part and any faces); "
                               "faces: the faces the detector finds, with hair and chin")
    mode: Literal["skip_masked", "overwrite"] = Field(
        "skip_masked", description="skip_masked keeps every mask already there (uploaded ones included)")
    image_ids: list[str] | None = None


class CaptionBatch(BaseModel):
    """One edit over the captions (sentences) of the chosen images."""

    action: Literal["replace", "prefix"]
    find: str = Field("", max_length=500, description="replace: the text to find (case-sensitive)")
    replace_with: str = Field("", max_length=500)
    prefix: str = Field("", max_length=200, description="prefix: put at the start of every caption that does not "
                                                        "start with it (the trigger word)")
    image_ids: list[str] | None = None

    @model_validator(mode="after")
    def _says_what(self) -> CaptionBatch:
        if self.action == "replace" and not self.find:
            raise ValueError("replace needs the text to find")
        if self.action == "prefix" and not self.prefix.strip():
            raise ValueError("prefix needs the text to put first")
        return self


class CaptionerOut(BaseModel):
    name: str
    source: Literal["folder", "hub"]
    installed: bool
    architecture: str | None


class TaggerOut(BaseModel):
    name: str
    source: Literal["folder", "hub"]
    installed: bool


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    dataset_id: str
    kind: str
    status: str
    done: int
    total: int
    result: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    waiting_for: str | None = Field(None, description="while queued: what it waits for")
    on_upload: bool = Field(False, description="started by an upload (tag on upload), not by the user")


class TagBatch(BaseModel):
    action: Literal["add", "remove", "replace"]
    tags: Tags = Field(min_length=1)
    position: Literal["start", "end"] = "end"
    replace_with: Tags = Field(default_factory=list)
    image_ids: list[str] | None = None



class JobIn(BaseModel):
    dataset_id: str
    base_model: str
    name: LoraName = "lora"
    mode: Literal["basic", "pro"] = "basic"
    preset: str | None = "standard"
    params: dict[str, Any] = Field(default_factory=dict)
    sample_prompts: list[str] = Field(default_factory=list, max_length=8)
    start_after: datetime | Literal["tonight"] | None = None
    repeats: int | None = Field(default=None, ge=1, le=MAX_REPEATS,
                                description="repeats per image for images without their own; becomes the dataset's "
                                            "default when the job is created")


class RetrainIn(BaseModel):
    """What to change for a retrain; `params` are merged over the old job's parameters."""

    base_model: str | None = None
    name: LoraName | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sample_prompts: list[str] | None = Field(default=None, max_length=8)
    start_after: datetime | Literal["tonight"] | None = None
    repeats: int | None = Field(default=None, ge=1, le=MAX_REPEATS)


class ContinueIn(BaseModel):
    """More epochs for a succeeded or canceled job, from its stored state, as its next attempt."""

    epochs: int = Field(default=2, ge=1, le=1000, description="epochs to add")
    schedule: Literal["extend", "restart"] = Field(
        default="extend", description="extend: the learning-rate schedule is recomputed over the new total, so the "
                                      "rate steps back up to where the longer run would be; restart: the schedule "
                                      "runs again, from its peak, over the added epochs only")


class MemoryOut(BaseModel):
    total_gib: float = Field(description="GPU memory at the run's peak, GiB")
    parts: dict[str, float] = Field(description="GiB per term: weights, text encoder, VAE, LoRA and optimizer, "
                                                "activations, overhead")
    measured: bool = Field(description="false: computed from the model's size and the settings (docs/memory.md), "
                                       "not yet measured on a GPU")
    summary: str


class Estimate(BaseModel):
    steps_per_epoch: int
    epochs: int
    total_steps: int
    train_images: int
    train_samples: int = Field(description="training images × their repeats, per epoch")
    reg_samples: int
    batch_size: int
    gradient_accumulation_steps: int
    gpus: int = Field(1, description="processes, one per GPU: a step takes a batch on each")
    estimated_seconds: float | None = Field(description="how long it takes on this server, learned from the runs it "
                                                     "finished; null: no measurement on this server yet")
    tonight_starts_at: datetime = Field(description='when "start tonight" would start (the off-peak window)')
    epoch_price: int = Field(0, description="credits one finished epoch costs (0: free)")
    price: int = Field(0, description="credits held when the job is queued: every epoch's price; what the job does "
                                      "not train (canceled, failed, ended early) goes back")
    balance: int = Field(0, description="credits you have to spend now")
    memory: MemoryOut | None = Field(None, description="large models: the GPU memory the run needs")
    warnings: list[dict[str, str]]
    errors: list[dict[str, str]]


class JobSummary(BaseModel):
    """A job as the queue lists it: state and timing, without the parameters, log and chart history."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    dataset_id: str
    base_model: str
    mode: str
    preset: str | None
    status: str
    attempt: int
    step: int
    total_steps: int
    epochs_total: int
    progress: float = 0.0
    loss: float | None
    eta_s: float | None = Field(description="seconds until the job ends (running: measured; queued: estimated)")
    estimated_s: float | None = Field(description="duration estimated at creation")
    queue_position: int | None = None
    starts_in_s: float | None = Field(None, description="queued: estimated seconds until a worker takes it")
    waiting_for: str | None = Field(None, description="queued: why no worker takes it now, e.g. \"waiting for a GPU "
                                                      "with 40 GB: largest free 24 GB\"")
    gpus: int = Field(1, description="GPUs (one process each) the job trains on")
    memory_mib: int | None = Field(None, description="estimated peak memory on each GPU, MiB (large models)")
    start_after: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    epoch_price: int = Field(0, description="credits per finished epoch")
    credits_held: int = Field(0, description="credits held for the epochs still to train")
    charged_epochs: int = Field(0, description="epochs paid for")

    @computed_field(description="the job has ended (succeeded, failed or canceled): nothing will change any more")
    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobOut(JobSummary):
    params: dict[str, Any]
    network_type: str = Field("lora", description="what network_module and network_args amount to: a name in "
                                                  "GET /network-types")
    sample_prompts: list[str]
    lr: float | None
    log_tail: list[str]
    history: list[list[float]] = Field(description="[step, loss, lr] points, oldest first")
    webhook_status: str | None = Field(None, description="how the owner's webhook was told of the job's end")


class EpochOut(BaseModel):
    n: int
    loss: float | None
    validation_loss: float | None = Field(None, description="loss on the held-out images, when validation_split "
                                                            "keeps some apart")
    size: int
    sha256: str
    previews: list[str]
    download_url: str


class GenerateIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    negative: str = Field(default="", max_length=2000)
    weight: float = Field(default=0.8, ge=-2, le=2)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=150, description="sampling steps; empty: the model's own")
    sampler: str = "euler_a"
    width: int | None = Field(default=None, ge=64, le=2048, multiple_of=8)
    height: int | None = Field(default=None, ge=64, le=2048, multiple_of=8)


class GenerationOut(BaseModel):
    id: str
    status: str
    images: list[str]
    error: str | None
    notes: list[str] = Field(default_factory=list, description="what else the generation reports, e.g. parts of "
                                                                  "a LoRA that fit nothing in the base model")
    waiting_for: str | None = Field(None, description="while queued: what it waits for")


class PlainLoraIn(BaseModel):
    rank: int = Field(32, ge=1, le=1024, description="the plain LoRA's rank; a higher rank leaves out less of the "
                                                      "update and makes a larger file")


class PlainLoraOut(BaseModel):
    id: str
    status: str
    epoch: int
    rank: int
    report: dict[str, Any] = Field(description="when done: rank, modules, relative_error (of the whole update), "
                                               "worst_module and worst_error")
    download_url: str | None
    error: str | None
    waiting_for: str | None = None


class SweepIn(BaseModel):
    """An epoch × weight grid: `epochs` default to every stored epoch (at most 12), the prompt to the job's first
    preview prompt; a `<lora:…>` tag in the prompt is ignored (each cell sets its own weight)."""

    epochs: list[int] | None = Field(default=None, min_length=1, max_length=12)
    weights: list[float] = Field(default=[0.2, 0.4, 0.6, 0.8, 1.0], min_length=1, max_length=8)
    prompt: str | None = Field(default=None, max_length=2000)
    negative: str = Field(default="", max_length=2000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=150, description="sampling steps; empty: the model's own")
    sampler: str = "euler_a"

    @field_validator("weights")
    @classmethod
    def _weights_in_range(cls, weights: list[float]) -> list[float]:
        if any(not -2 <= w <= 2 for w in weights):
            raise ValueError("each weight must be between -2 and 2")
        return weights


class SweepOut(BaseModel):
    id: str
    status: str
    done: int = Field(description="cells rendered so far")
    total: int
    epochs: list[int]
    weights: list[float]
    prompt: str
    negative: str
    seed: int
    steps: int | None = Field(description="sampling steps; null: the model's own")
    cells: list[list[str]] = Field(description="per epoch (row): the image without the LoRA, then one per weight")
    grid_url: str | None = Field(description="all cells in one labelled PNG")
    waiting_for: str | None = Field(None, description="while queued: what it waits for")
    error: str | None


class WebhookIn(BaseModel):
    url: str | None = Field(None, max_length=2000, description="http(s) address told when a job ends; null: none")
    new_secret: bool = Field(False, description="make a new signing secret (the old one stops working)")


class WebhookOut(BaseModel):
    url: str | None
    secret: str | None = Field(description="signs each delivery: X-Lorabake-Signature = sha256 HMAC of "
                                           "'<X-Lorabake-Timestamp>.<body>'")
    events: list[str]


class WebhookTest(BaseModel):
    delivered: bool
    message: str


class Limits(BaseModel):
    running: int
    max_running: int
    waiting: int = Field(description="queued or scheduled jobs")
    max_waiting: int
