"""Auto-tagging with a WD14-style ONNX tagger and focus crops, without the service around them."""

from __future__ import annotations

import random
import shutil

import pytest
from huggingface_hub import constants as hub_constants
from PIL import Image, ImageDraw

from core.geometry import center_box
from core.settings import Settings
from core.taggers import fetch_hub_tagger, find_tagger, list_taggers
from tests.tiny_tagger import make_tiny_tagger
from worker.focus_crop import faces, focus_box
from worker.tagging import TaggerError, TagOptions, WD14Tagger, load_tagger

GREEN = Image.new("RGB", (96, 96), (40, 200, 40))


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return make_tiny_tagger(tmp_path_factory.mktemp("taggers") / "tiny")


def tags(tagger_dir, image=GREEN, **options) -> list[str]:
    tagger = WD14Tagger(tagger_dir / "model.onnx", tagger_dir / "selected_tags.csv", TagOptions(**options))
    return tagger.label([image])[0].tags


def test_characters_come_first_then_general_tags_by_confidence_without_ratings(tagger_dir):
    assert tags(tagger_dir) == ["hatsune miku", "green theme", "^_^", "simple background"]
    red = Image.new("RGB", (96, 96), (220, 30, 30))
    assert tags(tagger_dir, red) == ["red theme", "^_^", "simple background"]


def test_thresholds_ratings_underscores_and_blacklist(tagger_dir):
    assert tags(tagger_dir, general_threshold=0.6) == ["hatsune miku", "green theme", "^_^"]
    assert "hatsune miku" not in tags(tagger_dir, character_threshold=0.999)
    assert tags(tagger_dir, include_ratings=True)[-1] == "general"
    assert tags(tagger_dir, underscores_to_spaces=False) == ["hatsune_miku", "green_theme", "^_^",
                                                             "simple_background"]
    assert tags(tagger_dir, blacklist=frozenset({"simple_background", "^_^"})) == ["hatsune miku", "green theme"]


def test_a_batch_gives_the_same_tags_as_one_image_at_a_time(tagger_dir):
    pictures = [Image.new("RGB", (64 + 8 * i, 64), (30 * i, 200 - 20 * i, 90)) for i in range(10)]
    tagger = WD14Tagger(tagger_dir / "model.onnx", tagger_dir / "selected_tags.csv", TagOptions())
    assert [labels.tags for labels in tagger.label(pictures)] == [tagger.label([p])[0].tags for p in pictures]


def test_a_tags_file_that_does_not_match_the_model_is_named(tagger_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tagger_dir, broken)
    lines = (broken / "selected_tags.csv").read_text().splitlines()
    (broken / "selected_tags.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(TaggerError, match="scores 11 tags but selected_tags.csv lists 9"):
        WD14Tagger(broken / "model.onnx", broken / "selected_tags.csv", TagOptions())
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(TaggerError, match="not a usable ONNX model"):
        WD14Tagger(broken / "model.onnx", tagger_dir / "selected_tags.csv", TagOptions())


def test_taggers_are_found_in_the_folder_and_in_the_hub_cache(tagger_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    snapshot = cache / "models--someone--tiny-tagger" / "snapshots" / "abc123"
    shutil.copytree(tagger_dir, snapshot)
    (cache / "models--someone--tiny-tagger" / "refs").mkdir()
    (cache / "models--someone--tiny-tagger" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE sets when the server starts
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    shutil.copytree(tagger_dir, tmp_path / "var" / "taggers" / "local-one")
    (tmp_path / "var" / "taggers" / "half").mkdir()  # no model in it: not listed
    settings = Settings(var_dir=tmp_path / "var", taggers_from_hub=["someone/tiny-tagger", "someone/absent"])
    listed = [(t.name, t.source, t.installed) for t in list_taggers(settings)]
    assert listed == [("local-one", "folder", True), ("someone/tiny-tagger", "hub", True),
                      ("someone/absent", "hub", False)]
    hub = load_tagger(find_tagger(settings, "someone/tiny-tagger"), TagOptions())
    assert hub.label([GREEN])[0].tags == tags(tagger_dir)
    with pytest.raises(TaggerError, match="someone/absent: the tagger could not be loaded"):
        load_tagger(find_tagger(settings, "someone/absent"), TagOptions())
    # what `make run` offers: a cached tagger without the network; one it cannot fetch, with the reason
    assert fetch_hub_tagger("someone/tiny-tagger") == (True, "auto-tagger someone/tiny-tagger: ready (from the "
                                                              "Hugging Face cache)")
    ready, line = fetch_hub_tagger("someone/absent", timeout_s=2)
    assert not ready and line.startswith("auto-tagger someone/absent could not be fetched (")


def scene(size: tuple[int, int], centre: tuple[int, int], radius: int = 50, seed: int = 0) -> Image.Image:
    """A dark, striped disc on a plain, lightly speckled background."""
    image = Image.new("RGB", size, (215, 215, 210))
    draw = ImageDraw.Draw(image)
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(20, 20, 30))
    for k in range(-radius, radius, 12):
        draw.line((x + k, y - radius, x + k + 6, y + radius), fill=(240, 40, 40), width=4)
    rng = random.Random(seed)
    pixels = image.load()
    for _ in range(size[0] * size[1] // 100):
        i, j = rng.randrange(size[0]), rng.randrange(size[1])
        pixels[i, j] = tuple(c - 8 for c in pixels[i, j])
    return image


def contains(box: dict[str, int], centre: tuple[int, int], radius: int = 50) -> bool:
    x, y = centre
    return (box["x"] <= x - radius and x + radius <= box["x"] + box["width"]
            and box["y"] <= y - radius and y + radius <= box["y"] + box["height"])


@pytest.mark.parametrize(("size", "centre", "aspect"), [
    ((600, 400), (80, 200), (1, 1)), ((600, 400), (525, 120), (1, 1)), ((400, 640), (200, 65), (1, 1)),
    ((400, 640), (150, 580), (1, 1)), ((800, 400), (720, 300), (3, 4)), ((900, 300), (850, 150), (1, 1)),
])
def test_focus_crop_keeps_an_off_centre_subject_that_a_centre_crop_cuts(size, centre, aspect):
    image = scene(size, centre, seed=sum(centre))
    assert not contains(center_box(*size, *aspect), centre)
    focus = focus_box(image, *aspect)
    assert focus.method == "saliency" and contains(focus.box, centre)
    assert focus.box["width"] * aspect[1] == pytest.approx(focus.box["height"] * aspect[0], abs=aspect[0] + 1)
    assert max(focus.box["width"], focus.box["height"]) == min(size) if aspect == (1, 1) else True


def test_focus_crop_of_a_plain_picture_falls_back_to_the_centre():
    plain = Image.new("RGB", (600, 400), (120, 130, 140))
    assert faces(plain) == []
    focus = focus_box(plain, 1, 1)
    assert focus.method == "center" and focus.box == center_box(600, 400, 1, 1)
