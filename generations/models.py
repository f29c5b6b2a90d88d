"""The domain: prompts, models, generations, their results and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from .checks import is_safe_external_url, parse_id


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
    class Provider(models.TextChoices):
        ARK = "ark", "Volcengine Ark"
        DEMO = "demo", "Demo upstream"

    name = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=10, choices=Provider.choices, default=Provider.ARK)
    upstream_model_id = models.CharField(max_length=200)
    default_params = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Defaults sent with every request (size, watermark, guidance_scale, ...) and "
            "the model's capabilities under 'capabilities' (seed, guidance_scale, "
            "text_to_image, image_to_image, sequential)."
        ),
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ImageModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def capabilities(self) -> set[str]:
        return set(self.default_params.get("capabilities", []))


class Generation(models.Model):
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

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Generation {self.pk}: {self.prompt_text[:50]}"


class GenerationResultQuerySet(models.QuerySet["GenerationResult"]):
    def with_image(self) -> GenerationResultQuerySet:
        return self.filter(status=GenerationResult.Status.SUCCESS)

    def not_stored(self) -> GenerationResultQuerySet:
        return self.with_image().exclude(storage_status=GenerationResult.StorageStatus.STORED)

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
    params_override = models.JSONField(default=dict, blank=True)

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

    def params_used_json(self, *, external_url: str | None = None) -> dict[str, Any]:
        """`paramsUsed` as clients and bundles have always read it: what was sent, with
        `externalImageUrl` and `storageError` rendered from their columns (the truth).

        `external_url` is what the caller may show of the URL (None: leave it out).
        """
        params = {k: v for k, v in self.params_used.items() if k not in COLUMN_PARAM_KEYS}
        if external_url:
            params["externalImageUrl"] = external_url
        if self.storage_error:
            params["storageError"] = self.storage_error
        return params

    @property
    def is_lost(self) -> bool:
        """Nothing stored and the external URL is dead: the image cannot come back."""
        return (
            self.status == self.Status.SUCCESS
            and not self.is_stored
            and (self.storage_status == self.StorageStatus.EXPIRED or self.external_url_expired)
        )


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
