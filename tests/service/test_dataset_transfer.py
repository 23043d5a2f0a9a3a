"""Datasets in and out in the kohya layout: hostile zips refused, export → import round trip, near-duplicates."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import png_bytes, register


@pytest.fixture
def client(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", max_image_pixels=1_000_000)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def alice(client):
    return register(client, "alice@example.com")


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def import_zip(client, headers, data: bytes, name: str = "imported"):
    return client.post("/api/v1/datasets/import", files={"file": ("set.zip", data, "application/zip")},
                       data={"name": name}, headers=headers)


def stored_files(tmp_path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "storage" in p.parts}


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("10_cat/a.png", png_bytes(seed=1))
        link = zipfile.ZipInfo("10_cat/b.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


HOSTILE = {
    "zip-slip": (lambda: zip_of({"10_cat/a.png": png_bytes(seed=1), "../../evil.png": png_bytes(seed=2)}),
                 "../../evil.png: path leaves the archive"),
    "absolute": (lambda: zip_of({"/tmp/evil.png": png_bytes(seed=2)}), "/tmp/evil.png: absolute path"),
    "symlink": (symlink_zip, "10_cat/b.png: symbolic link"),
    "bomb": (lambda: zip_of({"10_cat/a.png": b"\0" * (64 * 1024 * 1024)}), "10_cat/a.png: expands"),
    "10,000 entries": (lambda: zip_of({f"10_cat/{i}.txt": b"x" for i in range(10_000)}, zipfile.ZIP_STORED),
                       "archive has 10,000 entries"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_archives_are_refused_whole_with_the_reason_and_nothing_is_written(client, alice, tmp_path, kind):
    make, reason = HOSTILE[kind]
    before = stored_files(tmp_path)
    response = import_zip(client, alice, make())
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "nothing was imported" in detail["message"]
    assert any(reason in e["message"] for e in detail["errors"]), detail
    assert client.get("/api/v1/datasets", headers=alice).json() == []
    assert stored_files(tmp_path) == before
    assert not list(tmp_path.parent.rglob("evil.png"))


def test_not_a_zip_and_a_zip_without_images_are_refused_by_name(client, alice):
    junk = import_zip(client, alice, b"this is not a zip")
    assert junk.status_code == 422 and "not a readable zip" in junk.json()["detail"]["errors"][0]["message"]
    empty = import_zip(client, alice, zip_of({"readme.md": b"hello", "10_cat/a.txt": b"cat"}))
    assert empty.status_code == 422
    errors = {e["field"]: e["message"] for e in empty.json()["detail"]["errors"]}
    assert errors == {"readme.md": "skipped: not an image or caption",
                      "10_cat/a.txt": "skipped: caption without an image"}


def test_import_reads_repeats_captions_and_reg_and_reports_every_entry(client, alice):
    archive = zip_of({
        "img/10_alice/one.png": png_bytes(seed=1), "img/10_alice/one.txt": b"alice, red dress\n",
        "img/10_alice/two.png": png_bytes(seed=2),
        "img/3_alice/three.png": png_bytes(seed=3), "img/3_alice/three.caption": b"alice,  smiling ,alice",
        "reg/1_woman/r.png": png_bytes(seed=4), "reg/1_woman/r.txt": b"woman",
        "img/10_alice/broken.png": b"\x89PNG\r\n\x1a\nnot really",
        "notes/x.png": png_bytes(seed=5),
    })
    response = import_zip(client, alice, archive, name="alice set")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["dataset"]["name"] == "alice set" and body["dataset"]["default_repeats"] == 10
    assert body["imported"] == 4 and body["dataset"]["image_count"] == 4
    report = {r["entry"]: r for r in body["report"]}
    assert report["img/10_alice/broken.png"]["status"] == "rejected"
    assert "damaged or unreadable PNG" in report["img/10_alice/broken.png"]["reason"]
    assert report["notes/x.png"]["reason"].startswith("not inside an N_concept folder")
    assert "folder's concept" in report["img/10_alice/two.png"]["reason"]
    images = {i["filename"]: i for i in client.get(f"/api/v1/datasets/{body['dataset']['id']}/images",
                                                   headers=alice).json()}
    assert images["one.png"]["tags"] == ["alice", "red dress"] and images["one.png"]["repeats"] is None
    assert images["two.png"]["tags"] == ["alice"]
    assert images["three.png"]["tags"] == ["alice", "smiling"] and images["three.png"]["repeats"] == 3
    assert images["r.png"]["is_reg"] and images["r.png"]["tags"] == ["woman"] and images["r.png"]["repeats"] is None


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_export_then_import_gives_the_same_images_tags_and_repeats(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "Round trip!", "default_repeats": 4},
                          headers=alice).json()["id"]
    originals = {f"pic{i}.png": png_bytes((128, 96), seed=i) for i in range(3)}
    uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                           files=[("files", (n, d, "image/png")) for n, d in originals.items()]).json()
    ids = {u["filename"]: u["id"] for u in uploaded}
    edits = {"pic0.png": {"tags": ["rt", "red"], "crop": {"x": 16, "y": 8, "width": 64, "height": 64}},
             "pic1.png": {"tags": ["rt", "blue"], "repeats": 7},
             "pic2.png": {"tags": ["person"], "is_reg": True}}
    for name, patch in edits.items():
        assert client.patch(f"/api/v1/datasets/{dataset}/images/{ids[name]}", json=patch,
                            headers=alice).status_code == 200
    exported = client.get(f"/api/v1/datasets/{dataset}/export", headers=alice)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    names = sorted(zipfile.ZipFile(io.BytesIO(exported.content)).namelist())
    assert names == ["4_Round trip/pic0.png", "4_Round trip/pic0.txt", "7_Round trip/pic1.png",
                     "7_Round trip/pic1.txt", "reg/1_Round trip/pic2.png", "reg/1_Round trip/pic2.txt",
                     "tag_occurrence.txt"]
    summary = zipfile.ZipFile(io.BytesIO(exported.content)).read("tag_occurrence.txt").decode()
    assert summary == "2 rt\n1 blue\n1 person\n1 red\n"

    back = import_zip(client, alice, exported.content, name="again").json()
    assert back["imported"] == 3 and back["dataset"]["default_repeats"] == 4
    again = {i["filename"]: i for i in client.get(f"/api/v1/datasets/{back['dataset']['id']}/images",
                                                  headers=alice).json()}
    for name, patch in edits.items():
        assert again[name]["tags"] == patch["tags"]
        assert again[name]["repeats"] == patch.get("repeats") and again[name]["is_reg"] == patch.get("is_reg", False)
    cropped = Image.open(io.BytesIO(originals["pic0.png"])).convert("RGB").crop((16, 8, 80, 72)).tobytes()
    assert (again["pic0.png"]["width"], again["pic0.png"]["height"]) == (64, 64)
    assert pixels(client.get(again["pic0.png"]["url"]).content) == cropped
    assert pixels(client.get(again["pic1.png"]["url"]).content) == pixels(originals["pic1.png"])


def test_sentences_and_tags_travel_as_ai_toolkit_and_sd_scripts_lay_them_out(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "prose", "default_repeats": 2}, headers=alice).json()["id"]
    uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice, files=[
        ("files", (f"p{i}.png", png_bytes(seed=i), "image/png")) for i in range(3)]).json()
    texts = {"p0.png": {"tags": ["sks", "red dress"], "caption": "sks, a woman in a red dress on a beach"},
             "p1.png": {"caption": "a photo of sks reading a book by a window"},
             "p2.png": {"tags": ["sks", "smile"]}}
    for row in uploaded:
        client.patch(f"/api/v1/datasets/{dataset}/images/{row['id']}", json=texts[row["filename"]], headers=alice)
    exported = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/datasets/{dataset}/export", headers=alice).content))
    assert exported.read("2_prose/p0.txt").decode() == "sks, a woman in a red dress on a beach"  # ai-toolkit's .txt
    assert exported.read("2_prose/p0.tags").decode() == "sks, red dress"  # sd-scripts: caption_extension=.tags
    assert exported.read("2_prose/p1.txt").decode() == "a photo of sks reading a book by a window"
    assert exported.read("2_prose/p2.txt").decode() == "sks, smile" and "2_prose/p2.tags" not in exported.namelist()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in exported.namelist():
            archive.writestr(name, exported.read(name))
        # an sd-scripts folder: BLIP sentences in .caption, WD14 tags in .txt
        archive.writestr("5_other/q.png", png_bytes(seed=9))
        archive.writestr("5_other/q.caption", "a man riding a horse across a field")
        archive.writestr("5_other/q.txt", "1boy, horse, field")
    back = import_zip(client, alice, buffer.getvalue(), name="again").json()
    again = {i["filename"]: i for i in client.get(f"/api/v1/datasets/{back['dataset']['id']}/images",
                                                  headers=alice).json()}
    for name, text in texts.items():
        assert (again[name]["tags"], again[name]["caption"]) == (text.get("tags", []), text.get("caption", ""))
    assert [again[n]["text_kind"] for n in ("p0.png", "p1.png", "p2.png")] == ["both", "sentence", "tags"]
    assert (again["q.png"]["tags"], again["q.png"]["caption"]) == (["1boy", "horse", "field"],
                                                                    "a man riding a horse across a field")


def test_tag_occurrence_file_lists_counts_most_frequent_first(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "t"}, headers=alice).json()["id"]
    client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(2)])
    client.post(f"/api/v1/datasets/{dataset}/tags/batch", json={"action": "add", "tags": ["b", "a"]}, headers=alice)
    response = client.get(f"/api/v1/datasets/{dataset}/tag-occurrence", headers=alice)
    assert response.status_code == 200 and response.text == "2 a\n2 b\n"


def test_near_duplicates_are_grouped_and_different_pictures_are_not(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "dups"}, headers=alice).json()["id"]
    base = Image.open(io.BytesIO(png_bytes((256, 192), seed=3)))
    resized, jpeg = io.BytesIO(), io.BytesIO()
    base.resize((200, 150)).save(resized, "PNG")
    base.save(jpeg, "JPEG", quality=60)
    files = {"a.png": png_bytes((256, 192), seed=3), "a-small.png": resized.getvalue(), "a.jpg": jpeg.getvalue(),
             "other.png": png_bytes((256, 192), (20, 90, 200), seed=9)}
    uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                           files=[("files", (n, d, "image/png")) for n, d in files.items()]).json()
    ids = {u["filename"]: u["id"] for u in uploaded}
    body = client.get(f"/api/v1/datasets/{dataset}/duplicates", headers=alice).json()
    assert body["groups"] == [[ids["a.png"], ids["a-small.png"], ids["a.jpg"]]]
    bad = client.get(f"/api/v1/datasets/{dataset}/duplicates?max_distance=99", headers=alice)
    assert bad.status_code == 422 and bad.json()["detail"]["errors"][0]["field"] == "query.max_distance"


def test_cli_imports_a_folder_leaving_out_links_and_names_a_refusal(tmp_path, capsys):
    from tests.service.conftest import LiveServer
    from trainer.cli import main

    folder = tmp_path / "mychar"
    (folder / "img" / "6_mychar").mkdir(parents=True)
    (folder / "img" / "6_mychar" / "a.png").write_bytes(png_bytes(seed=1))
    (folder / "img" / "6_mychar" / "a.txt").write_text("mychar, smiling")
    (folder / "img" / "6_mychar" / "b.png").write_bytes(png_bytes(seed=2))
    (folder / "img" / "6_mychar" / "secret.png").symlink_to("/etc/hostname")
    settings = Settings(var_dir=tmp_path / "var")
    with LiveServer(settings) as server, TestClient(server.app) as client:
        headers = register(client, "alice@example.com")
        token = client.post("/api/v1/me/tokens", json={"name": "cli"}, headers=headers).json()["token"]
        assert main(["datasets", "import", str(folder), "--server", server.url, "--token", token]) == 0
        out = capsys.readouterr().out
        assert "left out  img/6_mychar/secret.png: symbolic link" in out
        assert 'dataset ' in out and '"mychar": 2 images imported' in out
        datasets = client.get("/api/v1/datasets", headers=headers).json()
        assert [(d["name"], d["image_count"], d["default_repeats"]) for d in datasets] == [("mychar", 2, 6)]
        hostile = tmp_path / "evil.zip"
        hostile.write_bytes(zip_of({"../evil.png": png_bytes(seed=3)}))
        assert main(["datasets", "import", str(hostile), "--server", server.url, "--token", token]) != 0
        assert "../evil.png: path leaves the archive" in capsys.readouterr().err


def test_a_model_that_reads_sentences_trains_on_the_sentence_and_one_that_reads_tags_on_both():
    from core.kohya_layout import caption_for
    from core.models import Image as ImageRow

    both = ImageRow(tags=["sks", "red dress"], caption="sks, a woman in a red dress")
    tags_only = ImageRow(tags=["sks", "smile"], caption="")
    assert caption_for(both, "sentences") == "sks, a woman in a red dress"
    assert caption_for(both, "tags") == "sks, red dress, sks, a woman in a red dress"
    assert caption_for(tags_only, "sentences") == caption_for(tags_only, "tags") == "sks, smile"
