"""The domain: prompts, models, generations, their results and API tokens."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from .checks import is_safe_external_url, parse_id
from .sizes import RESOLUTIONS, SizeRefused, SizeRules, check_size

# Ark's ceilings for one call: reference images, and images in a group.
MAX_REFERENCE_IMAGES = 14
MAX_IMAGES_PER_CALL = 15
OPTIMIZE_PROMPT_MODES = ("standard", "fast")
OUTPUT_FORMATS = ("png", "jpeg")


class Prompt(models.Model):
    text = models.TextField()
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title or self.text[:60]


class ImageModelQuerySet(models.QuerySet["ImageModel"]):
    def enabled(self) -> ImageModelQuerySet:
        return self.filter(enabled=True)

    def matching(self, ref: int | str) -> ImageModelQuerySet:
        """Models named by an id, a display name or an upstream model id.

        A string is an id only when it is ASCII digits ("٣" and "²" are looked up as
        names); a number outside the id range names no model.
        """
        model_id = parse_id(ref)
        if model_id is not None:
            return self.filter(pk=model_id)
        if not isinstance(ref, str):
            return self.none()
        return self.filter(Q(name=ref) | Q(upstream_model_id=ref))


class ImageModel(models.Model):
    """A model to generate with, what it takes, its size rules and its price.

    The capabilities and size rules are data, read from Ark's documentation and kept
    here so that an admin can follow Ark when it changes them; requests are checked
    against them before any call (see ``generations.sizes``).
    """

    class Provider(models.TextChoices):
        ARK = "ark", "Volcengine Ark"
        DEMO = "demo", "Demo upstream"

    name = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=10, choices=Provider.choices, default=Provider.ARK)
    upstream_model_id = models.CharField(
        max_length=200,
        help_text=(
            "What Ark is asked for: a model id such as doubao-seedream-4-5-251128, or an "
            "endpoint id (ep-...)."
        ),
    )
    default_params = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Defaults sent with every request (size, watermark, guidance_scale, ...); "
            "a request's own values win."
        ),
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # What it takes.
    requires_reference = models.BooleanField(
        default=False, help_text="It edits a reference image and cannot work from text alone."
    )
    max_reference_images = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_REFERENCE_IMAGES)],
        help_text="How many reference images one call takes; 0: none (text only).",
    )
    max_images = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_IMAGES_PER_CALL)],
        help_text=(
            "The most images one call may return (a group, max_images); 1: one image a call."
        ),
    )
    streams = models.BooleanField(
        default=False, help_text="It can stream each image as it is made (stream: true)."
    )
    takes_seed = models.BooleanField(default=False, help_text="It takes a seed.")
    takes_guidance_scale = models.BooleanField(
        default=False, help_text="It takes a guidance scale."
    )
    optimize_prompt_modes = models.JSONField(
        default=list,
        blank=True,
        help_text="The optimize_prompt_options modes it takes; none: it takes no such option.",
    )
    output_formats = models.JSONField(
        default=list,
        blank=True,
        help_text="The output_format values it takes; none: it always answers JPEG.",
    )

    # Its size rules; an empty bound is no limit of that kind.
    size_labels = models.JSONField(
        default=list, blank=True, help_text="The resolution labels it takes (1K, 2K, 3K, 4K)."
    )
    takes_adaptive = models.BooleanField(
        default=False, help_text="It takes size adaptive (the shape of the reference image)."
    )
    takes_width_height = models.BooleanField(
        default=True, help_text="It takes a size as WIDTHxHEIGHT, within the bounds below."
    )
    min_pixels = models.PositiveIntegerField(
        null=True, blank=True, help_text="The fewest pixels (width x height) it makes."
    )
    max_pixels = models.PositiveIntegerField(
        null=True, blank=True, help_text="The most pixels (width x height) it makes."
    )
    min_aspect_ratio = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001)],
        help_text="The narrowest width / height it makes, such as 0.0625 for 1:16.",
    )
    max_aspect_ratio = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001)],
        help_text="The widest width / height it makes, such as 16 for 16:1.",
    )
    min_side = models.PositiveIntegerField(
        null=True, blank=True, help_text="The shortest width or height it makes, in pixels."
    )
    max_side = models.PositiveIntegerField(
        null=True, blank=True, help_text="The longest width or height it makes, in pixels."
    )

    # What an image costs.
    price_per_image = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="What Ark charges for each image it makes; empty: not known.",
    )
    currency = models.CharField(
        max_length=3,
        default="CNY",
        blank=True,
        validators=[RegexValidator(r"^[A-Z]{3}$", "A three-letter currency code, such as CNY.")],
    )

    objects = ImageModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def capabilities(self) -> set[str]:
        """What it takes, as the upstream client reads it (``"seed"``, ``"sequential"``, ...)."""
        taken = {
            "text_to_image": not self.requires_reference,
            "image_to_image": self.max_reference_images > 0,
            "image_required": self.requires_reference,
            "seed": self.takes_seed,
            "guidance_scale": self.takes_guidance_scale,
            "sequential": self.max_images > 1,
            "stream": self.streams,
            "optimize_prompt_options": bool(self.optimize_prompt_modes),
            "output_format": bool(self.output_formats),
        }
        return {name for name, yes in taken.items() if yes}

    @property
    def size_rules(self) -> SizeRules:
        return SizeRules(
            labels=tuple(self.size_labels or ()),
            adaptive=self.takes_adaptive,
            width_height=self.takes_width_height,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            min_aspect_ratio=self.min_aspect_ratio,
            max_aspect_ratio=self.max_aspect_ratio,
            min_side=self.min_side,
            max_side=self.max_side,
        )

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field, allowed in (
            ("size_labels", RESOLUTIONS),
            ("optimize_prompt_modes", OPTIMIZE_PROMPT_MODES),
            ("output_formats", OUTPUT_FORMATS),
        ):
            value = getattr(self, field)
            if not isinstance(value, list) or any(v not in allowed for v in value):
                errors[field] = f"A list of some of {', '.join(allowed)}."
        for low, high in (
            ("min_pixels", "max_pixels"),
            ("min_aspect_ratio", "max_aspect_ratio"),
            ("min_side", "max_side"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value > high_value:
                errors[high] = f"Less than the {low.replace('_', ' ')}."
        if self.requires_reference and not self.max_reference_images:
            errors["max_reference_images"] = "It needs a reference image: at least 1."
        if errors:
            raise ValidationError(errors)
        default_size = (self.default_params or {}).get("size")
        if default_size:
            try:
                check_size(default_size, self.size_rules, model_name=self.name or "This model")
            except SizeRefused as exc:
                raise ValidationError({"default_params": f"Its default size: {exc}."}) from None


class GenerationQuerySet(models.QuerySet["Generation"]):
    def lease_expired(self) -> GenerationQuerySet:
        """Running, but the process calling the upstream has not renewed its lease: it
        died (or never began, and its queued task is now too late to call)."""
        return self.filter(status=Generation.Status.RUNNING, lease_expires_at__lt=timezone.now())


class Generation(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        INTERRUPTED = "interrupted", "Interrupted"

    prompt = models.ForeignKey(
        Prompt, null=True, blank=True, on_delete=models.SET_NULL, related_name="generations"
    )
    prompt_text = models.TextField()
    size = models.CharField(max_length=20, blank=True)
    params = models.JSONField(default=dict, blank=True)
    reference_image_url = models.TextField(blank=True)
    reference_result = models.ForeignKey(
        "GenerationResult",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="generations",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # What Ark counted (and bills), summed over the generation's calls; null when Ark
    # sent no usage.
    usage_generated_images = models.PositiveIntegerField(null=True, blank=True)
    usage_output_tokens = models.PositiveBigIntegerField(null=True, blank=True)

    # Running while the models are being called; done when every call is over;
    # interrupted when the process calling them died (its lease ran out) and what it
    # received so far is all there will be.
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DONE)
    # While running: the process calling the upstream renews this as it goes; past it,
    # the sweep marks the generation interrupted.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the upstream was first asked: set once, by the one task delivery that may
    # call (a redelivered task finds it set and never asks, and is never billed, twice).
    upstream_started_at = models.DateTimeField(null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The sweep's look for expired leases: the few running rows, never the rest.
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="running"),
                name="generation_running_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"Generation {self.pk}: {self.prompt_text[:50]}"


class GenerationReference(models.Model):
    """One reference image of a generation, in the order it was given to the models.

    A URL is kept as given; a stored result by its row; an uploaded file as an object
    in our storage (with its hash), so that the generation can be continued later with
    the same images although the upload itself is long gone.
    """

    class Kind(models.TextChoices):
        URL = "url", "URL"
        RESULT = "result", "Stored result"
        UPLOAD = "upload", "Upload"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="references")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    url = models.TextField(blank=True)
    result = models.ForeignKey(
        "GenerationResult", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    storage_backend = models.CharField(max_length=10, blank=True)
    storage_key = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=50, blank=True)
    byte_size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["generation", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "position"], name="generation_reference_position"
            ),
        ]

    def __str__(self) -> str:
        return f"Reference {self.position} of generation {self.generation_id} ({self.kind})"


class GenerationResultQuerySet(models.QuerySet["GenerationResult"]):
    def with_image(self) -> GenerationResultQuerySet:
        return self.filter(status=GenerationResult.Status.SUCCESS)

    def storable(self) -> GenerationResultQuerySet:
        """Results a store attempt may claim now (pending, failed, or a lost claim)."""
        S = GenerationResult.StorageStatus
        lease_cutoff = timezone.now() - timedelta(seconds=settings.STORAGE_LEASE_SECONDS)
        return self.with_image().filter(
            Q(storage_status__in=[S.PENDING, S.FAILED])
            | Q(storage_status=S.STORING, storage_claimed_at__lt=lease_cutoff)
        )

    def awaiting_derivatives(self) -> GenerationResultQuerySet:
        """Stored, but not yet decoded whole and given a thumbnail (the derivatives)."""
        return self.filter(storage_status=GenerationResult.StorageStatus.STORED, thumbnail_key="")

    def at_risk(self, *, within: timedelta = timedelta(hours=6)) -> GenerationResultQuerySet:
        """Not stored, and the external URL dies soon (or its expiry is unknown)."""
        S = GenerationResult.StorageStatus
        now = timezone.now()
        return (
            self.with_image()
            .filter(storage_status__in=[S.PENDING, S.STORING, S.FAILED])
            .filter(
                Q(external_url_expires_at__isnull=True)
                | Q(external_url_expires_at__lte=now + within)
            )
            .filter(Q(external_url_expires_at__isnull=True) | Q(external_url_expires_at__gt=now))
        )

    def mark_not_stored(self, *, status: str, error: str) -> int:
        """Reset these rows to "no stored image" (see `not_stored_fields`); `image_url`
        goes back to the external URL, which clients then use. Returns the rows changed."""
        return self.update(
            **not_stored_fields(status=status, error=error), image_url=F("external_url")
        )

    def deadline_first(self) -> GenerationResultQuerySet:
        return self.order_by(models.F("external_url_expires_at").asc(nulls_last=True), "-id")


# Keys that `params_used` carried before the columns were the only record of them.
COLUMN_PARAM_KEYS = ("externalImageUrl", "storageError")
# How much of the SHA-256 names a version of a result's image in its URL (`?v=`): 64
# bits tell apart every image one result will ever hold, and keep the page short.
IMAGE_VERSION_LENGTH = 16


def not_stored_fields(*, status: str, error: str) -> dict[str, Any]:
    """The columns of a row that holds no stored image: the one rule for failing a store
    attempt, repairing a broken object and exporting a row whose bytes stayed behind.

    The external URL and its expiry are kept: they are what a re-store fetches.
    """
    return {
        "storage_status": status,
        "storage_error": error,
        "storage_backend": "",
        "storage_key": "",
        "thumbnail_key": "",
        "content_type": "",
        "byte_size": None,
        "sha256": "",
        "width": None,
        "height": None,
        "stored_at": None,
        "storage_claim": None,
    }


class GenerationResult(models.Model):
    class Status(models.TextChoices):
        SUCCESS = "SUCCESS", "Success"
        FAILED = "FAILED", "Failed"

    class StorageStatus(models.TextChoices):
        NONE = "", "No image"
        PENDING = "pending", "Pending"
        STORING = "storing", "Storing"
        STORED = "stored", "Stored"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="results")
    model = models.ForeignKey(
        ImageModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="results"
    )
    upstream_model_id = models.CharField(max_length=200)
    image_index = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    error_code = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)

    image_url = models.TextField(blank=True, help_text="What clients use: stable once stored.")
    external_url = models.TextField(blank=True)
    external_url_expires_at = models.DateTimeField(null=True, blank=True)
    params_used = models.JSONField(default=dict, blank=True)

    storage_status = models.CharField(
        max_length=10, choices=StorageStatus.choices, blank=True, default="", db_index=True
    )
    storage_backend = models.CharField(max_length=10, blank=True)
    storage_key = models.CharField(max_length=255, blank=True)
    thumbnail_key = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=50, blank=True)
    byte_size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    storage_attempts = models.PositiveIntegerField(default=0)
    storage_error = models.TextField(blank=True)
    storage_claimed_at = models.DateTimeField(null=True, blank=True)
    storage_claim = models.UUIDField(null=True, blank=True)
    stored_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    favorite = models.BooleanField(default=False, help_text="Starred: one star per installation.")
    tags: models.ManyToManyField[Tag, ResultTag] = models.ManyToManyField(
        "Tag", through="ResultTag", related_name="results", blank=True
    )

    objects = GenerationResultQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["storage_status", "external_url_expires_at"], name="result_storage_deadline"
            ),
            # The gallery's filtered pages: WHERE <filter> AND id < cursor ORDER BY id DESC.
            models.Index(fields=["storage_status", "-id"], name="result_storage_newest"),
            models.Index(fields=["status", "-id"], name="result_status_newest"),
            models.Index(fields=["model", "-id"], name="result_model_newest"),
            # Few results are starred: the favorites' pages walk an index of them alone.
            models.Index(fields=["-id"], name="result_favorite_newest", condition=Q(favorite=True)),
            # The sweep's look for stored results whose thumbnail was never made: a few
            # rows among millions, found without reading the others.
            models.Index(
                fields=["stored_at"],
                condition=Q(storage_status="stored", thumbnail_key=""),
                name="result_awaiting_derivatives",
            ),
        ]

    def __str__(self) -> str:
        return f"Result {self.pk} ({self.upstream_model_id}, {self.status})"

    def get_absolute_url(self) -> str:
        return reverse("gallery:detail", args=[self.pk])

    @property
    def stable_url(self) -> str:
        return reverse("api:image", args=[self.pk])

    @property
    def image_version(self) -> str:
        """What names the stored bytes in a versioned URL; empty when nothing is stored."""
        return self.sha256[:IMAGE_VERSION_LENGTH] if self.is_stored else ""

    @property
    def versioned_url(self) -> str:
        """The stable URL naming these very bytes: a browser may keep them for good."""
        return self._versioned(self.stable_url)

    @property
    def versioned_thumbnail_url(self) -> str:
        """The thumbnail at a versioned URL: made from the stored bytes, it changes with them."""
        return self._versioned(reverse("api:thumbnail", args=[self.pk]))

    def _versioned(self, url: str) -> str:
        version = self.image_version
        return f"{url}?v={version}" if version else url

    @property
    def is_stored(self) -> bool:
        return self.storage_status == self.StorageStatus.STORED

    @property
    def has_thumbnail(self) -> bool:
        """Stored and given its thumbnail. A stored image waits a moment without one,
        until its derivatives are made: the gallery shows a placeholder meanwhile."""
        return self.is_stored and bool(self.thumbnail_key)

    @property
    def external_url_expired(self) -> bool:
        return bool(self.external_url_expires_at and self.external_url_expires_at <= timezone.now())

    @property
    def external_url_is_safe(self) -> bool:
        """Whether the external URL may be linked or redirected to: rows written before
        the upstream's URLs were checked may hold a `javascript:` one."""
        return is_safe_external_url(self.external_url)

    def params_sent(self) -> dict[str, Any]:
        """The parameters sent upstream, without the copies of columns older rows carry."""
        return {k: v for k, v in self.params_used.items() if k not in COLUMN_PARAM_KEYS}

    def params_used_json(self, *, external_url: str | None = None) -> dict[str, Any]:
        """`paramsUsed` as clients and bundles have always read it: what was sent, with
        `externalImageUrl` and `storageError` rendered from their columns (the truth).

        `external_url` is what the caller may show of the URL (None: leave it out).
        """
        params = self.params_sent()
        if external_url:
            params["externalImageUrl"] = external_url
        if self.storage_error:
            params["storageError"] = self.storage_error
        return params

    @property
    def is_lost(self) -> bool:
        """Nothing stored and the external URL is dead, or there never was one (an image
        that came in Ark's answer and failed to store): the image cannot come back."""
        S = self.StorageStatus
        return (
            self.status == self.Status.SUCCESS
            and not self.is_stored
            and (
                self.storage_status == S.EXPIRED
                or self.external_url_expired
                or (self.storage_status == S.FAILED and not self.external_url)
            )
        )

    @property
    def display_status(self) -> str:
        """The state a card, the detail page and the gallery's live updates show: "lost"
        (see `is_lost`), else the storage status; empty for a result with no image."""
        return "lost" if self.is_lost else self.storage_status

    @property
    def tag_names(self) -> list[str]:
        """The names of its tags, sorted as people read them. Reads `tags.all()`, so a
        list of results prefetches `tags` to show them without a query per result."""
        return [tag.name for tag in sorted(self.tags.all(), key=lambda tag: tag.key)]


TAG_NAME_MAX_CHARS = 50
# Whatever a casefold makes of 50 characters ("ß" becomes "ss", a few become three).
_TAG_KEY_MAX_CHARS = 3 * TAG_NAME_MAX_CHARS


class InvalidTagName(ValueError):
    """A tag name we will not keep; the message says why, to the person who typed it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _collapse(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def clean_tag_name(raw: object) -> str:
    """The name a tag is kept under: trimmed, each run of spaces made one space, in one
    Unicode form (so the "é" typed on one keyboard is the "é" typed on another).

    Refused, saying why: empty, longer than TAG_NAME_MAX_CHARS, a control character (a
    tab or a newline is no part of a name anyone typed on purpose), or a comma (the
    gallery separates the tags typed into one field with commas).
    """
    if not isinstance(raw, str):
        raise InvalidTagName("a tag name must be text")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in raw):
        raise InvalidTagName("a tag name cannot hold control characters")
    name = _collapse(raw)
    if not name:
        raise InvalidTagName("a tag name cannot be empty")
    if "," in name:
        raise InvalidTagName(f"“{name}”: a tag name cannot hold a comma (commas separate tags)")
    if len(name) > TAG_NAME_MAX_CHARS:
        raise InvalidTagName(
            f"“{name[:20]}…” is longer than {TAG_NAME_MAX_CHARS} characters "
            f"({len(name)}): tags are short names"
        )
    return name


def tag_key(name: str) -> str:
    """What makes two names one tag: the same letters in any case ("Sky", "SKY", "sky")."""
    return _collapse(name).casefold()


class TagQuerySet(models.QuerySet["Tag"]):
    def named(self, name: str) -> TagQuerySet:
        """The tag called `name`, in any case or spacing (at most one)."""
        return self.filter(key=tag_key(name))


class Tag(models.Model):
    """A free-form label on results, created by typing it; renamed or merged in the admin."""

    name = models.CharField(max_length=TAG_NAME_MAX_CHARS)
    key = models.CharField(
        max_length=_TAG_KEY_MAX_CHARS,
        unique=True,
        editable=False,
        help_text="The name in one case: two tags never differ by case alone.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TagQuerySet.as_manager()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.key = tag_key(self.name)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """The admin's rename: the typing rules, and no second tag under another case."""
        try:
            self.name = clean_tag_name(self.name)
        except InvalidTagName as exc:
            raise ValidationError({"name": exc.message}) from None
        clash = Tag.objects.named(self.name).exclude(pk=self.pk).first()
        if clash is not None:
            raise ValidationError(
                {"name": f"The tag “{clash.name}” exists already: merge the two instead."}
            )


class ResultTag(models.Model):
    """One tag on one result, and since when."""

    result = models.ForeignKey(GenerationResult, on_delete=models.CASCADE, related_name="tag_links")
    # No index of its own: the unique (tag, result) below starts with it.
    tag = models.ForeignKey(
        Tag, on_delete=models.CASCADE, related_name="result_links", db_index=False
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # In this order so that a tag's results are one index range by result id:
            # the tag filter's keyset pages read it from the cursor on.
            models.UniqueConstraint(fields=["tag", "result"], name="result_tag_once"),
        ]

    def __str__(self) -> str:
        return f"{self.tag} on result {self.result_id}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A bearer token for scripts; only its SHA-256 is kept."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def new_key() -> str:
        return "gv_" + secrets.token_urlsafe(32)


def _worker_seen_since() -> Any:
    return timezone.now() - timedelta(seconds=settings.WORKER_SEEN_WITHIN_SECONDS)


class WorkerHeartbeatQuerySet(models.QuerySet["WorkerHeartbeat"]):
    def alive(self) -> WorkerHeartbeatQuerySet:
        """Workers seen within `WORKER_SEEN_WITHIN_SECONDS`: a worker killed, cut off or
        stopped (SIGSTOP) falls out of this on its own, since only a running one beats."""
        return self.filter(seen_at__gte=_worker_seen_since())

    def storing(self) -> WorkerHeartbeatQuerySet:
        """Workers that take the storing queue (a generator-only worker stores nothing)."""
        return self.filter(queues__contains=f",{settings.CELERY_TASK_DEFAULT_QUEUE},")


class WorkerHeartbeat(models.Model):
    """A Celery worker's last sign of life, written by the worker itself every
    `WORKER_HEARTBEAT_SECONDS` (`generations.heartbeat`). Kept in the database, which
    every host shares whichever broker it uses, so `/healthz` and the gallery can say
    whether anything is storing images."""

    hostname = models.CharField(max_length=255, help_text="Celery's node name.")
    queues = models.CharField(max_length=255, blank=True, help_text="As ',a,b,'.")
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        ordering = ["hostname", "pid"]
        # Two workers started without `-n` share a node name; their processes differ.
        constraints = [
            models.UniqueConstraint(fields=["hostname", "pid"], name="heartbeat_worker_process")
        ]

    def __str__(self) -> str:
        return f"{self.hostname} (pid {self.pid})"

    @property
    def is_alive(self) -> bool:
        return self.seen_at >= _worker_seen_since()


SHARE_SIGNING_SALT = "genvault.share-link"


def new_share_key() -> str:
    return secrets.token_urlsafe(12)


class ShareQuerySet(models.QuerySet["Share"]):
    def active(self) -> ShareQuerySet:
        """Shares whose link still opens: not revoked and not expired, as of now."""
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class Share(models.Model):
    """A link that shows exactly these results to anyone holding it, until it expires or is
    revoked.

    What was shared is fixed when the link is made: one result, a selection, or the
    results a tag had then (a snapshot: the link never shows more than the person who
    made it saw, so tagging something later cannot publish it by accident). The link is
    `key` signed with SECRET_KEY (`django.core.signing`): `key` is random, so a link
    tells nothing of how many shares or results there are, and a link that was altered,
    or made with another secret, opens nothing.
    """

    class Kind(models.TextChoices):
        RESULT = "result", "One result"
        SELECTION = "selection", "A selection"
        TAG = "tag", "A tag's results"

    key = models.CharField(max_length=32, unique=True, default=new_share_key, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    tag_name = models.CharField(
        max_length=TAG_NAME_MAX_CHARS, blank=True, help_text="The tag shared, as it was named."
    )
    results: models.ManyToManyField[GenerationResult, Any] = models.ManyToManyField(
        GenerationResult, related_name="shares"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="shares",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Share {self.pk}: {self.describe()}"

    def describe(self) -> str:
        """What was shared, in words for the gallery, the admin and the log."""
        if self.kind == self.Kind.TAG:
            return f"the tag “{self.tag_name}”"
        ids = sorted(result.pk for result in self.results.all())  # prefetch `results` for many
        if self.kind == self.Kind.RESULT:
            return f"result {ids[0]}" if ids else "a deleted result"
        return f"a selection of {len(ids)}"

    @property
    def token(self) -> str:
        from django.core import signing

        return signing.Signer(salt=SHARE_SIGNING_SALT).sign(self.key)

    @property
    def path(self) -> str:
        return reverse("shared:page", args=[self.token])

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.expires_at > timezone.now() else "expired"
