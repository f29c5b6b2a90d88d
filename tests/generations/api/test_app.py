"""The API's document and docs page: a valid OpenAPI 3 document of every operation, both
ways to authenticate and the error body; a docs page for staff that loads nothing from
another site."""

from __future__ import annotations

import re
import typing
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from generations.api import schemas
from generations.models import GenerationResult
from tests.factories import GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db

NEW_OPERATIONS = {
    ("get", "/api/results"): "listResults",
    ("get", "/api/results/{result_id}"): "getResult",
    ("delete", "/api/results/{result_id}"): "deleteResult",
    ("post", "/api/results/{result_id}/restore"): "restoreResult",
    ("get", "/api/generations/{generation_id}"): "getGeneration",
    ("get", "/api/tags"): "listTags",
}


@pytest.fixture
def document(token_client: Client) -> dict[str, Any]:
    response = token_client.get("/api/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_document_is_valid_openapi_3_with_every_new_operation(
    document: dict[str, Any],
) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")
    found = {
        (method, path): operation["operationId"]
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert found.items() >= NEW_OPERATIONS.items()


def test_the_document_describes_both_ways_in_and_the_error_body(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerToken"]["description"],
    }
    assert schemes["StaffSession"]["type"] == "apiKey"
    assert schemes["StaffSession"]["in"] == "cookie"
    assert schemes["StaffSession"]["name"] == "sessionid"
    for (method, path), _name in NEW_OPERATIONS.items():
        operation = document["paths"][path][method]
        assert operation["security"] == [{"BearerToken": []}, {"StaffSession": []}]
        refusal = operation["responses"]["403"]["content"]["application/json"]["schema"]
        assert refusal == {"$ref": "#/components/schemas/ErrorBody"}
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "field"}


def _validator(document: dict[str, Any], path: str, method: str, status: str) -> Any:
    schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]
    registry: Registry[Any] = Registry().with_resource(
        "urn:api", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    ref = {"$ref": "urn:api#" + schema["schema"]["$ref"].removeprefix("#")}
    return Draft202012Validator(ref, registry=registry)


def test_answers_match_the_document(document: dict[str, Any], token_client: Client) -> None:
    stored = mark_stored(GenerationResultFactory())
    GenerationResultFactory(status="FAILED", error_code="bad", error_message="no")
    listing = token_client.get("/api/results").json()
    assert len(listing["results"]) == 2
    page = _validator(document, "/api/results", "get", "200")
    page.validate(listing)
    assert not page.is_valid({"results": [{**listing["results"][0], "id": "1"}], "next": None})
    one = token_client.get(f"/api/results/{stored.pk}").json()
    _validator(document, "/api/results/{result_id}", "get", "200").validate(one)
    generation = token_client.get(f"/api/generations/{stored.generation_id}").json()
    _validator(document, "/api/generations/{generation_id}", "get", "200").validate(generation)
    tags = token_client.get("/api/tags").json()
    _validator(document, "/api/tags", "get", "200").validate(tags)
    refusal = token_client.get("/api/results?limit=500").json()
    _validator(document, "/api/results", "get", "400").validate(refusal)
    assert refusal["error"]["field"] == "limit"


def test_the_document_s_enums_are_the_model_s_choices() -> None:
    assert set(typing.get_args(schemas.ResultStatus)) == set(GenerationResult.Status.values)
    stored = {v for v in GenerationResult.StorageStatus.values if v}
    assert set(typing.get_args(schemas.StorageStatus)) == stored


def test_the_document_and_the_docs_page_are_for_staff(plain_user: Any) -> None:
    session = Client()
    session.force_login(plain_user)
    for path in ("/api/openapi.json", "/api/docs"):
        assert Client().get(path).status_code == 401
        assert session.get(path).status_code == 403


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_the_docs_page_loads_only_what_this_server_serves(staff_client: Client) -> None:
    page = staff_client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    parser = _Urls()
    parser.feed(html)
    assert len(parser.urls) >= 3  # the stylesheet, Swagger UI and its start-up script
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), url
    assert not re.search(r"https?://|//cdn", html)
    # The document it shows is ours, and the validator badge (another site) is off.
    assert '"url": "/api/openapi.json"' in html
    assert '"validatorUrl": null' in html


def test_the_document_says_the_shape_of_each_text_filter(
    document: dict[str, Any], token_client: Client
) -> None:
    """A client that builds its query from the document sends what the API takes."""
    GenerationResultFactory.create_batch(2)
    parameters = {p["name"]: p for p in document["paths"]["/api/results"]["get"]["parameters"]}

    def admits(name: str, value: str) -> bool:
        schema = {"type": "string", **parameters[name]["schema"]["anyOf"][0]}
        return Draft202012Validator(schema).is_valid(value)

    cursor = token_client.get("/api/results?limit=1").json()["next"]
    assert admits("cursor", cursor) and not admits("cursor", "abc")
    assert admits("size", "2048x2048") and not admits("size", "big")
    assert admits("aspect", "16:9") and not admits("aspect", "16/9")
    assert parameters["until"]["schema"]["anyOf"][0]["format"] == "date"
