"""Adding a checked image to a dataset: the one path that uploads and zip imports share."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.uploads import clean_image, display_name
from core import keys, masks, screening
from core.models import Dataset, Image, new_id
from core.settings import Settings
from core.storage import Storage


def store_image(session: Session, storage: Storage, settings: Settings, dataset: Dataset, filename: str,
                raw: bytes, **fields: object) -> Image:
    """Validates `raw` (RejectedUpload names the problem), stores it and its thumbnail, and adds the row (and, with
    screening on, its pending screening).

    The caller commits; `fields` sets tags, repeats, is_reg and the like on the new row."""
    clean = clean_image(raw, settings.max_upload_bytes, settings.max_image_pixels)
    image_id = new_id()
    key = keys.image(dataset.owner_id, dataset.id, image_id, clean.format)
    thumb_key = keys.thumb(dataset.owner_id, dataset.id, image_id)
    storage.put_bytes(key, clean.data, "image/png" if clean.format == "png" else "image/jpeg")
    storage.put_bytes(thumb_key, clean.thumb, "image/webp")
    image = Image(id=image_id, dataset_id=dataset.id, filename=display_name(filename), storage_key=key,
                  thumb_key=thumb_key, sha256=clean.sha256, phash=clean.phash, size=len(clean.data),
                  format=clean.format, width=clean.width, height=clean.height, **{"tags": [], **fields})
    if clean.mask is not None:  # its transparent pixels are left out of masked-loss training
        masks.store(storage, image, dataset.owner_id, clean.mask)
    session.add(image)
    if settings.screen_tagger is not None:  # unseen by the site's screening: pending until a worker scores it
        screening.wait(session, dataset.owner_id, "image", image_id, key, image.filename)
    return image
