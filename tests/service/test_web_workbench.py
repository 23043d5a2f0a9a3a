"""The web workbench in real Chromium (Debian's, driven by Playwright) against `make run`'s embedded stack."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.service.conftest import ROOT, EmbeddedStack, png_bytes
from tests.service.test_dataset_tasks import png, solid
from tests.service.test_dataset_transfer import zip_of
from tests.service.test_notifications import Receiver
from tests.test_dataset_tools import scene
from tests.tiny_tagger import make_tiny_tagger

SCREENSHOTS = ROOT / "tests" / "_artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(params=["false"])
def browser_page(request, tmp_path, tiny_sd15, tiny_flux, tiny_zimage):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack(tmp_path, tiny_sd15, tiny_flux, tiny_zimage, LORABAKE_TAG_ON_UPLOAD=request.param)
    make_tiny_tagger(stack.var / "taggers" / "tiny-wd14")
    with stack, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        # notifications allowed, and each one the pages show recorded in window.__notes
        context.grant_permissions(["notifications"])
        context.add_init_script("""(() => { if (!window.Notification) return; window.__notes = [];
          window.Notification = class extends window.Notification {
            constructor(title, options) { super(title, options); window.__notes.push(title); } }; })()""")
        page = context.new_page()
        errors: list[str] = []
        missing: list[str] = []  # the workbench's own files (the icon included) must all be there
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 and "/api/" not in r.url else None)
        yield page, stack
        browser.close()
        assert errors == [], f"JavaScript errors on the pages: {errors}"
        assert missing == [], f"files the pages asked for and did not get: {missing}"


@contextmanager
def chromium_pages(stack: EmbeddedStack):  # noqa: ANN201 - yields page(width, height, dark) → a new page
    """Debian's Chromium against the stack: each call opens a page in its own context (its own sign-in) at a size
    and colour scheme; no page may raise a JavaScript error."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        errors: list[str] = []

        def page(width: int = 1280, height: int = 800, dark: bool = False):  # noqa: ANN202
            context = browser.new_context(base_url=stack.url, viewport={"width": width, "height": height},
                                          color_scheme="dark" if dark else "light")
            context.set_default_timeout(30_000)
            opened = context.new_page()
            opened.on("pageerror", lambda exc: errors.append(str(exc)))
            return opened

        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the pages: {errors}"


TOO_WIDE = ("[...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > 392).slice(0, 5)"
            ".map(e => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`)")


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_up(page, email: str) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("a long enough password")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible()


def import_zip(page, name: str, archive: bytes) -> None:
    """Imports a kohya zip from the datasets page (its report is left on the page)."""
    page.get_by_label("Zip file").set_input_files({"name": name, "mimeType": "application/zip", "buffer": archive})
    page.get_by_role("button", name="Import").click()


def test_sign_up_upload_tag_train_test_and_publish_in_the_browser(browser_page):
    from playwright.sync_api import expect

    page, stack = browser_page
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to lorabake")).to_be_visible()
    page.get_by_label("Email").fill("painter@example.com")
    page.get_by_label("Password").fill("a long enough password")
    shot(page, "01-sign-in")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible()

    # Notifications: in this browser (opt-in), and a webhook whose errors stand next to its field
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_text(re.compile(r"Your jobs: 0 of 2 training at once, 0 of 20 waiting"))).to_be_visible()
    page.get_by_label("Notify me in this browser when a job ends").check()
    expect(page.get_by_text("On: you are told here while a lorabake tab is open.")).to_be_visible()
    hook_form = page.get_by_role("form", name="Webhook")
    hook_form.get_by_label("Webhook URL").fill("ftp://example.com/hook")
    hook_form.get_by_role("button", name="Save webhook").click()
    expect(hook_form.locator(".field .field-error")).to_contain_text("must be an http:// or https:// address")
    with Receiver() as receiver:
        hook_form.get_by_label("Webhook URL").fill(receiver.url)
        hook_form.get_by_role("button", name="Save webhook").click()
        expect(hook_form.get_by_text("Saved: finished and failed jobs are posted there.")).to_be_visible()
        expect(hook_form.locator(".field-error")).to_have_count(0)
        hook_form.get_by_role("button", name="Send a test").click()
        expect(hook_form.get_by_text("Delivered: the receiver answered HTTP 204")).to_be_visible()
    shot(page, "01b-settings")
    page.get_by_role("link", name="Datasets").click()

    page.get_by_label("New dataset name").fill("circles")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_role("heading", name="circles")).to_be_visible()
    expect(page).to_have_title("circles · lorabake")
    dataset_url = page.url
    shot(page, "02-datasets-new")

    files = [{"name": f"circle{i}.png", "mimeType": "image/png", "buffer": png_bytes(seed=i)} for i in range(8)]
    files.insert(3, {"name": "notes.png", "mimeType": "image/png", "buffer": b"plain text, not a picture"})
    page.locator("#picker").set_input_files(files)
    expect(page.get_by_role("status").filter(has_text="8 of 9 added")).to_be_visible()
    expect(page.get_by_role("list", name="Uploaded files").get_by_text(re.compile("notes.png: .*not a PNG or JPEG"))
           ).to_be_visible()
    expect(page.get_by_role("listbox", name="Images").get_by_role("option")).to_have_count(8)
    expect(page.get_by_role("list", name="Uploaded files").get_by_role("listitem")).to_have_count(1)  # what failed
    shot(page, "03-workbench-uploaded")

    # only the families of the server's base models can be cropped for, the first base model's first
    expect(page.get_by_label("Base family").locator("option")).to_have_text(["SD 1.5", "FLUX.1", "Z-Image"])
    expect(page.get_by_label("Base family")).to_have_value("sd15")
    tools = page.get_by_role("tablist", name="Dataset tools")
    tools.get_by_role("tab", name="Batch tags").click()
    page.get_by_label("Tags (comma-separated)").fill("sks")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("8 of 8 images changed")).to_be_visible()
    tag_list = page.locator(".freq")
    expect(tag_list.get_by_role("button", name=re.compile(r"sks\s*8"))).to_be_visible()
    page.get_by_label("Base family").select_option(label="SD 1.5")
    page.get_by_role("button", name="Center crop").click()
    expect(page.locator(".tile .crop")).to_have_count(8)
    expect(page.get_by_text("Center crop 512x512: 8 image(s) boxed")).to_be_visible()
    shot(page, "04-workbench-tagged")

    # Typed tags are kept when another image is picked; the keyboard moves between tiles and keeps its place
    tiles = page.get_by_role("listbox", name="Images").get_by_role("option")
    tiles.nth(0).click()
    editor = page.get_by_role("region", name="Selected image")
    editor.get_by_label("Add tags").fill("smile")
    tiles.nth(1).click()
    expect(editor.get_by_role("heading")).to_have_text(re.compile("circle1"))
    tiles.nth(0).click()
    expect(editor.get_by_role("button", name="remove tag smile")).to_be_visible()
    tiles.nth(0).focus()
    page.keyboard.press("ArrowRight")
    expect(tiles.nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    expect(tiles.nth(1)).to_be_focused()
    expect(tiles.nth(1)).to_have_attribute("aria-selected", "true")

    # Edits are saved as they are made: a chip, and a half-typed tag, survive following a menu link
    tiles.nth(5).click()
    editor.get_by_label("Add tags").fill("blue")
    editor.get_by_label("Add tags").press("Enter")
    editor.get_by_label("Add tags").fill("hal")
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="circles")).to_be_visible()
    tiles.nth(5).click()
    expect(editor.get_by_role("button", name="remove tag blue")).to_be_visible()
    expect(editor.get_by_role("button", name="remove tag hal")).to_be_visible()
    editor.get_by_role("button", name="remove tag hal").click()
    expect(editor.get_by_role("status")).to_have_text("Saved.")
    page.reload()
    tiles.nth(5).click()
    expect(editor.get_by_role("button", name="remove tag blue")).to_be_visible()
    expect(editor.get_by_role("button", name="remove tag hal")).to_have_count(0)

    # Images smaller than the family's training size are marked; repeats are set on a selection; sorting
    page.get_by_label("Base family").select_option(label="SD 1.5")
    expect(page.get_by_text(re.compile(r"8 smaller than 512 px \(the SD 1.5 training size\)"))).to_be_visible()
    expect(tiles.nth(0).locator(".badge")).to_have_text("small")
    tiles.nth(3).click()
    editor.get_by_label("Add tags").fill("red, round")
    editor.get_by_label("Add tags").press("Enter")
    page.get_by_role("button", name="Select all").click()  # saves the open edits first
    selection = page.get_by_role("region", name="Selection")
    selection.get_by_label("Repeats for the selection").fill("3")
    selection.get_by_role("button", name="Set repeats").click()
    page.get_by_role("button", name="Select none").click()
    tiles.nth(2).click()
    expect(editor.get_by_label("Repeats")).to_have_value("3")
    page.get_by_role("button", name="Select all").click()
    selection.get_by_label("Repeats for the selection").fill("")
    selection.get_by_role("button", name="Set repeats").click()  # back to the dataset's default
    page.get_by_role("button", name="Select none").click()
    selection.get_by_label("Sort by").select_option("tags")
    expect(tiles.nth(0)).to_contain_text("circle3")  # three tags: sks, red, round
    selection.get_by_label("Sort by").select_option("upload")

    page.get_by_role("link", name=re.compile("Train a LoRA")).click()
    expect(page.get_by_role("heading", name="Train on circles")).to_be_visible()
    page.get_by_label("LoRA name").fill("circles")
    expect(page.get_by_label("Base model")).to_have_value("tiny-sd15")  # the family the crops were made for
    expect(page.get_by_role("radio", name="2.5D")).to_be_visible()  # the theme's name, not "2 5d"
    page.get_by_role("radio", name="standard").check()
    estimate = page.get_by_role("status").filter(has_text="images × repeats")
    page.get_by_label("Repeats per image").fill("20")
    expect(estimate).to_contain_text("8 images × repeats = 160 samples per epoch")
    page.get_by_label("Repeats per image").fill("1")
    expect(estimate).to_contain_text("8 images × repeats = 8 samples per epoch")
    expect(page.get_by_role("button", name=re.compile(r"Start tonight \(off-peak, .*\d:\d\d"))).to_be_visible()
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Preview prompt").fill("sks, red circle --s 4 --d 1")
    expect(page.get_by_role("status").filter(has_text=re.compile(r"\d+ steps .* 2 epochs"))).to_be_visible()
    # what is typed survives leaving the page and a reload
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.go_back()
    page.reload()
    expect(page.get_by_label("Preview prompt")).to_have_value("sks, red circle --s 4 --d 1")
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("2")
    expect(page.get_by_label("Repeats per image")).to_have_value("1")
    expect(page.get_by_role("radio", name="standard")).to_be_checked()
    expect(page.get_by_role("status").filter(has_text=re.compile(r"\d+ steps .* 2 epochs"))).to_be_visible()
    shot(page, "05-train-form")
    # switching to pro with nothing changed counts the same steps (the model's own settings and the epochs carry over)
    counted = estimate.inner_text()
    with page.expect_response("**/jobs/estimate"):
        page.get_by_role("radio", name="Pro").check()
    expect(estimate).to_have_text(counted)
    with page.expect_response("**/jobs/estimate"):
        page.get_by_role("radio", name="Basic").check()
    expect(estimate).to_have_text(counted)
    # A FLUX base model: pro mode shows the flow-matching settings from its preset and hides SD-only ones
    page.get_by_label("Base model").select_option("tiny-flux")
    page.get_by_role("radio", name="Pro").check()
    expect(page.get_by_label("timestep_sampling")).to_have_value("flux_shift")
    expect(page.get_by_label("guidance_scale")).to_have_value("1")
    expect(page.get_by_label("clip_skip")).to_be_hidden()
    expect(page.get_by_role("group", name="Flow matching")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text=re.compile(r"\d+ steps"))).to_be_visible()
    expect(page.get_by_text("base_model: this dataset's crops were made for SD 1.5, but this base model is FLUX.1"
                            )).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("")
    shot(page, "05b-train-form-flux")
    # A Z-Image base model: its own shift, no FLUX guidance, the memory options of a large DiT
    page.get_by_label("Base model").select_option("tiny-zimage")
    page.get_by_role("radio", name="Pro").check()
    expect(page.get_by_label("timestep_sampling")).to_have_value("shift")
    expect(page.get_by_label("discrete_flow_shift")).to_have_value("3")
    expect(page.get_by_label("guidance_scale")).to_be_hidden()
    expect(page.get_by_label("fp8_base", exact=True)).to_be_visible()
    expect(page.get_by_text("base_model: this dataset's crops were made for SD 1.5, but this base model is Z-Image"
                            )).to_be_visible()
    shot(page, "05c-train-form-zimage")
    page.get_by_label("Base model").select_option("tiny-sd15")
    expect(page.get_by_label("clip_skip")).to_be_visible()
    expect(page.get_by_role("group", name="Flow matching")).to_be_hidden()
    # The network type is a plain choice that writes network_module and network_args as sd-scripts users write them
    expect(page.get_by_label("Network type")).to_have_value("lora")
    page.get_by_label("Network type").select_option("loha")
    expect(page.get_by_label("network_module", exact=True)).to_have_value("lycoris.kohya")
    expect(page.get_by_label("network_args", exact=True)).to_have_value("algo=loha")
    page.get_by_label("Network type").select_option("dora")
    expect(page.get_by_label("network_args", exact=True)).to_have_value("algo=locon, dora_wd=True")
    expect(page.get_by_label("How tools apply it")).to_contain_text("ComfyUI and Forge divide by ‖W‖")
    expect(page.get_by_role("alert")).to_have_text("")
    page.get_by_label("network_args", exact=True).fill("algo=ia3")
    expect(page.locator(".field-error").filter(has_text="algo=ia3 is not offered")).to_be_visible()
    shot(page, "05c-train-form-network-type")
    page.get_by_label("Network type").select_option("lora")
    expect(page.get_by_label("network_module", exact=True)).to_have_value("networks.lora")
    expect(page.get_by_label("How tools apply it")).to_have_text("")
    page.get_by_role("radio", name="Basic").check()
    page.get_by_role("button", name="Start now").click()

    page.wait_for_url(re.compile(r"#/jobs/\w+$"))
    expect(page.get_by_role("heading", name="circles")).to_be_visible()
    job_url = page.url
    progress = page.get_by_role("progressbar", name="Training progress")
    expect(progress).to_have_attribute("value", "1", timeout=240_000)
    expect(page.get_by_role("status").filter(has_text="succeeded")).to_be_visible(timeout=60_000)
    page.wait_for_function("() => window.__notes.includes('circles is trained')", timeout=20_000)
    cards = page.get_by_role("region", name=re.compile(r"Epoch \d"))
    expect(cards).to_have_count(2)
    for n in (1, 2):
        expect(page.get_by_role("region", name=f"Epoch {n}").get_by_role("img")).to_have_count(4)
    expect(page.locator("svg.chart polyline")).to_have_count(3)  # loss raw + smoothed, learning rate
    loss_chart = page.get_by_role("img", name=re.compile(r"^loss: \d+ points"))
    loss_chart.hover()
    expect(loss_chart.locator("text.readout")).to_contain_text(re.compile(r"step \d+: .*\(smoothed "))
    shot(page, "06-job-finished")

    test_form = page.get_by_role("form", name="Test an epoch")
    test_form.get_by_label("LoRA weight").fill("0.6")
    expect(test_form.get_by_label(re.compile("Prompt"))).to_have_value(re.compile("<lora:circles:0.6>"))
    test_form.get_by_role("button", name="Generate").click()
    expect(test_form.get_by_role("img", name=re.compile("test image of epoch 2"))).to_be_visible(timeout=120_000)
    shot(page, "07-test-generation")

    # Epochs × weights in one grid, with progress; any cell opens full size; the labelled PNG downloads
    sweep_form = page.get_by_role("form", name="Compare epochs and weights")
    expect(sweep_form.get_by_role("checkbox", name="epoch 1")).to_be_checked()
    expect(sweep_form.get_by_role("checkbox", name="epoch 2")).to_be_checked()
    expect(sweep_form.get_by_role("status")).to_have_text("")
    sweep_form.get_by_label("Weights (comma-separated)").fill("0.5, 1")
    sweep_form.get_by_role("button", name="Render grid").click()
    grid = sweep_form.get_by_role("table", name="Epoch × weight grid")
    expect(grid.get_by_role("button", name=re.compile(r"epoch \d, "))).to_have_count(6, timeout=120_000)
    expect(sweep_form.get_by_role("status")).to_contain_text("seed 0: 5 images")
    grid.get_by_role("button", name="epoch 2, weight 1").click()
    zoom = page.get_by_role("dialog", name="Zoomed image")
    expect(zoom).to_be_visible()
    expect(zoom).to_contain_text("epoch 2, weight 1")
    shot(page, "07b-sweep-zoom")
    page.keyboard.press("Escape")
    expect(zoom).to_be_hidden()
    download_grid = sweep_form.get_by_role("link", name=re.compile("Download the grid"))
    grid_png = page.request.get(download_grid.get_attribute("href"))
    assert grid_png.status == 200 and grid_png.body()[:4] == b"\x89PNG"
    side = page.get_by_role("region", name="Two epochs side by side")
    expect(side.get_by_role("heading", name="Epoch 1")).to_be_visible()
    expect(side.get_by_role("heading", name="Epoch 2")).to_be_visible()
    shot(page, "07c-sweep-and-compare")

    # Continue for one more epoch with a restarted schedule: the page follows the new attempt to epoch 3
    page.get_by_role("link", name="Continue training…").click()
    go_on = page.get_by_role("form", name="Continue training")
    go_on.get_by_label("More epochs").fill("1")
    go_on.get_by_role("radio", name=re.compile("Restart the schedule")).check()
    expect(go_on).to_contain_text("runs again over the added epochs only")
    shot(page, "07d-continue")
    go_on.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("region", name="Epoch 3")).to_be_visible(timeout=240_000)
    expect(page.get_by_role("status").filter(has_text="succeeded")).to_be_visible(timeout=60_000)

    page.get_by_role("region", name="Epoch 2").get_by_role("link", name="Publish").click()
    expect(page.get_by_label("Trigger words")).to_have_value("sks")  # the tag on every image of the dataset
    page.get_by_label("Visibility").select_option("public")
    shot(page, "08-publish")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("code.snippet")).to_have_text("<lora:circles:0.8>")
    download = page.get_by_role("link", name="Download circles.safetensors")
    response = page.request.get(download.get_attribute("href"))
    assert response.status == 200 and response.body()[8:9] == b"{"  # safetensors: header length, then JSON
    shot(page, "09-model-page")

    model_url = page.url
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("SD 1.5: tiny-sd15")
    expect(facts).to_contain_text("LoRA")
    expect(facts).to_contain_text(re.compile(r"\d+\.\d+ MB"))
    # a picture for its page: one of its previews becomes the cover, and the model enters the gallery
    pictures = page.get_by_role("region", name="Pictures")
    pictures.get_by_role("button", name="Add").first.click()
    expect(page.get_by_role("img", name="circles cover")).to_be_visible()
    expect(page.get_by_label("Showcase").get_by_text("cover")).to_be_visible()
    shot(page, "09b-model-page-with-cover")
    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("link", name="circles")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("circles"))).to_contain_text("in the gallery")
    shot(page, "10-models-list")

    # A visitor with the link: the public model, no menu (nor "Sign out"), no stray "false" under the previews
    visitor = page.context.browser.new_context(base_url=stack.url)
    stranger = visitor.new_page()
    stranger.goto(model_url)
    expect(stranger.get_by_role("heading", name="circles")).to_be_visible()
    expect(stranger.get_by_text("by painter")).to_be_visible()
    expect(stranger.get_by_role("navigation", name="Main")).to_be_hidden()
    expect(stranger.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(stranger.get_by_role("link", name="Sign in or create an account")).to_be_visible()
    assert "false" not in stranger.locator("main").inner_text()
    expect(stranger.get_by_role("form", name="Manage this model")).to_have_count(0)
    expect(stranger.get_by_role("link", name="Sign in", exact=True)).to_be_visible()  # to download or test it
    shot(stranger, "10b-model-page-visitor")
    stranger.get_by_role("link", name="Gallery").click()  # and browses the gallery, where the model has its cover
    card = stranger.get_by_role("listitem").get_by_role("link", name="circles")
    expect(card).to_contain_text("SD 1.5 · by painter")
    shot(stranger, "10c-gallery-visitor")
    card.click()
    expect(stranger.get_by_role("img", name="circles cover")).to_be_visible()
    visitor.close()

    # A phone (390 px) in dark mode: every view fits the screen's width and follows the system's colour scheme
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    views = [("#/datasets", "Datasets"), (dataset_url, "circles"), (f"{dataset_url}/train", "Train on circles"),
             ("#/jobs", "Jobs"), (job_url, "circles"), ("#/models", "Your models"), ("#/gallery", "Gallery"),
             (model_url, "circles"),
             ("#/settings", "Settings")]
    for n, (url, heading) in enumerate(views):
        page.goto(url if url.startswith("http") else f"/{url}")
        expect(page.get_by_role("heading", name=heading, exact=True).first).to_be_visible()
        expect(page).to_have_title(f"{heading} · lorabake")
        page.wait_for_timeout(300)  # images and charts laid out
        shot(page, f"11-phone-dark-{n}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{url} is {width} px wide at 390 px: {page.evaluate(TOO_WIDE)}"
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert sum(int(c) for c in background[4:-1].split(",")) < 3 * 64, background  # a dark page
    # Tagging on the phone: a tap opens the editor as a sheet over the screen's bottom; the grid does not move
    page.goto(dataset_url)
    expect(page).to_have_title("circles · lorabake")
    phone_tiles = page.get_by_role("listbox", name="Images").get_by_role("option")
    phone_tiles.nth(1).click()
    sheet = page.get_by_role("region", name="Selected image")
    expect(sheet).to_be_in_viewport()
    expect(sheet.locator("img.editor-thumb")).to_be_visible()
    expect(phone_tiles.nth(1)).to_be_in_viewport()  # the page did not jump away to an editor below the grid
    phone_tiles.nth(0).evaluate("tile => tile.scrollIntoView({ block: 'start' })")  # the row above the sheet
    top = phone_tiles.nth(1).evaluate("tile => tile.getBoundingClientRect().top")
    phone_tiles.nth(0).click(position={"x": 10, "y": 10})  # the next image, in the same row
    expect(sheet.get_by_role("heading")).to_have_text("circle0.png")
    assert phone_tiles.nth(1).evaluate("tile => tile.getBoundingClientRect().top") == top  # nothing moved
    shot(page, "11-phone-dark-tagging")
    sheet.get_by_role("button", name="Done").click()
    expect(sheet).to_have_count(0)

    # A job for tonight: it says when it starts, has nothing to test yet, shows its parameters, asks before it is
    # canceled, and the queue page follows it without a reload
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{dataset_url}/train")
    page.get_by_label("LoRA name").fill("circles_tonight")
    page.get_by_role("button", name=re.compile("Start tonight")).click()
    page.wait_for_url(re.compile(r"#/jobs/\w+$"))
    tonight_url = page.url
    scheduled = re.compile(r"^scheduled .* starts .*\(off-peak\)")
    expect(page.get_by_role("status").filter(has_text=scheduled)).to_be_visible()
    expect(page.get_by_text("Charts and the log appear when training starts.")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile(r"^loss"))).to_be_hidden()  # no empty chart boxes
    test_form = page.get_by_role("form", name="Test an epoch")
    expect(test_form.get_by_role("button", name="Generate")).to_be_disabled()
    expect(test_form.get_by_text(re.compile("Nothing to test yet"))).to_be_visible()
    page.get_by_text(re.compile(r"Parameters \(\d+ set\)")).click()
    expect(page.get_by_role("table", name="Parameters")).to_contain_text("network_dim")
    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Cancel").click()
    assert dialogs and "circles_tonight" in dialogs[0]
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()  # dismissed: nothing happened
    shot(page, "12-job-scheduled")
    page.goto("/#/jobs")
    row = page.get_by_role("row", name=re.compile("circles_tonight"))
    expect(row).to_contain_text("off-peak")
    job_id = tonight_url.rsplit("/", 1)[1]
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "lorabake_csrf")
    assert page.request.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf}).ok
    expect(row).to_contain_text("canceled", timeout=15_000)  # the list refreshed itself

    # Owners rename and unpublish models, delete finished jobs, rename datasets (a dataset with jobs stays)
    page.once("dialog", lambda dialog: dialog.accept())
    page.goto(tonight_url)
    page.get_by_role("button", name="Delete job").click()
    page.wait_for_url(re.compile(r"#/jobs$"))
    expect(page.get_by_role("row", name=re.compile("circles_tonight"))).to_have_count(0)
    page.goto(model_url)
    manage = page.get_by_role("form", name="Manage this model")
    manage.get_by_label("Name").fill("circles_v2")
    manage.get_by_label("Description").fill("Flat **red** circles. <script>alert(1)</script>")
    manage.get_by_label("Trigger words (comma-separated)").fill("sks, red circle")
    manage.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="circles_v2")).to_be_visible()
    description = page.locator(".description")
    expect(description.locator("strong")).to_have_text("red")  # Markdown, shown
    expect(description).to_contain_text("<script>alert(1)</script>")  # raw HTML, shown as text
    expect(page.locator("dl.facts")).to_contain_text("sks, red circle")
    # a job with a published model says so next to its Delete button, with a link to the model (no alert box)
    page.goto(job_url)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete job").click()
    stays = page.get_by_role("alert", name="Why the job stays")
    expect(stays).to_contain_text("unpublish it on its page first")
    expect(stays).to_be_in_viewport()
    stays.get_by_role("link", name="circles_v2").click()
    expect(page.get_by_role("heading", name="circles_v2")).to_be_visible()
    expect(page.locator("code.snippet")).to_have_text("<lora:circles_v2:0.8>")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("form", name="Manage this model").get_by_role("button", name="Unpublish").click()
    expect(page.get_by_text("Nothing published yet")).to_be_visible()
    page.goto(dataset_url)
    page.get_by_label("Rename").fill("circles set")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("heading", name="circles set")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete dataset").click()
    stays = page.get_by_role("alert", name="Why the dataset stays")
    expect(stays).to_contain_text("delete those jobs first")
    expect(stays).to_be_in_viewport()  # next to the button, not far below
    expect(stays.get_by_role("link", name="circles", exact=True)).to_have_attribute("href", re.compile(r"#/jobs/\w+"))
    shot(page, "13-dataset-delete-blocked")


@pytest.mark.parametrize("browser_page", ["true"], indirect=True)
def test_import_autotag_focus_crop_duplicates_export_and_config_import_in_the_browser(browser_page):
    import io
    import zipfile

    from playwright.sync_api import expect

    page, stack = browser_page
    sign_up(page, "tools@example.com")

    subject = png(scene((600, 400), (80, 200)))
    archive = zip_of({"5_mychar/red.png": solid((220, 30, 30)), "5_mychar/red.txt": b"mychar",
                      "5_mychar/red-copy.png": solid((220, 30, 30)), "5_mychar/subject.png": subject,
                      "5_mychar/broken.png": b"not an image"})
    import_zip(page, "mychar.zip", archive)
    expect(page.get_by_text("3 images imported into")).to_be_visible()
    expect(page.get_by_text(re.compile(r"5_mychar/broken.png: rejected \(not a PNG or JPEG"))).to_be_visible()
    shot(page, "11-dataset-imported")
    page.get_by_role("link", name="mychar", exact=True).click()
    expect(page.get_by_role("listbox", name="Images").get_by_role("option")).to_have_count(3)

    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Auto-tag").click()
    page.get_by_role("button", name="Auto-tag").click()
    expect(page.get_by_text(re.compile("done: .*tagged 3"))).to_be_visible(timeout=60_000)
    expect(page.locator(".freq").get_by_role("button", name=re.compile(r"red theme\s*2"))).to_be_visible()
    page.get_by_role("button", name="Focus crop").click()
    expect(page.get_by_text(re.compile("done: .*saliency 1"))).to_be_visible(timeout=60_000)
    expect(page.locator(".tile .crop")).to_have_count(3)
    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Near-duplicates").click()
    page.get_by_role("button", name="Find near-duplicates").click()
    expect(page.get_by_text("red.png ≈ red-copy.png")).to_be_visible()
    # Masks for masked loss: the subject's from a task (plain red has none), one removed and one sent by hand
    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Masks").click()
    page.get_by_role("button", name="Make masks").click()
    expect(page.get_by_text(re.compile("mask: done: .*masked 1"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile("mask: done: .*nothing found 2"))).to_be_visible()
    expect(page.locator(".tile img.mask")).to_have_count(1)
    page.get_by_role("option", name=re.compile("subject.png")).click()
    page.get_by_role("button", name="Remove mask").click()
    expect(page.locator(".tile img.mask")).to_have_count(0)
    page.get_by_label("Mask file").set_input_files({"name": "m.png", "mimeType": "image/png",
                                                     "buffer": solid((255, 255, 255), (300, 200))})
    expect(page.get_by_role("button", name="Remove mask")).to_be_visible()
    expect(page.locator(".tile img.mask")).to_have_count(1)
    page.get_by_label("Mask file").set_input_files({"name": "m.png", "mimeType": "image/png",
                                                     "buffer": solid((255, 255, 255), (300, 300))})
    expect(page.get_by_text(re.compile("subject.png: .*a mask must have its image's shape"))).to_be_visible()
    shot(page, "12a-workbench-masks")
    # An uploaded image is tagged as it arrives, with the task's progress on the page
    page.get_by_role("tablist", name="Dataset tools").get_by_role("tab", name="Auto-tag").click()
    expect(page.get_by_text("New images are tagged as they arrive")).to_be_visible()
    page.locator("#picker").set_input_files([{"name": "blue.png", "mimeType": "image/png",
                                              "buffer": solid((30, 30, 220))}])
    expect(page.get_by_role("status", name="Tasks on this dataset")).to_contain_text(
        re.compile("tagging new images: done: .*tagged 1"), timeout=60_000)
    expect(page.locator(".freq").get_by_role("button", name=re.compile(r"blue theme\s*1"))).to_be_visible()
    shot(page, "12-workbench-tools")

    exported = page.request.get(page.get_by_role("link", name="Export kohya zip").get_attribute("href"))
    names = zipfile.ZipFile(io.BytesIO(exported.body())).namelist()
    assert exported.status == 200 and "5_mychar/subject.png" in names and "tag_occurrence.txt" in names
    assert "conditioning/5_mychar/subject.png" in names

    page.get_by_role("link", name=re.compile("Train a LoRA")).click()
    page.get_by_text("Import parameters from sd-scripts").click()
    page.get_by_label("Config file (.toml or .json)").set_input_files({
        "name": "config.toml", "mimeType": "application/toml",
        "buffer": b"[additional_network_arguments]\nnetwork_dim = 8\nnetwork_alpha = 2\noutput_dir = '/out'\n"})
    page.get_by_role("button", name="Read parameters").click()
    expect(page.get_by_text("2 parameters read from a sd-scripts file")).to_be_visible()
    expect(page.get_by_text("ignored: output_dir")).to_be_visible()
    expect(page.get_by_label("network_dim", exact=True)).to_have_value("8")
    shot(page, "13-config-imported")


def test_a_thousand_image_dataset_keeps_few_tiles_in_the_page_and_the_keyboard_reaches_every_one(browser_page):
    from playwright.sync_api import expect

    page, stack = browser_page
    sign_up(page, "big@example.com")
    import_zip(page, "big.zip", zip_of({f"2_big/img{i:04d}.png": png_bytes((64, 64), seed=i) for i in range(1000)}))
    expect(page.get_by_text("1000 images imported into")).to_be_visible(timeout=120_000)
    page.get_by_role("link", name="big", exact=True).click()
    expect(page.get_by_text(re.compile(r"^1000 images, 0 selected"))).to_be_visible()

    grid = page.get_by_role("listbox", name="Images")
    tiles = grid.get_by_role("option")
    expect(tiles.first).to_be_visible()  # the rows are drawn on the next animation frame
    assert 0 < tiles.count() < 150, tiles.count()  # only the rows near the viewport are in the page
    assert grid.bounding_box()["height"] > 20_000  # yet the page scrolls over all 1000
    tiles.first.focus()
    page.keyboard.press("End")
    last = grid.get_by_role("option", name=re.compile("img0999.png"))
    expect(last).to_be_focused()
    expect(last).to_be_in_viewport()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Space")
    above = grid.locator("[aria-selected=true]")
    expect(above).to_have_count(1)
    expect(above).to_be_focused()
    assert tiles.count() < 150
    shot(page, "16-workbench-1000-end")

    page.keyboard.press("Home")
    expect(grid.get_by_role("option", name=re.compile("img0000.png"))).to_be_in_viewport()
    page.get_by_role("button", name="Select all").click()
    expect(page.get_by_text(re.compile(r"^1000 images, 1000 selected"))).to_be_visible()
    page.get_by_role("button", name="Select none").click()
    page.get_by_role("region", name="Selection").get_by_label("Sort by").select_option("duplicates")
    expect(tiles.first.locator(".badge")).to_contain_text("≈ 1")
