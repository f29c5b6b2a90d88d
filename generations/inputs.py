"""Validating what a caller asks to generate, for the JSON API and the generate form.

Every rule answers with an `InvalidInput` naming the field, so that bad input gets
a clear error before anything is called or written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from .checks import parse_id
from .fetch import is_public_address
from .imaging import ImageRefused, check_image
from .models import (
    MAX_REFERENCE_IMAGES,
    OPTIMIZE_PROMPT_MODES,
    OUTPUT_FORMATS,
    GenerationReference,
    GenerationResult,
    ImageModel,
    Prompt,
)
from .services.references import MAX_REFERENCE_BYTES, ReferenceImage, kept_reference
from .sizes import SizeRefused, check_size, normalize_size

MAX_PROMPT_CHARS = 4000
MAX_MODELS = 10
MAX_REFERENCE_URL_CHARS = 4096
MAX_DATA_URI_CHARS = 14 * 1024 * 1024


class InvalidInput(Exception):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class GenerateInput:
    models: list[ImageModel]
    prompt_text: str = ""
    prompt: Prompt | None = None
    size: str = ""
    # Per model (by primary key): a size of its own, which wins over `size`.
    sizes: dict[int, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    references: list[ReferenceImage] = field(default_factory=list)
    # False: answer at once and call the models in the background.
    wait: bool = True


# name -> (accepted types, check, what the user is told)
_PARAM_RULES: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "seed": ((int,), lambda v: -1 <= v <= 2_147_483_647, "an integer from -1 to 2147483647"),
    "guidance_scale": ((int, float), lambda v: 1 <= v <= 10, "a number from 1 to 10"),
    "watermark": ((bool,), lambda v: True, "true or false"),
    "max_images": ((int,), lambda v: 1 <= v <= 15, "an integer from 1 to 15"),
    "output_format": ((str,), lambda v: v in OUTPUT_FORMATS, " or ".join(OUTPUT_FORMATS)),
    "optimize_prompt_options": (
        (dict,),
        lambda v: set(v) == {"mode"} and v["mode"] in OPTIMIZE_PROMPT_MODES,
        'an object {"mode": ' + " or ".join(f'"{m}"' for m in OPTIMIZE_PROMPT_MODES) + "}",
    ),
}


def parse_generate(data: Any) -> GenerateInput:
    """Turn a decoded JSON body into a GenerateInput, or raise InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    fields = {
        "prompt",
        "promptId",
        "modelIds",
        "size",
        "sizes",
        "params",
        "image",
        "responseFormat",
        "wait",
    }
    unknown = set(data) - fields
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])

    prompt_text, prompt = _parse_prompt(data.get("prompt"), data.get("promptId"))
    models = parse_models(data.get("modelIds"))
    size = parse_size(data.get("size"))
    sizes = parse_sizes(data.get("sizes"), models=models)
    check_sizes(models, size=size, sizes=sizes)
    params = parse_params(data.get("params"))
    check_model_options(models, params=params)
    response_format = parse_response_format(data.get("responseFormat"))
    if response_format:
        params["response_format"] = response_format
    references = parse_references(data.get("image"))
    check_models_fit(models, references=references)
    wait = data.get("wait", True)
    if not isinstance(wait, bool):
        raise InvalidInput("wait must be true or false", field="wait")
    return GenerateInput(
        models=models,
        prompt_text=prompt_text,
        prompt=prompt,
        size=size,
        sizes=sizes,
        params=params,
        references=references,
        wait=wait,
    )


def _parse_prompt(text: Any, prompt_id: Any) -> tuple[str, Prompt | None]:
    if text is not None and prompt_id is not None:
        raise InvalidInput("give either prompt or promptId, not both", field="prompt")
    if prompt_id is not None:
        if isinstance(prompt_id, bool) or not isinstance(prompt_id, int):
            raise InvalidInput("promptId must be an integer", field="promptId")
        number = parse_id(prompt_id)
        prompt = Prompt.objects.filter(pk=number).first() if number is not None else None
        if prompt is None:
            raise InvalidInput(f"no prompt with id {prompt_id}", field="promptId")
        return prompt.text, prompt
    return parse_prompt_text(text), None


def parse_prompt_text(text: Any) -> str:
    if text is None:
        raise InvalidInput("a prompt is required", field="prompt")
    if not isinstance(text, str):
        raise InvalidInput("prompt must be a string", field="prompt")
    text = text.strip()
    if not text:
        raise InvalidInput("the prompt is empty", field="prompt")
    if "\x00" in text:  # PostgreSQL cannot store it: refuse it here, not with a 500 later
        raise InvalidInput("the prompt holds a NUL character", field="prompt")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInput(
            f"the prompt is longer than {MAX_PROMPT_CHARS} characters", field="prompt"
        )
    return text


def parse_models(refs: Any) -> list[ImageModel]:
    """Resolve ids, names or upstream model ids to enabled models, in order, once each."""
    if refs is None or refs == []:
        raise InvalidInput("choose at least one model", field="modelIds")
    if not isinstance(refs, list):
        raise InvalidInput("modelIds must be a list of model ids or names", field="modelIds")
    if len(refs) > MAX_MODELS:
        raise InvalidInput(f"at most {MAX_MODELS} models per request", field="modelIds")
    models: list[ImageModel] = []
    for ref in refs:
        if (
            isinstance(ref, bool)
            or not isinstance(ref, int | str)
            or (isinstance(ref, str) and (not ref.strip() or "\x00" in ref))  # NUL: see prompt
        ):
            raise InvalidInput("modelIds must hold model ids or names", field="modelIds")
        found = list(ImageModel.objects.matching(ref.strip() if isinstance(ref, str) else ref)[:2])
        if not found:
            raise InvalidInput(f"unknown model {ref!r}", field="modelIds")
        model = found[0]
        if not model.enabled:
            raise InvalidInput(f"model {model.name!r} is disabled", field="modelIds")
        if model not in models:
            models.append(model)
    return models


def parse_size(size: Any) -> str:
    """A size in the one spelling we send (``2K``, ``adaptive``, ``2048x2048``), or ""."""
    if size is None or size == "":
        return ""
    try:
        return normalize_size(size)
    except SizeRefused as exc:
        raise InvalidInput(str(exc), field="size") from None


def check_model_size(model: ImageModel, size: Any, *, field: str) -> str:
    """``size`` normalized if ``model`` takes it; an InvalidInput naming the model and its
    rule otherwise (Ark would refuse it, after the call)."""
    try:
        return check_size(size, model.size_rules, model_name=model.name)
    except SizeRefused as exc:
        raise InvalidInput(str(exc), field=field) from None


def parse_sizes(sizes: Any, *, models: list[ImageModel]) -> dict[int, str]:
    """``{"<model id, name or upstream id>": "2K", ...}``: a size per model asked for."""
    if sizes is None:
        return {}
    if not isinstance(sizes, dict):
        raise InvalidInput("sizes must be an object of model: size", field="sizes")
    by_model: dict[int, str] = {}
    for key, value in sizes.items():
        shown = key if len(key) <= 100 else key[:99] + "…"
        model = _chosen_model(key, models)
        if model is None:
            raise InvalidInput(
                f"sizes names {shown!r}, which is not one of modelIds", field=f"sizes.{shown}"
            )
        if model.pk in by_model:
            raise InvalidInput(f"sizes names {model.name!r} twice", field=f"sizes.{shown}")
        by_model[model.pk] = check_model_size(model, value, field=f"sizes.{shown}")
    return by_model


def check_sizes(models: list[ImageModel], *, size: str, sizes: dict[int, str]) -> None:
    """Every model without a size of its own takes the common ``size`` (if one is given)."""
    if not size:
        return
    for model in models:
        if model.pk not in sizes:
            check_model_size(model, size, field="size")


def _chosen_model(ref: str, models: list[ImageModel]) -> ImageModel | None:
    """The model among ``models`` that ``ref`` names: by id, display name or upstream id."""
    model_id = parse_id(ref)
    if model_id is not None:
        return next((model for model in models if model.pk == model_id), None)
    ref = ref.strip()
    return next((model for model in models if ref in (model.name, model.upstream_model_id)), None)


def parse_params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object", field="params")
    parsed: dict[str, Any] = {}
    for name, value in params.items():
        rule = _PARAM_RULES.get(name)
        if rule is None:
            raise InvalidInput(f"unknown parameter {name!r}", field=f"params.{name}")
        types, check, wanted = rule
        if (
            (isinstance(value, bool) and bool not in types)
            or not isinstance(value, types)
            or not check(value)
        ):
            raise InvalidInput(f"{name} must be {wanted}", field=f"params.{name}")
        parsed[name] = value
    return parsed


def check_model_options(models: list[ImageModel], *, params: dict[str, Any]) -> None:
    """A prompt optimization mode or an output format is sent only to the models that
    take the option at all; one of those that does not take the value asked for is
    refused, naming the model and what it takes (Ark would refuse it after the call)."""
    mode = (params.get("optimize_prompt_options") or {}).get("mode")
    output_format = params.get("output_format")
    for model in models:
        taken = model.optimize_prompt_modes or []
        if mode and taken and mode not in taken:
            raise InvalidInput(
                f"{model.name} does not take the prompt optimization mode {mode}: it takes "
                f"{' or '.join(taken)}",
                field="params.optimize_prompt_options",
            )
        formats = model.output_formats or []
        if output_format and formats and output_format not in formats:
            raise InvalidInput(
                f"{model.name} does not take the output format {output_format}: it takes "
                f"{' or '.join(formats)}",
                field="params.output_format",
            )


def parse_response_format(value: Any) -> str:
    """How Ark hands the images over: ``url`` (the default) or ``b64_json``, the bytes in
    the answer itself, stored at once and never at the mercy of an expiring link."""
    if value is None or value == "url":
        return ""
    if value == "b64_json":
        return value
    raise InvalidInput("responseFormat must be 'url' or 'b64_json'", field="responseFormat")


def parse_references(images: Any, *, field: str = "image") -> list[ReferenceImage]:
    """One reference or a list of them, in order (see `parse_reference`)."""
    if images is None or images == "" or images == []:
        return []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list):
        raise InvalidInput("image must be a URL, 'result:ID', or a list of them", field=field)
    if len(images) > MAX_REFERENCE_IMAGES:
        raise InvalidInput(
            f"at most {MAX_REFERENCE_IMAGES} reference images ({len(images)} given)", field=field
        )
    references = []
    for index, image in enumerate(images):
        if not isinstance(image, str) or not image.strip():
            raise InvalidInput(
                f"reference image {index + 1} must be a URL or 'result:ID'", field=field
            )
        references.append(parse_reference(image, field=field))
    return references


def parse_reference(image: str, *, field: str = "image") -> ReferenceImage:
    """A reference image: `result:ID` of one of our results, `reference:ID` of one kept
    with an earlier generation (to continue it), an http(s) URL, or a data: URI (checked
    as an uploaded image is)."""
    image = image.strip()
    if image.startswith("result:"):
        result_id = parse_id(image.removeprefix("result:"))
        if result_id is None:
            raise InvalidInput("image must be 'result:' followed by a result id", field=field)
        result = GenerationResult.objects.filter(
            pk=result_id, status=GenerationResult.Status.SUCCESS
        ).first()
        if result is None:
            raise InvalidInput(f"no image result with id {result_id}", field=field)
        if not result.is_stored and result.external_url_expired:
            raise InvalidInput(
                f"result {result_id} was never stored and its URL has expired", field=field
            )
        return ReferenceImage(result=result)
    if image.startswith("reference:"):
        reference_id = parse_id(image.removeprefix("reference:"))
        kept = (
            GenerationReference.objects.select_related("result").filter(pk=reference_id).first()
            if reference_id is not None
            else None
        )
        if kept is None:
            raise InvalidInput(f"no kept reference image {image!r}", field=field)
        return kept_reference(kept)
    if image.startswith("data:image/"):
        header, _, payload = image.partition(",")
        if len(image) > MAX_DATA_URI_CHARS or not header.endswith(";base64"):
            raise InvalidInput("image data URI must be base64 and at most 10 MB", field=field)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("image data URI is not valid base64", field=field) from None
        return parse_upload(data, name="the data: URI", field=field)
    if len(image) > MAX_REFERENCE_URL_CHARS:
        raise InvalidInput("image URL is too long", field=field)
    check_public_url(image, field=field)
    return ReferenceImage(url=image)


def parse_upload(data: bytes, *, name: str, field: str) -> ReferenceImage:
    """An uploaded reference image: at most 10 MB, and a whole PNG, JPEG or WebP within
    the pixel limit by the cheap checks (its bytes, never its name or declared type)."""
    if len(data) > MAX_REFERENCE_BYTES:
        raise InvalidInput(
            f"{name} is {len(data) / 1024 / 1024:.1f} MB: a reference image is at most 10 MB",
            field=field,
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference"
        path.write_bytes(data)
        try:
            info = check_image(path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS)
        except ImageRefused as exc:
            raise InvalidInput(
                f"{name} is not a PNG, JPEG or WebP image we take: {exc}", field=field
            ) from None
    return ReferenceImage(
        data=data,
        content_type=info.content_type,
        extension=info.extension,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def check_public_url(url: str, *, field: str) -> None:
    """Refuse URLs that name our own network: loopback, private or odd addresses.

    Only the literal form is checked here (the upstream fetches the reference, not
    us); our own fetch of an image resolves and checks every address itself.
    """
    if not re.fullmatch(r"[\x21-\x7e]+", url):
        # urlsplit silently drops tabs and newlines: what we check must be what is sent.
        raise InvalidInput("image URL holds spaces, control or non-ASCII characters", field=field)
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    allowed = netloc in settings.IMAGE_FETCH_ALLOWED_HOSTS
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput("image must be an https URL", field=field)
    if parts.scheme == "http" and not allowed:
        raise InvalidInput("image must be an https URL", field=field)
    if parts.username or parts.password:
        raise InvalidInput("image URL must not carry credentials", field=field)
    if allowed:
        return
    host = parts.hostname.rstrip(".")  # "localhost." is localhost
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise InvalidInput("image URL points at a local address", field=field)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if re.fullmatch(r"[0-9a-fx.]+", host):  # 2130706433, 0x7f.1 and friends
            raise InvalidInput(
                "image URL host is not a valid public address", field=field
            ) from None
        return
    # The fetch's own test: it also looks inside NAT64, 6to4, Teredo and ::a.b.c.d.
    if not is_public_address(str(address)):
        raise InvalidInput("image URL points at a private or local address", field=field)


def check_models_fit(models: list[ImageModel], *, references: list[ReferenceImage]) -> None:
    """Every model takes as many reference images as it is given: at least one for a
    model that edits, none for a model of text alone, and at most its limit."""
    given = len(references)
    for model in models:
        caps = model.capabilities
        if not given and "image_required" in caps:
            raise InvalidInput(f"model {model.name!r} needs a reference image", field="image")
        if given and caps and "image_to_image" not in caps:
            raise InvalidInput(
                f"model {model.name!r} does not take a reference image", field="image"
            )
        if given > model.max_reference_images and "image_to_image" in caps:
            raise InvalidInput(
                f"model {model.name!r} takes at most {model.max_reference_images} reference "
                f"image{'' if model.max_reference_images == 1 else 's'} ({given} given)",
                field="image",
            )
