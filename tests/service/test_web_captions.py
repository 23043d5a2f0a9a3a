"""Captions in sentences in real Chromium: a Qwen-Image base model, the train page's advice for a tags-only
dataset and its GPU-memory estimate, captioning with the tiny captioner, a sentence edited by hand and kept, batch
caption edits, and the phone's editor in dark mode."""

from __future__ import annotations

import re

import pytest

from tests.service.conftest import EmbeddedStack
from tests.service.test_dataset_tasks import solid
from tests.service.test_web_workbench import TOO_WIDE, chromium_pages, shot, sign_up
from tests.tiny_captioners import make_tiny_qwen_vl


@pytest.fixture
def browser(tmp_path, tiny_sd15, tiny_qwen_image):
    stack = EmbeddedStack(tmp_path, tiny_sd15, tiny_qwen_image, LORABAKE_TAG_ON_UPLOAD="false",
                          LORABAKE_CAPTIONERS_FROM_HUB="[]")
    make_tiny_qwen_vl(stack.var / "captioners" / "tiny-qwen-vl")
    with stack, chromium_pages(stack) as page:
        yield page


def test_a_tags_only_dataset_is_captioned_edited_and_ready_for_qwen_image(browser):
    from playwright.sync_api import expect

    page = browser()
    sign_up(page, "prose@example.com")
    page.get_by_label("New dataset name").fill("squares")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_role("heading", name="squares")).to_be_visible()
    dataset_url = page.url
    colours = [(220, 30, 30), (40, 200, 40), (30, 30, 220)]
    page.locator("#picker").set_input_files([{"name": f"sq{i}.png", "mimeType": "image/png", "buffer": solid(c)}
                                             for i, c in enumerate(colours)])
    expect(page.get_by_role("status").filter(has_text="3 of 3 added")).to_be_visible()
    tools = page.get_by_role("tablist", name="Dataset tools")
    tools.get_by_role("tab", name="Batch tags").click()
    page.get_by_label("Tags (comma-separated)").fill("sks, square, simple background")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("3 of 3 images changed")).to_be_visible()

    # Qwen-Image on the train page: the advice for tags, and the GPU memory its settings need
    page.get_by_role("link", name="Train a LoRA on this dataset").click()
    page.get_by_label("Base model").select_option("tiny-qwen_image")
    expect(page.get_by_text("this dataset has tags only; Qwen-Image trains best on sentences: caption it",
                            exact=False)).to_be_visible()
    memory = page.get_by_label("GPU memory")
    expect(memory).to_contain_text(re.compile(r"GPU memory: about [\d.]+ GiB of GPU memory at its peak \(estimate"))
    page.get_by_role("radio", name="Pro").check()
    before = memory.text_content()
    page.get_by_label("base_weights").select_option("nf4")
    expect(memory).not_to_have_text(before)
    shot(page, "20-train-qwen-image-tags-only")

    # the captioner writes a sentence per image, the trigger word first
    page.goto(dataset_url)
    page.get_by_label("Base family").select_option(label="Qwen-Image")
    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Captions").click()
    captioning = page.get_by_role("region", name="Captioning")
    captioning.get_by_label("Captioner", exact=True).select_option("tiny-qwen-vl")
    captioning.get_by_label("Trigger word", exact=True).fill("sks")
    captioning.get_by_label("Give each image's tags to the captioner as hints").check()
    captioning.get_by_role("button", name="Caption").click()
    expect(captioning.get_by_text("caption: done: captioned 3")).to_be_visible(timeout=120_000)
    tiles = page.get_by_role("listbox", name="Images").get_by_role("option")
    expect(tiles.first.locator(".meta.muted")).to_contain_text("sks, ")  # Qwen-Image reads sentences: shown first
    shot(page, "21-workbench-captioned")

    # a sentence edited by hand: shown before the tags, its length counted, saved, kept through a reload
    tiles.first.click()
    editor = page.get_by_role("region", name="Selected image")
    caption = editor.get_by_label("Caption (a sentence)")
    expect(caption).to_have_value(re.compile(r"^sks, "))
    assert caption.bounding_box()["y"] < editor.get_by_label("Add tags").bounding_box()["y"]
    caption.fill("sks, a red square on a white table")
    expect(editor.get_by_label("Caption length")).to_have_text("8 words · 34 characters")
    expect(editor.get_by_text("Saved.")).to_be_visible()
    page.reload()
    tiles.first.click()
    expect(page.get_by_label("Caption (a sentence)")).to_have_value("sks, a red square on a white table")

    # batch edits across every caption (none selected): find and replace, then the trigger word put first
    page.get_by_role("button", name="Select none").click()
    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Captions").click()
    batch = page.get_by_role("region", name="Batch captions")
    batch.get_by_label("Find", exact=True).fill("white table")
    batch.get_by_label("Replace with", exact=True).fill("wooden floor")
    batch.get_by_role("button", name="Replace").click()
    expect(batch.get_by_text("1 of 3 images changed")).to_be_visible()
    batch.get_by_label("Trigger word", exact=True).fill("sks")
    batch.get_by_role("button", name="Insert at the start").click()
    expect(batch.get_by_text("0 of 3 images changed")).to_be_visible()  # every caption starts with it already
    tiles.first.click()
    expect(page.get_by_label("Caption (a sentence)")).to_have_value("sks, a red square on a wooden floor")

    page.get_by_role("link", name="Train a LoRA on this dataset").click()
    page.get_by_label("Base model").select_option("tiny-qwen_image")
    expect(page.get_by_label("GPU memory")).to_contain_text("GPU memory: about")
    expect(page.get_by_text("trains best on sentences", exact=False)).to_have_count(0)

    # a phone in dark mode: the editor is a sheet with the sentence first, nothing wider than the screen
    phone = browser(390, 844, dark=True)
    phone.goto("/")
    phone.get_by_label("Email").fill("prose@example.com")
    phone.get_by_label("Password").fill("a long enough password")
    phone.get_by_role("button", name="Sign in").click()
    expect(phone.get_by_role("heading", name="Datasets")).to_be_visible()
    phone.goto(dataset_url)
    phone.get_by_label("Base family").select_option(label="Qwen-Image")
    phone.get_by_role("listbox", name="Images").get_by_role("option").first.click()
    expect(phone.get_by_label("Caption (a sentence)")).to_be_visible()
    assert phone.evaluate(TOO_WIDE) == []
    shot(phone, "22-phone-dark-caption-editor")
