"""The service's contract: typed OpenAPI schema, documented errors, /docs without network, model shown."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from maskcls.serve.app import create_app
from maskcls.serve.service import ServeSettings, Service

SETTINGS = ServeSettings(max_bytes=200_000, max_pixels=1_000_000, max_files=4, threads=1)


@pytest.fixture(scope="module")
def client(tiny_run):
    return TestClient(create_app(service=Service.load([tiny_run], settings=SETTINGS)))


def test_docs_assets_come_from_the_package(client):
    """/docs references only this server's paths, and those files are the ones the fastapi-offline package ships."""
    import fastapi_offline

    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"https?://", page.text), "the docs page must not load anything from the internet"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    static = Path(fastapi_offline.__file__).parent / "static"
    for asset in assets:
        assert asset.startswith("/"), asset
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert r.content == (static / Path(asset).name).read_bytes()
    assert len(client.get(next(a for a in assets if a.endswith(".js"))).content) > 500_000  # the real Swagger UI
    assert client.get("/openapi.json").status_code == 200


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_openapi_schema_is_typed_with_error_codes(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    ok = paths["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    pred = _resolve(schema, ok)
    assert pred.get("additionalProperties") is not True
    for field in ("class_id", "mask", "gender", "age", "confidence", "low_confidence", "probabilities", "faces",
                  "warnings", "width", "height"):
        assert field in pred["properties"], field
    assert pred["properties"]["mask"]["enum"] == ["wear", "incorrect", "not_wear"]
    for path in ("/predict", "/predict/batch"):
        responses = paths[path]["post"]["responses"]
        for code in ("400", "413", "415", "503"):
            assert code in responses, (path, code)
            ref = responses[code]["content"]["application/json"]["schema"]
            assert _resolve(schema, ref)["properties"]["detail"]["type"] == "string"
            assert responses[code]["description"]
    health = _resolve(schema, paths["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"model", "engine", "runs", "warnings", "limits", "low_confidence_below"} <= set(health["properties"])
    batch = _resolve(schema, paths["/predict/batch"]["post"]["responses"]["200"]["content"]["application/json"]
                     ["schema"])
    items = batch["properties"]["results"]["items"]["anyOf"]
    assert {i["$ref"].rsplit("/", 1)[1] for i in items} == {"Prediction", "FileError"}


def test_responses_follow_the_schema(client, demo_root):
    photo = sorted((demo_root / "eval" / "images").iterdir())[0]
    body = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    assert isinstance(body["low_confidence"], bool) and isinstance(body["warnings"], list)
    assert body["low_confidence"] == (body["confidence"] < client.get("/health").json()["low_confidence_below"])
    if body["low_confidence"]:
        assert any("low confidence" in w for w in body["warnings"])


def test_low_confidence_is_flagged(tiny_run, demo_root):
    from maskcls.config import load_config

    service = Service.load([tiny_run], settings=SETTINGS)
    for m in service.ensemble.members:
        m.cfg = load_config(None, {**m.cfg.to_dict(), "eval": {"min_confidence": 1.0}})
    service = Service(service.ensemble, runs=service.runs, settings=SETTINGS)
    photo = sorted((demo_root / "eval" / "images").iterdir())[0]
    body = TestClient(create_app(service=service)).post(
        "/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    assert body["low_confidence"] is True and body["faces"][0]["result"]["low_confidence"] is True
    assert any("low confidence" in w for w in body["warnings"])


def test_page_shows_the_loaded_model(client, tiny_run):
    html = client.get("/").text
    assert 'id="model"' in html and 'fetch("health"' in html and 'id="banner"' in html
    h = client.get("/health").json()
    assert h["model"] == "tf_efficientnet_lite0" and h["runs"] == [str(tiny_run)]
