"""Vision-language captioners on tiny random models of each architecture: the real load and generation path runs,
options reach the request, the trigger word lands where asked."""

from __future__ import annotations

import pytest
from PIL import Image

from core.captioners import CaptionerEntry, find_captioner, list_captioners
from core.settings import Settings
from tests.tiny_captioners import make_tiny_florence2, make_tiny_qwen_vl
from worker.captioning import CaptionerError, CaptionOptions, QwenVLCaptioner, load_captioner, place_trigger

MAKERS = {"florence2": make_tiny_florence2, "qwen2_5_vl": make_tiny_qwen_vl}


@pytest.fixture(scope="module")
def captioners(tmp_path_factory):
    root = tmp_path_factory.mktemp("var") / "captioners"
    for architecture, make in MAKERS.items():
        make(root / f"tiny-{architecture}")
    return root


def entry(root, architecture) -> CaptionerEntry:
    return CaptionerEntry(f"tiny-{architecture}", "folder", str(root / f"tiny-{architecture}"), True, architecture)


def test_the_server_lists_its_captioner_folders_by_architecture_and_its_hub_ids(captioners):
    settings = Settings(var_dir=captioners.parent, captioners_from_hub=["someone/not-fetched"])
    listed = {c.name: (c.source, c.installed, c.architecture) for c in list_captioners(settings)}
    assert listed == {"tiny-florence2": ("folder", True, "florence2"),
                      "tiny-qwen2_5_vl": ("folder", True, "qwen2_5_vl"), "someone/not-fetched": ("hub", False, None)}
    assert find_captioner(settings, None).name == "tiny-florence2"


@pytest.mark.parametrize("architecture", sorted(MAKERS))
@pytest.mark.parametrize("length", ["short", "detailed"])
def test_each_architecture_captions_every_image_with_the_trigger_word_first(captioners, architecture, length):
    labeler = load_captioner(entry(captioners, architecture), CaptionOptions(length=length, trigger="sks"))
    pictures = [Image.new("RGB", (96, 64), (200, 30, 30)), Image.new("RGBA", (50, 80), (20, 30, 200, 128))]
    labels = labeler.label(pictures, [["red theme"], []])
    assert len(labels) == 2 and all(label.tags == [] for label in labels)
    assert all(label.caption.startswith("sks, ") and len(label.caption) > len("sks, ") for label in labels)
    again = labeler.label(pictures[:1], [["red theme"]])
    assert again[0].caption == labels[0].caption  # greedy decoding: the same picture, the same caption


def test_qwen_vl_reads_the_length_the_instruction_and_the_tags_as_hints(captioners):
    labeler = load_captioner(entry(captioners, "qwen2_5_vl"),
                             CaptionOptions(length="short", instruction="Name the art style."))
    assert isinstance(labeler, QwenVLCaptioner)
    request = labeler.request(["red scarf", "smile"])
    assert request.startswith("Describe this image in one sentence. Name the art style.")
    assert request.endswith("(they may be wrong): red scarf, smile.")
    assert labeler.request([]) == "Describe this image in one sentence. Name the art style."


def test_the_trigger_word_goes_where_the_user_says_and_is_not_doubled():
    assert place_trigger("a woman in a park.", "sks", "start") == "sks, a woman in a park."
    assert place_trigger("a woman in a park.", "sks", "end") == "a woman in a park, sks"
    assert place_trigger("a photo of sks  in a park", "sks", "start") == "a photo of sks in a park"
    assert place_trigger("a woman", "sks", "none") == "a woman"


def test_a_folder_that_is_not_a_captioner_is_refused_by_name(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CaptionerError, match="odd: a bert model; captioners run florence2, qwen2_5_vl"):
        load_captioner(CaptionerEntry("odd", "folder", str(tmp_path / "odd"), True, "bert"), CaptionOptions())
