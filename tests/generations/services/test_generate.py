"""Generating: streamed groups, usage and images in the answer, against the demo upstream.

Every call goes over loopback HTTP to the demo upstream, which speaks Ark's protocol,
streams included; nothing of ours is mocked.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel
from generations.services.generate import generation_create
from generations.tasks import generate_in_background, sweep_interrupted_generations
from tests.conftest import wait_for
from tests.factories import GenerationFactory, GenerationResultFactory

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus
SEEDREAM_4 = "doubao-seedream-4-0-250828"
SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"


def seedream_4() -> ImageModel:
    return ImageModel.objects.get(upstream_model_id=SEEDREAM_4)


def generate(prompt: str, *, model: ImageModel | None = None, **params: Any) -> Generation:
    return generation_create(
        user=None,
        models=[model or seedream_4()],
        prompt_text=prompt,
        size="1280x720",
        params=params,
    )


def results(generation: Generation) -> list[GenerationResult]:
    return list(generation.results.order_by("id"))


def posted(demo: Any) -> list[dict[str, Any]]:
    return [entry["json"] for entry in demo.request_log if entry["method"] == "POST"]


def test_a_streamed_group_longer_than_the_read_timeout_records_all_15(
    demo: Any, settings: Any
) -> None:
    settings.ARK_READ_TIMEOUT = 1.0
    settings.ARK_TOTAL_TIMEOUT = 1.5
    started = time.monotonic()
    generation = generate("fifteen foxes [demo:latency=0.15]", max_images=15)
    took = time.monotonic() - started

    assert took > settings.ARK_TOTAL_TIMEOUT  # longer than any single read may wait
    rows = results(generation)
    assert [r.status for r in rows] == ["SUCCESS"] * 15
    assert [r.image_index for r in rows] == list(range(15))
    assert len({r.external_url for r in rows}) == 15
    assert all(r.storage_status == S.PENDING for r in rows)
    (sent,) = posted(demo)
    assert sent["stream"] is True
    assert sent["sequential_image_generation_options"] == {"max_images": 15}
    generation.refresh_from_db()
    assert generation.usage_generated_images == 15
    assert generation.usage_output_tokens == 15 * 1280 * 720 // 256


def test_the_same_group_not_streamed_is_cut_off_by_the_timeout(demo: Any, settings: Any) -> None:
    """The control of the test above: what streaming saves."""
    settings.ARK_READ_TIMEOUT = 1.0
    settings.ARK_TOTAL_TIMEOUT = 1.5
    model = ImageModel.objects.create(
        name="Seedream 4.0, not streamed",
        upstream_model_id=SEEDREAM_4,
        max_images=15,
        streams=False,
    )
    generation = generate("fifteen foxes [demo:latency=0.15]", model=model, max_images=15)

    (row,) = results(generation)
    assert (row.status, row.error_code) == ("FAILED", "UpstreamTimeout")
    assert "may bill it" in row.error_message
    assert "stream" not in posted(demo)[0]


def test_a_failed_image_of_a_stream_is_a_failed_result_and_the_others_are_kept(
    demo: Any,
) -> None:
    generation = generate("three foxes [demo:item_error]", max_images=3)

    rows = results(generation)
    assert [r.status for r in rows] == ["FAILED", "SUCCESS", "SUCCESS"]
    assert rows[0].error_code == "OutputImageSensitiveContentDetected"
    assert rows[0].storage_status == ""
    generation.refresh_from_db()
    assert generation.usage_generated_images == 2  # Ark bills only the images it made


def test_a_stream_that_breaks_off_keeps_the_images_that_arrived(demo: Any) -> None:
    generation = generate("five foxes [demo:cut_stream=2]", max_images=5)

    rows = results(generation)
    assert [r.status for r in rows] == ["SUCCESS", "SUCCESS", "FAILED"]
    assert rows[2].error_code == "UpstreamConnectionError"
    assert "after 2 image(s)" in rows[2].error_message
    assert "billed" in rows[2].error_message
    generation.refresh_from_db()
    assert generation.usage_generated_images is None  # the stream never said


def test_a_stream_gone_silent_is_given_up_after_the_read_timeout(demo: Any, settings: Any) -> None:
    settings.ARK_READ_TIMEOUT = 0.5
    started = time.monotonic()
    generation = generate("foxes, then silence [demo:stall_stream=1]", max_images=4)

    assert time.monotonic() - started < 5
    rows = results(generation)
    assert [r.status for r in rows] == ["SUCCESS", "FAILED"]
    assert rows[1].error_code == "UpstreamTimeout"
    assert "no event for 0.5 s" in rows[1].error_message
    assert "after 1 image(s)" in rows[1].error_message


def test_a_streamed_group_in_b64_json_is_stored_image_by_image(demo: Any) -> None:
    generation = generate("inline foxes", max_images=3, response_format="b64_json")

    rows = results(generation)
    assert [(r.status, r.storage_status) for r in rows] == [("SUCCESS", S.STORED)] * 3
    assert all(r.external_url == "" and r.content_type == "image/jpeg" for r in rows)
    assert len({r.sha256 for r in rows}) == 3
    assert posted(demo)[0]["stream"] is True


def test_a_model_that_does_not_stream_is_called_in_one_answer_with_its_usage(
    demo: Any,
) -> None:
    model = ImageModel.objects.get(upstream_model_id=SEEDREAM_3)
    generation = generate("a fox", model=model)

    (row,) = results(generation)
    assert row.status == "SUCCESS"
    assert "stream" not in posted(demo)[0]
    generation.refresh_from_db()
    usage = (generation.usage_generated_images, generation.usage_output_tokens)
    assert usage == (1, 1280 * 720 // 256)


def test_usage_adds_up_over_the_models_of_a_generation(demo: Any) -> None:
    models = [seedream_4(), ImageModel.objects.get(upstream_model_id=SEEDREAM_3)]
    generation = generation_create(
        user=None, models=models, prompt_text="foxes", size="1280x720", params={"max_images": 2}
    )

    generation.refresh_from_db()
    assert generation.usage_generated_images == 3
    # The streamed model's rows come as they arrive, the other model's after them.
    assert [r.upstream_model_id for r in results(generation)] == [SEEDREAM_4] * 2 + [SEEDREAM_3]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_each_streamed_image_is_stored_while_the_rest_of_the_group_is_still_coming(
    celery_worker: Any, demo: Any
) -> None:
    """Recorded and queued as its event arrives: a worker stores the first image while
    Ark is still making the last ones."""
    prompt = "a slow group of foxes [demo:latency=1.5]"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["generation"] = generate(prompt, max_images=4)
        finally:
            connection.close()

    call = threading.Thread(target=run)
    call.start()
    try:
        wait_for(
            lambda: GenerationResult.objects.filter(
                generation__prompt_text=prompt, storage_status=S.STORED
            ).exists(),
            timeout=20,
        )
        still_coming = call.is_alive()
    finally:
        call.join(timeout=30)

    assert still_coming, "the first image was stored only after the whole group arrived"
    rows = results(outcome["generation"])
    assert [r.status for r in rows] == ["SUCCESS"] * 4
    wait_for(
        lambda: all(r.storage_status == S.STORED for r in results(outcome["generation"])),
        timeout=30,
    )


# --- background generations: the lease, the claim, the sweep -------------------------


def test_a_generation_called_at_once_is_done_when_it_returns(demo: Any) -> None:
    generation = generate("a fox")
    generation.refresh_from_db()
    assert generation.status == Generation.Status.DONE
    assert generation.lease_expires_at is None


def test_a_background_generation_is_called_once_however_often_its_task_is_delivered(
    demo: Any,
) -> None:
    model = seedream_4()
    generation = generation_create(
        user=None,
        models=[model],
        prompt_text="two foxes",
        size="1280x720",
        params={"max_images": 2},
        background=True,
    )
    assert generation.status == Generation.Status.RUNNING
    assert not generation.results.exists()
    task = {"generation_id": generation.pk, "model_ids": [model.pk], "sizes": {}}

    assert generate_in_background.apply(kwargs=task).get() == "done"
    assert generate_in_background.apply(kwargs=task).get() == "finished"

    generation.refresh_from_db()
    assert generation.status == Generation.Status.DONE
    assert [r.status for r in results(generation)] == ["SUCCESS"] * 2
    assert len(posted(demo)) == 1


def test_a_task_delivered_again_after_its_worker_died_interrupts_instead_of_calling(
    demo: Any,
) -> None:
    """The claim is taken (a worker began calling, then died): the task comes again, and
    Ark, which billed the first call, is not asked a second time."""
    model = seedream_4()
    generation = GenerationFactory(
        status=Generation.Status.RUNNING,
        upstream_started_at=timezone.now() - timedelta(seconds=30),
        lease_expires_at=timezone.now() + timedelta(seconds=90),
    )
    GenerationResultFactory(generation=generation, model=model)  # what arrived before
    task = {"generation_id": generation.pk, "model_ids": [model.pk], "sizes": {}}

    assert generate_in_background.apply(kwargs=task).get() == "interrupted"

    generation.refresh_from_db()
    assert generation.status == Generation.Status.INTERRUPTED
    assert generation.results.count() == 1
    assert posted(demo) == []


def test_a_background_generation_that_waited_past_its_queue_lease_is_not_called(
    demo: Any,
) -> None:
    model = seedream_4()
    generation = GenerationFactory(
        status=Generation.Status.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    task = {"generation_id": generation.pk, "model_ids": [model.pk], "sizes": {}}

    assert generate_in_background.apply(kwargs=task).get() == "interrupted"
    assert posted(demo) == []


def test_the_sweep_marks_interrupted_only_the_generations_whose_lease_ran_out() -> None:
    now = timezone.now()
    expired = GenerationFactory(
        status=Generation.Status.RUNNING, lease_expires_at=now - timedelta(seconds=5)
    )
    kept = GenerationResultFactory(generation=expired)
    alive = GenerationFactory(
        status=Generation.Status.RUNNING, lease_expires_at=now + timedelta(seconds=60)
    )
    done = GenerationFactory(status=Generation.Status.DONE)

    assert sweep_interrupted_generations() == 1
    assert sweep_interrupted_generations() == 0

    statuses = dict(Generation.objects.values_list("pk", "status"))
    assert statuses == {
        expired.pk: Generation.Status.INTERRUPTED,
        alive.pk: Generation.Status.RUNNING,
        done.pk: Generation.Status.DONE,
    }
    assert list(expired.results.all()) == [kept]  # what it received is kept


@pytest.mark.django_db(transaction=True)
def test_a_running_generation_renews_its_lease_while_a_slow_group_streams(
    demo: Any, settings: Any
) -> None:
    """Renewed as it goes, the lease never runs out under a live process, however long
    the group takes: the sweep meanwhile leaves the generation running."""
    settings.GENERATION_LEASE_SECONDS = 1
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["generation"] = generate("slow foxes [demo:latency=0.6]", max_images=4)
        finally:
            connection.close()

    call = threading.Thread(target=run)
    call.start()
    swept = 0
    try:
        while call.is_alive():
            swept += sweep_interrupted_generations()
            time.sleep(0.2)
    finally:
        call.join(timeout=30)

    assert swept == 0
    outcome["generation"].refresh_from_db()
    assert outcome["generation"].status == Generation.Status.DONE
    assert len(results(outcome["generation"])) == 4
