"""Published models and the public gallery: what publishing and editing send, what a model page and a gallery card
show."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import LoraName, Text, Title

Words = list[Title]


class ModelFields(BaseModel):
    """What an owner says about a model, on publishing and when editing its page."""

    trigger_words: Words = Field(default_factory=list, max_length=50)
    description: Text = Field(default="", max_length=10000, description="Markdown; shown sanitized")
    license: Text = Field(default="", max_length=64, description="e.g. CreativeML Open RAIL-M, CC BY 4.0")
    recommended_weight: float = Field(default=0.8, ge=-4, le=4)
    tags: Words = Field(default_factory=list, max_length=20, description="what the gallery's search finds it by")
    visibility: Literal["private", "public"] = "private"


class PublishIn(ModelFields):
    job_id: str
    epoch: int = Field(ge=1)
    name: LoraName


class ModelPatch(BaseModel):
    name: LoraName | None = None
    trigger_words: Words | None = Field(None, max_length=50)
    description: Text | None = Field(default=None, max_length=10000)
    license: Text | None = Field(default=None, max_length=64)
    recommended_weight: float | None = Field(default=None, ge=-4, le=4)
    tags: Words | None = Field(None, max_length=20)
    visibility: Literal["private", "public"] | None = None
    cover_id: str | None = Field(None, description="one of its showcase items")


class ShowcaseOut(BaseModel):
    id: str
    url: str
    source: str = Field(description="preview, generation or upload")
    screening: str = Field("allowed", description="for its owner: pending, held … (others only see allowed ones)")
    screening_reason: str = ""


class ShowcaseCandidate(BaseModel):
    """A preview or test image of the model's job that could go on its page."""

    key: str
    url: str
    source: str
    name: str


class ShowcaseAdd(BaseModel):
    keys: list[str] = Field(min_length=1, max_length=20, description="keys from GET …/showcase/candidates")


class ModelOut(BaseModel):
    id: str
    name: str
    owner_id: str
    owner: str = Field(description="who published it: the part of their email before the @")
    job_id: str
    epoch: int
    base_model: str = Field(description="the base model it was trained on, by its name on this server")
    family: str = Field(description="that base model's family, in words (SD 1.5, SDXL, FLUX.1 …)")
    network_type: str = Field(description="LoRA, LoHa or LoKr, with + DoRA where it decomposes the weight")
    size: int = Field(description="the file's size in bytes")
    trigger_words: list[str]
    description: str = Field(description="as written (Markdown)")
    description_html: str = Field(description="the description rendered, with raw HTML and unsafe links removed")
    license: str
    recommended_weight: float
    tags: list[str]
    downloads: int
    visibility: str
    cover_id: str | None = Field(description="the showcase item shown as its face (the chosen one, else the first)")
    cover_url: str | None
    showcase: list[ShowcaseOut]
    previews: list[str]
    parameters: dict[str, Any] = Field(description="what it was trained with (the job's parameters)")
    download_url: str = Field(description="counts the download, then sends the file (signed-in users)")
    snippet: str
    created_at: datetime
    in_gallery: bool = Field(description="public, not hidden, and with a showcase image others may see")
    hidden_reason: str | None = Field(None, description="set while moderation keeps it off public view (only its "
                                                        "owner sees the model then)")


class GalleryCard(BaseModel):
    id: str
    name: str
    owner: str
    family: str
    base_model: str
    cover_url: str
    tags: list[str]
    trigger_words: list[str]
    downloads: int
    recommended_weight: float
    created_at: datetime
