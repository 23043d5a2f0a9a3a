"""The public gallery: only public models with a picture are listed, for visitors too; sorted, filtered, searched and
paged; the model page's own words and pictures, edited by its owner."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import png_bytes, public_model, register


def _picture(client: TestClient, headers: dict[str, str], model_id: str, seed: int = 0) -> str:
    sent = client.post(f"/api/v1/models/{model_id}/showcase/upload", headers=headers,
                       files=[("files", (f"p{seed}.png", png_bytes(seed=seed), "image/png"))])
    return sent.json()[0]["id"]


def test_the_gallery_lists_public_models_with_a_picture_sorted_filtered_searched_and_paged(tmp_path, tiny_sd15):
    settings = Settings(var_dir=tmp_path / "var")
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        owner, fan = register(client, "owner@example.com"), register(client, "fan@example.com")
        first, second = public_model(client, settings, owner, "first"), public_model(client, settings, owner, "second")
        hidden = public_model(client, settings, owner, "bare")  # no picture: not listed
        client.patch(f"/api/v1/models/{second}", headers=owner, json={
            "tags": ["watercolor", "portrait"], "license": "CC BY 4.0", "recommended_weight": 0.65,
            "description": "A **soft** look. <img src=x onerror=alert(1)> [bad](javascript:alert(1))"})
        cover = _picture(client, owner, first)
        _picture(client, owner, second, seed=1)
        client.cookies.clear()  # a visitor from here on, unless headers say otherwise

        def names(**params: object) -> list[str]:
            answer = client.get("/api/v1/gallery", params=params)
            assert answer.status_code == 200, answer.text
            return [card["name"] for card in answer.json()]

        assert names() == ["second", "first"]  # newest first; "bare" has no picture
        assert names(limit=1, offset=1) == ["first"]
        assert names(q="WATERCOLOR") == ["second"] and names(q="first") == ["first"]
        assert names(family="sd15") == ["second", "first"] and names(family="flux") == []
        download = client.get(f"/api/v1/models/{first}/download", headers=fan, follow_redirects=False)
        assert download.status_code == 307
        assert names(sort="downloads") == ["first", "second"]
        assert client.get(f"/api/v1/models/{first}/download").status_code == 401  # visitors sign in to download

        page = client.get(f"/api/v1/models/{second}").json()
        assert (page["license"], page["recommended_weight"], page["snippet"]) == ("CC BY 4.0", 0.65,
                                                                                   "<lora:second:0.65>")
        html = page["description_html"]
        assert "<strong>soft</strong>" in html and "&lt;img src=x" in html  # Markdown rendered, HTML shown as text
        assert "<img" not in html and 'href="javascript' not in html
        assert page["parameters"]["max_train_epochs"] == 1 and "train_data_dir" not in page["parameters"]
        assert client.get(f"/api/v1/models/{first}").json()["cover_id"] == cover
        assert client.get(f"/api/v1/models/{hidden}").json()["in_gallery"] is False

        # the owner picks another cover, removes pictures, unpublishes; others cannot touch the page
        other = _picture(client, owner, first, seed=2)
        assert client.patch(f"/api/v1/models/{first}", headers=owner, json={"cover_id": other}).json()[
            "cover_id"] == other
        assert client.patch(f"/api/v1/models/{first}", headers=owner, json={"cover_id": "nope"}).status_code == 422
        assert client.patch(f"/api/v1/models/{first}", headers=fan, json={"license": "mine"}).status_code == 404
        assert client.delete(f"/api/v1/models/{first}/showcase/{other}", headers=fan).status_code == 404
        for item in (other, cover):
            assert client.delete(f"/api/v1/models/{first}/showcase/{item}", headers=owner).status_code == 204
        assert names() == ["second"]  # no picture left
        assert client.delete(f"/api/v1/models/{second}", headers=owner).status_code == 204
        assert names() == []
