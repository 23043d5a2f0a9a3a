"""The worker's side of screening: the site's screening tagger scores images (onnxruntime), core/screening.py judges
them and records the verdicts. A tagger that cannot be loaded leaves the images pending, with why: unscreened images
are never shown to anyone but their owner."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image
from sqlalchemy.orm import Session

from core import screening
from core.db import session_factory
from core.models import Screening
from core.screen_policy import ScreenRule
from core.settings import Settings
from core.storage import Storage
from core.taggers import find_tagger
from worker.tagging import TaggerError, TagOptions, WD14Tagger, tagger_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shot:
    """One stored image to screen: where it is, what its owner calls it, the picture, and what it belongs to (the
    dataset image, epoch, generation, sweep or model)."""

    key: str
    name: str
    picture: Image.Image
    subject_id: str


class Screener:
    def __init__(self, tagger: WD14Tagger, rules: Sequence[ScreenRule]) -> None:
        self.tagger, self.rules = tagger, list(rules)
        wanted = screening.labels(rules)
        self.columns = {name: i for i, name in enumerate(tagger.vocabulary.names) if name in wanted}

    def scores(self, pictures: list[Image.Image]) -> list[dict[str, float]]:
        rows = self.tagger.scores(pictures)
        return [{name: float(row[i]) for name, i in self.columns.items()} for row in rows]


_LOADED: dict[str, Screener] = {}  # by tagger and rules: a process loads the model once


def screener(settings: Settings) -> Screener | None:
    """The site's screener; None when screening is off. Raises TaggerError when it is on but cannot be loaded."""
    if settings.screen_tagger is None:
        return None
    key = settings.screen_tagger + json.dumps([rule.model_dump(mode="json") for rule in settings.screen_rules])
    if key not in _LOADED:
        entry = find_tagger(settings, settings.screen_tagger)
        if entry is None:
            raise TaggerError(f"the screening tagger {settings.screen_tagger!r} is not installed on this server")
        _LOADED[key] = Screener(WD14Tagger(*tagger_files(entry), TagOptions()), settings.screen_rules)
    return _LOADED[key]


def screen(session: Session, settings: Settings, owner_id: str, subject: str,
           shots: Sequence[Shot]) -> list[screening.Verdict]:
    """Scores and records each image (the caller commits); nothing when screening is off."""
    try:
        judge = screener(settings)
    except TaggerError as exc:
        log.error("screening is on but its tagger cannot be used: %s", exc)
        for shot in shots:
            screening.wait(session, owner_id, subject, shot.subject_id, shot.key, shot.name)
        return [screening.Verdict(screening.State.pending, screening.PENDING_REASON)] * len(shots)
    if judge is None or not shots:
        return []
    verdicts = []
    for shot, scores in zip(shots, judge.scores([s.picture for s in shots]), strict=True):
        verdict = screening.judge(scores, judge.rules)
        screening.record(session, owner_id, subject, shot.subject_id, shot.key, shot.name, verdict, scores)
        verdicts.append(verdict)
    return verdicts


def screen_now(factory: Callable[[], Session], settings: Settings, owner_id: str, subject: str,
               shots: Sequence[Shot]) -> None:
    """screen() in a transaction of its own."""
    if settings.screen_tagger is None or not shots:
        return
    with factory() as session:
        screen(session, settings, owner_id, subject, shots)
        session.commit()


def run_screening(settings: Settings, storage: Storage, screening_id: str) -> str:
    """One pending file (an upload for a model's page): scored and judged. Safe to run twice."""
    with session_factory(settings.db_url)() as session:
        row = session.get(Screening, screening_id)
        if row is None or row.state != screening.State.pending:
            return "gone" if row is None else row.state
        with Image.open(io.BytesIO(storage.get_bytes(row.key))) as picture:
            shot = Shot(row.key, row.name, picture.convert("RGB"), row.subject_id)
        verdicts = screen(session, settings, row.owner_id, row.subject, [shot])
        session.commit()
    return verdicts[0].state if verdicts else "screening is off"
