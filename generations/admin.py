"""Django admin for every model of the domain, with a re-store action on results,
rename and merge of tags, and revoking share links."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from .models import (
    OPTIMIZE_PROMPT_MODES,
    OUTPUT_FORMATS,
    ApiToken,
    Generation,
    GenerationReference,
    GenerationResult,
    ImageModel,
    Prompt,
    ResultTag,
    Share,
    Tag,
    WorkerHeartbeat,
)
from .services.deleting import generations_delete, results_delete
from .services.organize import tags_merge
from .services.sharing import share_revoke
from .services.storing import results_restore
from .signals import announce_results_changed
from .sizes import RESOLUTIONS


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "short_text", "created_at")
    search_fields = ("title", "text")
    list_filter = ("created_at",)

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:80]


class ImageModelForm(forms.ModelForm):
    """The lists of what a model takes, as checkboxes of the values Ark knows."""

    size_labels = forms.MultipleChoiceField(
        choices=[(label, label) for label in RESOLUTIONS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=ImageModel._meta.get_field("size_labels").help_text,
    )
    optimize_prompt_modes = forms.MultipleChoiceField(
        choices=[(mode, mode) for mode in OPTIMIZE_PROMPT_MODES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=ImageModel._meta.get_field("optimize_prompt_modes").help_text,
    )
    output_formats = forms.MultipleChoiceField(
        choices=[(name, name) for name in OUTPUT_FORMATS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=ImageModel._meta.get_field("output_formats").help_text,
    )

    class Meta:
        model = ImageModel
        # The admin adds the fields of its fieldsets.
        fields = ("size_labels", "optimize_prompt_modes", "output_formats")


@admin.register(ImageModel)
class ImageModelAdmin(admin.ModelAdmin):
    form = ImageModelForm
    list_display = ("name", "upstream_model_id", "provider", "price_per_image", "enabled")
    list_filter = ("provider", "enabled", "streams")
    search_fields = ("name", "upstream_model_id")
    list_editable = ("enabled",)
    fieldsets = (
        (None, {"fields": ("name", "provider", "upstream_model_id", "enabled", "default_params")}),
        (
            "What it takes",
            {
                "fields": (
                    "requires_reference",
                    "max_reference_images",
                    "max_images",
                    "streams",
                    "takes_seed",
                    "takes_guidance_scale",
                    "optimize_prompt_modes",
                    "output_formats",
                )
            },
        ),
        (
            "Sizes",
            {
                "description": "Requests are checked against these before Ark is called.",
                "fields": (
                    "size_labels",
                    "takes_adaptive",
                    "takes_width_height",
                    ("min_pixels", "max_pixels"),
                    ("min_aspect_ratio", "max_aspect_ratio"),
                    ("min_side", "max_side"),
                ),
            },
        ),
        ("Price", {"fields": ("price_per_image", "currency")}),
    )


class GenerationResultInline(admin.TabularInline):
    model = GenerationResult
    extra = 0
    fields = ("id", "upstream_model_id", "status", "storage_status", "error_code")
    readonly_fields = fields
    show_change_link = True
    can_delete = False


class GenerationReferenceInline(admin.TabularInline):
    model = GenerationReference
    extra = 0
    fields = ("position", "kind", "url", "result", "storage_key", "content_type", "sha256")
    readonly_fields = fields
    can_delete = False


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "short_prompt", "size", "created_by", "created_at")
    list_filter = ("created_at", "size")
    search_fields = ("prompt_text",)
    raw_id_fields = ("prompt", "reference_result", "created_by")
    inlines = [GenerationReferenceInline, GenerationResultInline]
    list_select_related = ("created_by",)

    @admin.display(description="prompt")
    def short_prompt(self, obj: Generation) -> str:
        return obj.prompt_text[:80]

    # The database cascade would drop the results but keep their stored images.
    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        generations_delete(generations=Generation.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Generation]) -> None:
        generations_delete(generations=queryset)


class ResultTagInline(admin.TabularInline):
    model = ResultTag
    extra = 0
    fields = ("tag", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("tag",)
    verbose_name = "tag"


@admin.register(GenerationResult)
class GenerationResultAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "thumbnail",
        "upstream_model_id",
        "status",
        "storage_status",
        "favorite",
        "tag_list",
        "byte_size",
        "created_at",
    )
    list_filter = (
        "status",
        "storage_status",
        "favorite",
        "tags",
        "storage_backend",
        "model",
        "created_at",
    )
    search_fields = (
        "generation__prompt_text",
        "upstream_model_id",
        "sha256",
        "storage_key",
        "error_code",
    )
    list_select_related = ("model",)
    raw_id_fields = ("generation", "model")
    readonly_fields = (
        "storage_key",
        "thumbnail_key",
        "storage_backend",
        "content_type",
        "byte_size",
        "sha256",
        "width",
        "height",
        "storage_attempts",
        "storage_claimed_at",
        "storage_claim",
        "stored_at",
    )
    inlines = [ResultTagInline]
    actions = ["restore_selected", "delete_with_objects"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationResult]:
        return super().get_queryset(request).prefetch_related("tags")

    @admin.display(description="tags")
    def tag_list(self, obj: GenerationResult) -> str:
        return ", ".join(obj.tag_names) or "—"

    @admin.display(description="image")
    def thumbnail(self, obj: GenerationResult) -> str:
        if not obj.thumbnail_key or not obj.is_stored:
            return "—"
        return format_html(
            '<img src="{}" alt="" loading="lazy" width="64" style="border-radius:4px">',
            reverse("api:thumbnail", args=[obj.pk]),
        )

    @admin.action(description="Re-store selected results that are not stored")
    def restore_selected(self, request: HttpRequest, queryset: QuerySet[GenerationResult]) -> None:
        restoring = results_restore(result_ids=queryset.values_list("pk", flat=True))
        if restoring.waiting:
            self.message_user(
                request,
                f"Queued {restoring.queued} result(s) for storing; {restoring.waiting} wait as "
                "pending because the task queue is unavailable, and are stored once it is back.",
                messages.WARNING,
            )
        else:
            self.message_user(
                request, f"Queued {restoring.queued} result(s) for storing.", messages.SUCCESS
            )

    @admin.action(description="Delete selected results and their stored images")
    def delete_with_objects(
        self, request: HttpRequest, queryset: QuerySet[GenerationResult]
    ) -> None:
        deleted = results_delete(result_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Deleted {deleted} result(s).", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        results_delete(result_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[GenerationResult]) -> None:
        results_delete(result_ids=queryset.values_list("pk", flat=True))


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    """Renaming is editing a tag's name; tags that mean one thing are merged by an action."""

    list_display = ("name", "result_count", "created_at")
    search_fields = ("name",)
    fields = ("name", "created_at")
    readonly_fields = ("created_at",)
    actions = ["merge_into_first"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        return super().get_queryset(request).annotate(result_count=Count("result_links"))

    @admin.display(description="results", ordering="result_count")
    def result_count(self, obj: Tag) -> int:
        return int(getattr(obj, "result_count", 0))

    @admin.action(description="Merge selected tags into the first one listed")
    def merge_into_first(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        tags = list(queryset)  # in the order the list shows them
        if len(tags) < 2:
            self.message_user(request, "Select two tags or more to merge.", messages.WARNING)
            return
        into, *others = tags
        gained = tags_merge(into=into, tags=others)
        merged = ", ".join(f"“{tag.name}”" for tag in others)
        self.message_user(
            request,
            f"Merged {merged} into “{into.name}”: {gained} more result(s) carry it now.",
            messages.SUCCESS,
        )

    # A rename or a delete changes what every result of the tag shows.
    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        announce_results_changed()

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        announce_results_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        super().delete_queryset(request, queryset)
        announce_results_changed()


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made by `manage.py create_api_token`, which shows them once

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    """Share links are made in the gallery and the API (which check and log them); here
    they are listed, searched and revoked."""

    list_display = ("id", "what", "created_by", "created_at", "expires_at", "revoked_at", "state")
    list_filter = ("kind", "created_at", "expires_at", "revoked_at")
    search_fields = ("tag_name", "created_by__username", "results__id")
    readonly_fields = (
        "kind",
        "tag_name",
        "results",
        "created_by",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "link",
    )
    fields = readonly_fields
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Share]:
        return (
            super().get_queryset(request).select_related("created_by").prefetch_related("results")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    @admin.display(description="What")
    def what(self, obj: Share) -> str:
        return obj.describe()

    @admin.display(description="State")
    def state(self, obj: Share) -> str:
        return obj.state

    @admin.display(description="Link")
    def link(self, obj: Share) -> str:
        return format_html('<a href="{0}">{0}</a>', obj.path)

    @admin.action(description="Revoke selected share links")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Share]) -> None:
        count = sum(share_revoke(share=share, user=request.user) for share in queryset)
        self.message_user(request, f"Revoked {count} share link(s).", messages.SUCCESS)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """Which workers are alive: written by the workers themselves, read-only here."""

    list_display = ("hostname", "queues", "pid", "started_at", "seen_at", "alive")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True, description="Alive")
    def alive(self, heartbeat: WorkerHeartbeat) -> bool:
        return heartbeat.is_alive
