"""The fault suite's closing checks, run inside a test host with that host's settings.

The hosts' database and bucket are the ones this process's settings name, so the
existing checks run unchanged: every result stored with the upstream's bytes (fetched
again from the demo upstream) or keeping its external URL with the error recorded; the
bucket, listed, agreeing with the rows both ways; `verify_images` clean. Prints the
counts by status and the bucket's keys as one line of JSON; exits non-zero otherwise.
With `--in-flight`, results may still be on their way (`pending`, `storing`).
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import django


def main() -> None:
    django.setup()
    import boto3
    import requests

    from generations.models import GenerationResult
    from tests.faults.invariants import assert_no_image_lost, s3_objects

    client = boto3.client(
        "s3",
        endpoint_url=os.environ["STORAGE_S3_ENDPOINT"],
        aws_access_key_id=os.environ["STORAGE_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["STORAGE_S3_SECRET_ACCESS_KEY"],
        region_name=os.environ["STORAGE_S3_REGION"],
    )
    objects = s3_objects(client, os.environ["STORAGE_S3_BUCKET"])

    def fetch(url: str) -> bytes:
        response = requests.get(url, timeout=30)
        response.raise_for_status()
        return response.content

    # Fetched side by side: a slow image takes as long to fetch again as it did first.
    urls = list(
        GenerationResult.objects.with_image()
        .filter(storage_status=GenerationResult.StorageStatus.STORED)
        .values_list("external_url", flat=True)
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        served = dict(zip(urls, pool.map(fetch, urls), strict=True))

    def upstream(result: GenerationResult) -> bytes | None:
        return served.get(result.external_url)

    counts = assert_no_image_lost(
        objects=objects, upstream=upstream, backend="s3", settled="--in-flight" not in sys.argv
    )
    print(json.dumps({"counts": counts, "objects": sorted(objects)}))


if __name__ == "__main__":
    main()
