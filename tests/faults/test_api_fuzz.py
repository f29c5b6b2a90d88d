"""schemathesis over every operation of `/api/openapi.json`, against a real gunicorn
with a staff token: positive and negative examples, and every answer checked against
the document (no 5xx; a documented status, content type and body; invalid input
refused, valid input accepted).

The examples come from the document as the code makes it, read when the module is
collected (schemathesis's pytest integration builds a test per operation then, before
any server runs); each test first holds what gunicorn serves at /api/openapi.json to
that same document.

Seeded: the seed is printed with each operation's count of examples, and
GENVAULT_FUZZ_SEED=N replays a run (the suite runs DEFAULT_SEED; `random` draws one).
The fuzzing phase makes up to GENVAULT_FUZZ_EXAMPLES (200) examples an operation, the
examples and coverage phases a few more; each one has DEADLINE_MS. The whole takes
under a minute.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis.checks import CHECKS, load_all_checks

from generations.models import GenerationResult
from generations.services.organize import results_add_tags
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored
from tests.faults.processes import GunicornProcess

pytestmark = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

# A fixed seed by default, so that what CI proves stays proved from one run to the next;
# GENVAULT_FUZZ_SEED=random explores new examples (and prints the seed it drew).
DEFAULT_SEED = 3848248362
_wanted_seed = os.environ.get("GENVAULT_FUZZ_SEED") or str(DEFAULT_SEED)
SEED = random.SystemRandom().getrandbits(32) if _wanted_seed == "random" else int(_wanted_seed)
EXAMPLES = int(os.environ.get("GENVAULT_FUZZ_EXAMPLES", "200"))
# Each example's request, answer and checks; the slowest is a page of 200 results.
DEADLINE_MS = 5_000
# Every operation that takes an id meets these rows: more than deletions can use up.
SEEDED_RESULTS = 60
# gunicorn's limit_request_line, the most a request line may take (its default).
GUNICORN_REQUEST_LINE = 4094


def _seed_results() -> None:
    """Results in every state an answer describes: stored (tagged, starred), waiting to
    be stored, failed, and lost for good."""
    for n in range(SEEDED_RESULTS // 4):
        generation = GenerationFactory(size="2048x2048", params={"seed": n})
        stored = mark_stored(GenerationResultFactory(generation=generation, favorite=n % 2 == 0))
        results_add_tags(result_ids=[stored.pk], names=[f"tag {n % 3}", "night/sky"])
        GenerationResultFactory(generation=generation)
        GenerationResultFactory(
            generation=generation,
            status=GenerationResult.Status.FAILED,
            external_url="",
            image_url="",
            storage_status="",
            error_code="OutputImageSensitiveContentDetected",
            error_message="the image was refused",
        )
        GenerationResultFactory(
            generation=generation, storage_status=GenerationResult.StorageStatus.EXPIRED
        )


def _document() -> dict[str, Any]:
    """The document as the code makes it: what gunicorn serves, which `live_api` holds it
    to. schemathesis's pytest integration needs it when the module is collected."""
    from generations.api.app import api

    document: dict[str, Any] = api.get_openapi_schema(path_prefix="/api/")
    return json.loads(json.dumps(document, default=str))


schema = schemathesis.openapi.from_dict(
    _document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",  # positive and negative examples
                "max-examples": EXAMPLES,
                "database": "none",
            },
            "operations": [
                {
                    # A filter can be well formed and still refused, for reasons no
                    # schema can say: `since` after `until`, a `model` id no model has,
                    # a NUL in `q`, a `size` of 0x0. Those are 400s naming the filter.
                    "include-operation-id": "listResults",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [200, 400, 401, 403, 404]}
                    },
                }
            ],
        }
    ),
)


@dataclass
class LiveApi:
    url: str
    headers: dict[str, str]
    examples: int = 0


def _checks() -> list[str]:
    """The checks every answer goes through: each one schemathesis has that is on."""
    load_all_checks()
    config = schema.config.checks_config_for()
    return [name for name in CHECKS.get_all_names() if config.get_by_name(name=name).enabled]


@pytest.fixture
def live_api(
    request: pytest.FixtureRequest,
    start_gunicorn: Callable[..., GunicornProcess],
    api_token: str,
) -> Iterator[LiveApi]:
    """gunicorn serving the seeded rows; each operation has rows of its own to delete.
    What it serves at /api/openapi.json must be the document the examples come from."""
    _seed_results()
    web = start_gunicorn(workers=2)
    headers = {"Authorization": f"Bearer {api_token}"}
    served = requests.get(f"{web.url}/api/openapi.json", headers=headers, timeout=10)
    assert served.status_code == 200, served.text
    assert served.json() == schema.raw_schema, "gunicorn serves another document"
    live = LiveApi(url=web.url, headers=headers)
    print(f"schemathesis seed {SEED} (GENVAULT_FUZZ_SEED={SEED} replays it)")
    started = time.monotonic()
    yield live
    line = (
        f"schemathesis {request.node.name}: {live.examples} examples in "
        f"{time.monotonic() - started:.1f}s, seed {SEED} (GENVAULT_FUZZ_SEED={SEED} replays it)"
    )
    # In the run's output, as CI shows it, not only in a failure's captured output.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}")


# The broker only takes the re-stores a restore queues: one is enough.
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@schema.parametrize()
@settings(deadline=DEADLINE_MS, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_its_document_says(case: Any, live_api: LiveApi) -> None:
    request = requests.Request(**case.as_transport_kwargs(base_url=live_api.url)).prepare()
    # gunicorn refuses a longer request line itself, in HTML, before the API sees it.
    assume(len(f"{request.method} {request.path_url} HTTP/1.1") <= GUNICORN_REQUEST_LINE)
    live_api.examples += 1
    case.call_and_validate(
        base_url=live_api.url, headers=live_api.headers, timeout=DEADLINE_MS / 1000
    )


def test_the_fuzzing_covers_every_operation_with_every_check() -> None:
    """Every operation of the document is fuzzed (none filtered out), and every
    check that judges a single answer is on."""
    fuzzed = {op.ok().label for op in schema.get_all_operations()}
    document = {
        f"{method.upper()} {path}"
        for path, methods in schema.raw_schema["paths"].items()
        for method in methods
    }
    assert fuzzed == document and len(fuzzed) >= 6
    print(f"schemathesis checks: {', '.join(_checks())}")
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "unsupported_method",
        "ignored_auth",
    } <= set(_checks())
