"""The public side in real Chromium: screening holds an upload, an admin decides in the console and the user sees
why; credits on the train and settings pages, moved by an admin; a phone in dark mode."""

from __future__ import annotations

import json
import re

import pytest

from tests.service.conftest import EmbeddedStack
from tests.service.test_dataset_tasks import solid
from tests.service.test_web_workbench import TOO_WIDE, chromium_pages, shot, sign_up
from tests.tiny_tagger import make_tiny_tagger


@pytest.fixture
def console(tmp_path, tiny_sd15):
    rules = [{"label": "red_theme", "above": 0.5, "action": "hold"}]
    stack = EmbeddedStack(tmp_path, tiny_sd15, LORABAKE_SCREEN_TAGGER="tiny-wd14",
                          LORABAKE_SCREEN_RULES=json.dumps(rules), LORABAKE_TAG_ON_UPLOAD="false",
                          LORABAKE_CREDIT_PRICE_DEFAULT="2560000", LORABAKE_MONTHLY_CREDITS="100")
    make_tiny_tagger(stack.var / "taggers" / "tiny-wd14")
    with stack, chromium_pages(stack) as page:
        yield page


def test_an_admin_decides_a_held_upload_and_moves_credits_while_the_user_sees_why(console):
    from playwright.sync_api import expect

    admin = console()
    sign_up(admin, "root@example.com")  # the install's first account: it gets the console
    user = console(390, 844, dark=True)
    sign_up(user, "user@example.com")
    user.get_by_label("New dataset name").fill("colours")
    user.get_by_role("button", name="Create dataset").click()
    user.locator("#picker").set_input_files([
        {"name": "red.png", "mimeType": "image/png", "buffer": solid((220, 30, 30))},
        {"name": "grey.png", "mimeType": "image/png", "buffer": solid((128, 128, 128))}])
    held = user.get_by_role("option", name=re.compile("red.png"))
    expect(held.get_by_text("held for review")).to_be_visible(timeout=60_000)  # screened by the cpu worker
    held.click()
    expect(user.get_by_role("note")).to_contain_text("held for review: it scored 1.00 for “red_theme”")
    shot(user, "20-user-held-upload-phone-dark")

    admin.get_by_role("link", name="Console").click()
    admin.get_by_role("tab", name="Moderation").click()
    item = admin.get_by_role("region", name="red.png")
    expect(item).to_contain_text("by user@example.com")
    shot(admin, "21-console-moderation")
    admin.get_by_label("Reason for the decision").fill("graphic violence")
    item.get_by_role("button", name="Violation").click()
    expect(admin.get_by_text("No image is held for review.")).to_be_visible()

    user.reload()
    removed = user.get_by_role("option", name=re.compile("red.png"))
    expect(removed.get_by_text("removed")).to_be_visible()
    removed.click()
    expect(user.get_by_role("note")).to_have_text("removed by a moderator: graphic violence")

    # the price before the job starts: 1 image × 10 credits an epoch here, from this month's grant of 100
    user.get_by_role("link", name=re.compile("Train a LoRA")).click()
    user.get_by_label("LoRA name").fill("grey")
    user.get_by_role("radio", name="standard").check()
    user.get_by_label("Epochs", exact=True).fill("3")
    expect(user.get_by_role("status").filter(has_text="Price:")).to_contain_text(
        re.compile(r"Price: \d+ credits \(\d+ an epoch\); you have 100"))
    assert user.evaluate("document.documentElement.scrollWidth") <= 390, user.evaluate(TOO_WIDE)

    admin.get_by_role("tab", name="Users").click()
    admin.get_by_role("button", name="user@example.com").click()
    account = admin.get_by_role("region", name="Account user@example.com")
    account.get_by_label("Reason").fill("welcome gift")
    account.get_by_label("Credits to add").fill("25")
    account.get_by_role("button", name="Change credits").click()
    expect(account).to_contain_text("125 credits")
    admin.get_by_role("tab", name="Audit log").click()
    expect(admin.get_by_role("row", name=re.compile("credits.top_up"))).to_contain_text("welcome gift")
    expect(admin.get_by_role("row", name=re.compile("screening.violation"))).to_contain_text("graphic violence")
    shot(admin, "22-console-audit")

    user.get_by_role("link", name="Settings").click()
    credits = user.get_by_role("region", name="Credits")
    expect(credits).to_contain_text("Balance: 125 credits to spend")
    expect(credits.get_by_role("row", name=re.compile("from the operators"))).to_contain_text("welcome gift")
    shot(user, "23-user-credits-phone-dark")
    assert user.evaluate("document.documentElement.scrollWidth") <= 390, user.evaluate(TOO_WIDE)
