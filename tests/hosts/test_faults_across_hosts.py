"""Faults a single machine never shows, on genvault spread over test hosts.

gunicorn on one host, a Celery worker on each of two others (each with its own
download folder), PostgreSQL, Redis and moto's S3 on a services host, the demo
upstream on a host of its own (`tests.hosts.services`). Each test ends with the fault
suite's checks, run in the web host against the hosts' database and bucket: no image
lost, rows and objects agreeing both ways, `verify_images` clean.
"""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.faults.processes import wait_until
from tests.hosts.services import Deployment

# On a PostgreSQL of their own whatever DATABASE_URL says: they run in the PostgreSQL
# pass only.
pytestmark = [pytest.mark.hosts, pytest.mark.faults, pytest.mark.postgres]
# The faults whose broker matters (how a lost connection's task comes back) run on both.
BOTH_BROKERS = pytest.mark.parametrize("deployment", ["redis", "rabbitmq"], indirect=True)


def keys_of(*result_ids: int) -> list[str]:
    return sorted(
        key for i in result_ids for key in (f"generations/{i}.jpg", f"thumbnails/{i}.webp")
    )


@BOTH_BROKERS
def test_an_image_generated_on_the_web_host_is_stored_by_a_worker_host_in_the_bucket(
    deployment: Deployment,
) -> None:
    deployment.start_workers(1, 2)
    result_ids = [*deployment.generate("a fox"), *deployment.generate("a heron")]

    deployment.wait_settled(result_ids, timeout=40)

    assert deployment.object_keys() == keys_of(*result_ids)
    checked = deployment.check_invariants()
    assert checked["counts"] == {"stored": 2}


@BOTH_BROKERS
def test_a_worker_host_cut_off_mid_download_loses_its_claim_to_the_other_host(
    deployment: Deployment,
) -> None:
    """The cut host's download stalls; its claim runs out, the sweep queues the result
    again, the other host stores it. Back on the network, the cut host's late record
    is refused by the claim: one object, the upstream's bytes."""
    (cut_worker,) = deployment.start_workers(1)
    (result_id,) = deployment.generate("a fox, streamed slowly [demo:slow_image=8]")
    deployment.wait_status([result_id], "storing", timeout=20)
    wait_until(deployment.image_fetches, timeout=10, what="the download to start")
    time.sleep(1)  # well into the 8-second body
    deployment.worker_hosts[0].cut()

    deployment.start_workers(2)
    deployment.wait_lease_out([result_id])
    deployment.age([result_id])
    assert deployment.sweep() == 1
    deployment.wait_settled([result_id], timeout=40)
    assert deployment.object_keys() == keys_of(result_id)

    deployment.worker_hosts[0].restore()
    wait_until(
        lambda: (
            "claim lost before recording" in cut_worker.log()
            or f"result {result_id} not stored" in cut_worker.log()
        ),
        timeout=90,
        what="the cut host's attempt to end",
    )
    row = deployment.results([result_id])[result_id]
    assert row["status"] == "stored"
    assert row["attempts"] >= 2
    assert cut_worker.running
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}


def test_redis_restarted_forgets_the_queued_results_and_the_sweep_queues_them_again(
    deployment: Deployment,
) -> None:
    """Redis keeps nothing on disk: the store tasks queued while no worker ran are gone
    when it comes back. The rows still say `pending`; the sweep queues them again."""
    result_ids = [deployment.generate(f"a lantern, number {n}")[0] for n in range(3)]
    assert deployment.queued() == 3

    deployment.restart_redis()
    assert deployment.queued() == 0
    deployment.start_workers(1, 2)
    assert {r["status"] for r in deployment.results(result_ids).values()} == {"pending"}

    deployment.age(result_ids)
    assert deployment.sweep() == 3
    deployment.wait_settled(result_ids, timeout=40)
    assert deployment.object_keys() == keys_of(*result_ids)
    assert deployment.check_invariants()["counts"] == {"stored": 3}


def test_postgresql_restarted_while_workers_store_leaves_nothing_half_written(
    deployment: Deployment,
) -> None:
    """`pg_ctl restart -m fast` cuts every connection while both workers download:
    an attempt that cannot record removes what it wrote, and its result is stored
    once the sweep queues it again."""
    # Attempts well within half the lease: past it, an attempt that cannot record
    # leaves its object to whichever attempt may have taken the row over.
    deployment.lease_seconds = 10
    deployment.start_workers(1, 2)
    result_ids = [
        deployment.generate(f"a kite, slowly, number {n} [demo:slow_image=2]")[0] for n in range(4)
    ]
    wait_until(lambda: len(deployment.image_fetches()) >= 2, timeout=20, what="two downloads")
    time.sleep(1)

    deployment.postgres.restart()

    # Every attempt ends, one way or another, within the downloads' time; none leaves
    # an object its row does not record.
    wait_until(
        lambda: (
            not any(
                r["status"] == "storing" and not deployment.lease_ran_out(i)
                for i, r in deployment.results(result_ids).items()
            )
        ),
        timeout=30,
        what="the attempts to end",
    )
    deployment.check_invariants(settled=False)

    deployment.wait_lease_out(result_ids)
    deployment.age(result_ids)
    deployment.sweep()
    deployment.wait_settled(result_ids, timeout=40)
    assert deployment.object_keys() == keys_of(*result_ids)
    assert deployment.check_invariants()["counts"] == {"stored": 4}


@BOTH_BROKERS
def test_a_stuck_worker_loses_its_claim_and_its_late_record_is_refused_when_it_wakes(
    deployment: Deployment,
) -> None:
    """A worker stopped (SIGSTOP) mid-download holds its claim until the lease runs out;
    the other host stores the image. Woken (SIGCONT), the stuck worker finishes its
    download and its record is refused by the claim: one object, the upstream's bytes."""
    (stuck,) = deployment.start_workers(1)
    (result_id,) = deployment.generate("an owl, streamed slowly [demo:slow_image=6]")
    deployment.wait_status([result_id], "storing", timeout=20)
    wait_until(deployment.image_fetches, timeout=10, what="the download to start")
    time.sleep(1)
    stuck.signal(signal.SIGSTOP)

    deployment.start_workers(2)
    deployment.wait_lease_out([result_id])
    deployment.age([result_id])
    assert deployment.sweep() == 1
    deployment.wait_settled([result_id], timeout=40)
    assert deployment.results([result_id])[result_id]["attempts"] == 2

    stuck.signal(signal.SIGCONT)
    wait_until(
        lambda: "claim lost before recording" in stuck.log(),
        timeout=30,
        what="the stuck worker's late record",
    )
    assert deployment.results([result_id])[result_id]["status"] == "stored"
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}


def test_a_stuck_worker_that_wakes_to_a_restarted_database_keeps_the_other_hosts_image(
    deployment: Deployment,
) -> None:
    """Stuck past its lease while the other host stored the image, then woken after a
    PostgreSQL restart: the stuck worker writes the same key again and cannot record
    (its connection is gone). What it cleans up must not be the object the other
    host's row records."""
    (stuck,) = deployment.start_workers(1)
    (result_id,) = deployment.generate("a moth, streamed slowly [demo:slow_image=4]")
    deployment.wait_status([result_id], "storing", timeout=20)
    wait_until(deployment.image_fetches, timeout=10, what="the download to start")
    time.sleep(1)
    stuck.signal(signal.SIGSTOP)
    deployment.start_workers(2)
    deployment.wait_lease_out([result_id])
    deployment.age([result_id])
    assert deployment.sweep() == 1
    deployment.wait_settled([result_id], timeout=40)

    deployment.postgres.restart()
    stuck.signal(signal.SIGCONT)
    wait_until(
        lambda: (
            "store_result_image" in stuck.log()
            and ("raised unexpected" in stuck.log() or "claim lost" in stuck.log())
        ),
        timeout=30,
        what="the stuck worker's attempt to end",
    )
    assert deployment.results([result_id])[result_id]["status"] == "stored"
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}


def test_a_full_download_folder_fails_the_attempt_cleanly_and_storing_resumes_with_space(
    deployment: Deployment,
) -> None:
    """worker-1's download folder is a 256 KiB disk and the image 1 MiB: the attempt
    fails with the error recorded, the partial download removed and nothing in the
    bucket; once the disk has room, the task's next try stores the image."""
    disk = deployment.download_disk(1, size="256k")
    deployment.start_workers(1)
    (result_id,) = deployment.generate("a glacier in fine noise [demo:big=1]")

    wait_until(
        lambda: deployment.results([result_id])[result_id]["error"],
        timeout=20,
        what="the attempt to fail",
    )
    row = deployment.results([result_id])[result_id]
    assert row["status"] == "pending"  # its task tries again
    assert row["error"].startswith("disk_error: cannot write the download file"), row["error"]
    assert "No space left on device" in row["error"]
    assert disk.files() == []
    assert deployment.object_keys() == []
    deployment.check_invariants(settled=False)

    disk.resize("16m")
    deployment.wait_settled([result_id], timeout=30)
    assert deployment.results([result_id])[result_id]["attempts"] >= 2
    assert disk.files() == []
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}


def test_a_download_folder_that_fills_at_the_images_last_bytes_fails_as_cleanly(
    deployment: Deployment,
) -> None:
    """The disk has room for all of the image but its last few bytes: those wait in the
    file's buffer, and the full disk says so only when they are written out. The
    attempt still fails with the error recorded and its partial download removed."""
    (result_id,) = deployment.generate("a pebble")  # no worker yet: it waits, pending
    (url,) = deployment.sql(
        "SELECT external_url FROM generations_generationresult WHERE id = %s", (result_id,)
    )[0]
    size = len(requests.get(url, timeout=10).content)
    disk = deployment.download_disk(1, size=str((size - 1) // 4096 * 4096))
    deployment.start_workers(1)

    wait_until(
        lambda: deployment.results([result_id])[result_id]["error"],
        timeout=20,
        what="the attempt to fail",
    )
    row = deployment.results([result_id])[result_id]
    assert row["status"] == "pending", row
    assert row["error"].startswith("disk_error: cannot write the download file"), row["error"]
    assert disk.files() == []
    assert deployment.object_keys() == []

    disk.resize("16m")
    deployment.wait_settled([result_id], timeout=30)
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}


def test_s3_answering_slowly_and_with_slowdown_is_retried_within_the_tasks_time_limit(
    deployment: Deployment,
) -> None:
    """Through a proxy that answers every S3 request a second late: three `503 SlowDown`
    for one image are absorbed by the client's own retries (one attempt); four for
    another exhaust them, the attempt gives up and the task's next try stores it."""
    absorbed, exhausted = deployment.generate("a wren"), deployment.generate("a finch")
    absorbed_id, exhausted_id = absorbed[0], exhausted[0]
    front = deployment.s3_front()
    front.delay = 1.0
    front.slowdowns = {
        f"generations/{absorbed_id}.jpg": 3,
        f"generations/{exhausted_id}.jpg": 4,
    }
    deployment.start_workers(1, STORAGE_S3_ENDPOINT=front.url)

    deployment.wait_settled([absorbed_id, exhausted_id], timeout=60)

    rows = deployment.results([absorbed_id, exhausted_id])
    assert rows[absorbed_id]["attempts"] == 1
    assert rows[exhausted_id]["attempts"] == 2
    assert front.puts[f"generations/{absorbed_id}.jpg"] == 4
    assert front.puts[f"generations/{exhausted_id}.jpg"] == 5
    assert deployment.object_keys() == keys_of(absorbed_id, exhausted_id)
    assert deployment.check_invariants()["counts"] == {"stored": 2}
