"""Reference images for image-to-image: what Ark is handed for each, and what is kept
with the generation so that it can be continued later with the same images.

Ark fetches a URL reference itself, so only URLs that anyone may fetch for good are
handed to it: a URL the caller gave, Ark's own link to an image not stored yet, or a
public bucket's URL. Our stored bytes (an upload, a stored result of a private bucket
or of the local disk) go as a ``data:`` URI: a presigned URL of ours is never handed
to a third party, who could keep reading the object until it expires.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from generations.models import Generation, GenerationReference, GenerationResult
from storage_backends import images as image_storage

# Ark takes reference images of up to 10 MB each.
MAX_REFERENCE_BYTES = 10 * 1024 * 1024

Kind = GenerationReference.Kind


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image for image-to-image: a URL, one of our stored results, or the
    checked bytes of an uploaded image (with the type its bytes say)."""

    url: str = ""
    result: GenerationResult | None = None
    data: bytes | None = None
    content_type: str = ""
    extension: str = ""
    sha256: str = ""

    @property
    def kind(self) -> str:
        if self.result is not None:
            return Kind.RESULT
        if self.data is not None:
            return Kind.UPLOAD
        return Kind.URL


def data_uri(*, content_type: str, data: bytes) -> str:
    """``data:image/png;base64,...``, as Ark takes an image given in the request."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def references_for_upstream(references: Sequence[ReferenceImage]) -> str | list[str] | None:
    """What Ark's ``image`` is given: nothing, one reference, or the list, in order."""
    handed = [reference_for_upstream(reference) for reference in references]
    if not handed:
        return None
    return handed[0] if len(handed) == 1 else handed


def reference_for_upstream(reference: ReferenceImage) -> str:
    """A URL Ark may fetch, or a ``data:`` URI of bytes we hold (see the module's note)."""
    if reference.data is not None:
        return data_uri(content_type=reference.content_type, data=reference.data)
    result = reference.result
    if result is None:
        return reference.url
    if result.is_stored:
        public = image_storage.public_url(backend=result.storage_backend, key=result.storage_key)
        if public:
            return public
        if result.byte_size and result.byte_size <= MAX_REFERENCE_BYTES:
            with image_storage.open_object(
                backend=result.storage_backend, key=result.storage_key
            ) as fh:
                return data_uri(content_type=result.content_type, data=fh.read())
    # Not stored (yet): Ark's own signed link to it, which Ark handed out in the first place.
    return result.external_url


def kept_reference(reference: GenerationReference) -> ReferenceImage:
    """A reference kept with an earlier generation, to give a new one: its upload's
    bytes are read back from storage (and kept again with the new generation)."""
    if reference.kind == Kind.UPLOAD:
        with image_storage.open_object(
            backend=reference.storage_backend, key=reference.storage_key
        ) as fh:
            data = fh.read()
        return ReferenceImage(
            data=data,
            content_type=reference.content_type,
            extension=reference.storage_key.rsplit(".", 1)[-1],
            sha256=reference.sha256,
        )
    if reference.kind == Kind.RESULT and reference.result is not None:
        return ReferenceImage(result=reference.result)
    return ReferenceImage(url=reference.url)


def generation_references_record(
    *, generation: Generation, references: Sequence[ReferenceImage]
) -> list[GenerationReference]:
    """Keep the generation's references: each upload written to storage first, then
    every row, so that no row names an object that is not there. When a write or the
    rows fail, the uploads already written are deleted: the caller's transaction rolls
    the generation back, and no object may be left that no row names."""
    backend = image_storage.active_backend()
    rows: list[GenerationReference] = []
    written: list[str] = []
    try:
        for position, reference in enumerate(references):
            row = GenerationReference(generation=generation, position=position, kind=reference.kind)
            if reference.data is not None:
                key = image_storage.reference_key(
                    generation_id=generation.pk, position=position, extension=reference.extension
                )
                image_storage.save_object_bytes(backend=backend, key=key, data=reference.data)
                written.append(key)
                row.storage_backend = backend
                row.storage_key = key
                row.content_type = reference.content_type
                row.byte_size = len(reference.data)
                row.sha256 = reference.sha256
            elif reference.result is not None:
                row.result = reference.result
            else:
                row.url = reference.url
            rows.append(row)
        return GenerationReference.objects.bulk_create(rows)
    except BaseException:
        if written:
            image_storage.delete_objects(backend=backend, keys=written)
        raise
