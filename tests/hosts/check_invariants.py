"""The fault suite's closing checks, run inside a test host with that host's settings.

The hosts' database and bucket are the ones this process's settings name, so the
existing checks run unchanged: every result stored with the upstream's bytes (fetched
again from the demo upstream) or keeping its external URL with the error recorded; the
bucket, listed, agreeing with the rows both ways; `verify_images` clean. Prints the
counts by status and the bucket's keys as one line of JSON; exits non-zero otherwise.
"""

from __future__ import annotations

import json
import os

import django


def main() -> None:
    django.setup()
    import boto3
    import requests

    from tests.faults.invariants import assert_no_image_lost, s3_objects

    client = boto3.client(
        "s3",
        endpoint_url=os.environ["STORAGE_S3_ENDPOINT"],
        aws_access_key_id=os.environ["STORAGE_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["STORAGE_S3_SECRET_ACCESS_KEY"],
        region_name=os.environ["STORAGE_S3_REGION"],
    )
    objects = s3_objects(client, os.environ["STORAGE_S3_BUCKET"])

    def upstream(result: object) -> bytes:
        response = requests.get(result.external_url, timeout=10)  # type: ignore[attr-defined]
        response.raise_for_status()
        return response.content

    counts = assert_no_image_lost(objects=objects, upstream=upstream, backend="s3")
    print(json.dumps({"counts": counts, "objects": sorted(objects)}))


if __name__ == "__main__":
    main()
