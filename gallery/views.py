"""The staff gallery: server-rendered pages over the generations domain.

Views are thin: they parse input, call a selector or a service of
`generations.services`, and render. Every state change is a POST (CSRF-checked)
that answers with a Django message and a redirect; destructive ones ask first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generations.api.serve import archive_response
from generations.checks import parse_id
from generations.filters import ResultFilterForm
from generations.models import (
    Generation,
    GenerationReference,
    GenerationResult,
    ImageModel,
    Prompt,
    Share,
)
from generations.selectors import results_filtered, results_neighbours, results_page
from generations.services.deleting import NotConfirmed, results_delete, results_delete_all
from generations.services.downloads import (
    TooManyToDownload,
    download_limit,
    results_archive,
    results_for_download,
)
from generations.services.generate import generation_create
from generations.services.organize import (
    results_add_tags,
    results_remove_tags,
    results_set_favorite,
)
from generations.services.sharing import ShareRefused, share_create, share_revoke
from generations.services.storing import results_restore
from generations.usage import Cost, UsageQueryForm, generation_cost, usage_rows, usage_totals

from . import selectors
from .forms import (
    SIZE_CHOICES,
    GenerateForm,
    PageCursorForm,
    TagNamesForm,
    model_size_field,
)

RESULTS_PER_PAGE = 24
MAX_SAVED_PROMPTS = 200
MAX_BULK_IDS = 1000
# Storage statuses that change by themselves: a page showing one follows it in place.
STORAGE_IN_PROGRESS = (
    GenerationResult.StorageStatus.PENDING,
    GenerationResult.StorageStatus.STORING,
)
View = Callable[..., HttpResponse]


def staff_required(view: View) -> View:
    """Anonymous visitors go to the login page; signed-in non-staff get a 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("The gallery is for staff only.")
        return view(request, *args, **kwargs)

    return wrapper


def safe_next(request: HttpRequest, default: str) -> str:
    """The `next` the request carries when it is a URL of this site, else `default`.

    The one check for every `next` the gallery renders (a Cancel link, a form's hidden
    field) or redirects to: `javascript:...`, `//elsewhere/` and their spellings never
    become a link or a Location.
    """
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Redirect to the page the form came from (a safe local `next`), else `default`."""
    return HttpResponseRedirect(safe_next(request, default))


def _waiting_text(count: int) -> str:
    """The message for rows left `pending` because the task queue did not answer."""
    return (
        f"{_plural(count, 'result')} could not be queued: the task queue is unavailable. "
        "They wait as pending and are stored once it is back."
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _selected_ids(request: HttpRequest) -> list[int]:
    ids = {parse_id(v) for v in request.POST.getlist("ids")}
    return sorted((i for i in ids if i is not None), reverse=True)[:MAX_BULK_IDS]


def _quoted(names: list[str]) -> str:
    return ", ".join(f"“{name}”" for name in names)


def _existing_result_id(result_id: int) -> int:
    if not GenerationResult.objects.filter(pk=result_id).exists():
        raise Http404("No such result.")
    return result_id


# --- Browsing ----------------------------------------------------------------------


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    models = list(ImageModel.objects.order_by("name"))
    filter_form = ResultFilterForm(request.GET or None, models=models)
    filters = filter_form.filters()
    cursor_form = PageCursorForm(request.GET)
    cursor = cursor_form.cleaned_data if cursor_form.is_valid() else {}
    page = results_page(
        results_filtered(filters=filters),
        before=cursor.get("before"),
        after=cursor.get("after"),
        per_page=RESULTS_PER_PAGE,
    )
    counts = selectors.header_counts()
    storage_links = [
        ("stored", "Stored", counts["stored"]),
        ("pending", "Pending", counts["pending"]),
        ("storing", "Storing", counts["storing"]),
        ("failed", "Failed", counts["failed"]),
        ("expired", "Expired", counts["expired"]),
        ("none", "No image", counts["none"]),
    ]
    return render(
        request,
        "gallery/index.html",
        {
            "nav": "gallery",
            "filter_form": filter_form,
            "filters_active": any(v for v in filters.values()),
            "page": page,
            "results": page.results,
            "matching_total": selectors.matching_total(filters=filters, counts=counts),
            "counts": counts,
            "storage_links": storage_links,
            "active_storage": filters.get("storage_status") or "",
            "at_risk_active": bool(filters.get("at_risk")),
            "at_risk": counts["at_risk"],
            "workers_alive": selectors.workers_alive(),
            "download_limit": download_limit(),
        },
    )


@require_GET
@staff_required
def detail(request: HttpRequest, result_id: int) -> HttpResponse:
    result = selectors.result_for_detail(result_id=result_id)
    if result is None:
        raise Http404("No such result.")
    return render(
        request,
        "gallery/detail.html",
        {
            "nav": "gallery",
            "result": result,
            "generation": result.generation,
            # The storage error has its own row on the page; the list is what was sent.
            "params_items": sorted(result.params_sent().items()),
            "polling": result.storage_status in STORAGE_IN_PROGRESS,
            "cost": _image_cost(result),
        },
    )


@require_GET
@staff_required
def viewer(request: HttpRequest, result_id: int) -> HttpResponse:
    """One result as the gallery's viewer shows it, over the gallery page it was opened
    from: the query string is that page's (filters and cursor), so that the neighbours
    are those of the list the person is looking at, across its page boundaries."""
    result = selectors.result_for_detail(result_id=result_id)
    if result is None:
        raise Http404("No such result.")
    models = list(ImageModel.objects.order_by("name"))
    filters = ResultFilterForm(request.GET or None, models=models).filters()
    neighbours = results_neighbours(results_filtered(filters=filters), result_id=result_id)
    gallery_query = request.GET.copy()
    gallery_query.pop("view", None)
    index_url = reverse("gallery:index")
    back = f"{index_url}?{gallery_query.urlencode()}" if gallery_query else index_url
    gallery_query["view"] = str(result_id)
    return render(
        request,
        "gallery/_viewer.html",
        {
            "result": result,
            "newer_id": neighbours.newer,
            "older_id": neighbours.older,
            "cost": _image_cost(result),
            # The viewer's forms (and the card's) come back to the gallery with it open.
            "page_path": f"{index_url}?{gallery_query.urlencode()}",
            "back": back,
        },
    )


def _image_cost(result: GenerationResult) -> Cost | None:
    """What the image cost, when it was made and its model has a price."""
    if result.status != GenerationResult.Status.SUCCESS:
        return None
    return generation_cost([result])


# --- Changing things (POST only) -----------------------------------------------------


@require_POST
@staff_required
def restore(request: HttpRequest, result_id: int) -> HttpResponse:
    result = GenerationResult.objects.filter(pk=result_id).first()
    if result is None:
        raise Http404("No such result.")
    detail_url = reverse("gallery:detail", args=[result_id])
    if result.is_stored:
        messages.info(request, f"Result {result_id} is stored already.")
    elif result.is_lost:
        messages.error(
            request,
            f"Result {result_id} cannot be re-stored: its upstream link expired "
            "before it was stored.",
        )
    else:
        restoring = results_restore(result_ids=[result_id])
        if restoring.queued:
            messages.success(request, f"Queued result {result_id} for storing.")
        elif restoring.accepted:
            messages.warning(
                request,
                f"Result {result_id} could not be queued: the task queue is unavailable. "
                "It waits as pending and is stored once it is back.",
            )
        else:
            messages.warning(
                request,
                f"Result {result_id} was not queued: it is being stored right now, "
                "or has no image.",
            )
    return _back(request, detail_url)


@require_POST
@staff_required
def favorite(request: HttpRequest, result_id: int) -> HttpResponse:
    """Star (`favorite=1`) or unstar (`favorite=0`) one result."""
    starred = request.POST.get("favorite") != "0"
    if not results_set_favorite(result_ids=[result_id], favorite=starred):
        raise Http404("No such result.")
    if starred:
        messages.success(request, f"Starred result {result_id}.")
    else:
        messages.success(request, f"Removed the star from result {result_id}.")
    return _back(request, reverse("gallery:detail", args=[result_id]))


@require_POST
@staff_required
def add_tags(request: HttpRequest, result_id: int) -> HttpResponse:
    """Tag one result with the tags typed, comma-separated."""
    _existing_result_id(result_id)
    form = TagNamesForm(request.POST)
    if form.is_valid():
        tagging = results_add_tags(result_ids=[result_id], names=form.cleaned_data["tags"])
        names = _quoted([tag.name for tag in tagging.tags])
        messages.success(request, f"Tagged result {result_id} with {names}.")
    else:
        messages.error(request, f"No tag added to result {result_id}: {form.errors['tags'][0]}.")
    return _back(request, reverse("gallery:detail", args=[result_id]))


@require_POST
@staff_required
def remove_tag(request: HttpRequest, result_id: int) -> HttpResponse:
    """Take one tag (`tag`, its name) off one result."""
    _existing_result_id(result_id)
    name = request.POST.get("tag", "")
    if results_remove_tags(result_ids=[result_id], names=[name]):
        messages.success(request, f"Removed the tag {_quoted([name])} from result {result_id}.")
    else:
        messages.info(request, f"Result {result_id} has no tag {_quoted([name])}.")
    return _back(request, reverse("gallery:detail", args=[result_id]))


@require_http_methods(["GET", "POST"])
@staff_required
def delete(request: HttpRequest, result_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes the result and its stored object."""
    result = selectors.result_for_detail(result_id=result_id)
    if result is None:
        raise Http404("No such result.")
    if request.method == "POST":
        deleted = results_delete(result_ids=[result_id])
        messages.success(request, f"Deleted {_plural(deleted, 'result')} (#{result_id}).")
        return _back(request, reverse("gallery:index"))
    return render(
        request,
        "gallery/confirm_delete.html",
        {
            "nav": "gallery",
            "results": [result],
            "action": reverse("gallery:delete", args=[result_id]),
            "next": safe_next(request, reverse("gallery:index")),
            "cancel": safe_next(request, result.get_absolute_url()),
        },
    )


@require_POST
@staff_required
def bulk(request: HttpRequest) -> HttpResponse:
    """Act on the results ticked on the index: re-store, delete (asking first), star,
    unstar, add the tags typed, or take them off."""
    index_url = reverse("gallery:index")
    ids = _selected_ids(request)
    action = request.POST.get("action")
    if not ids:
        messages.warning(request, "Select at least one result first.")
        return _back(request, index_url)
    if action in ("favorite", "unfavorite"):
        starred = action == "favorite"
        matched = results_set_favorite(result_ids=ids, favorite=starred)
        done = "Starred" if starred else "Removed the star from"
        messages.success(request, f"{done} {_plural(matched, 'result')}.")
        return _back(request, index_url)
    if action == "download":
        selected = GenerationResult.objects.filter(pk__in=ids).order_by("-id")
        return _download(request, selected, back=safe_next(request, index_url))
    if action == "share":
        return _share(request, result_ids=ids, back=safe_next(request, index_url))
    if action in ("add_tags", "remove_tags"):
        return _bulk_tags(request, ids, add=action == "add_tags", index_url=index_url)
    if action == "restore":
        restoring = results_restore(result_ids=ids)
        skipped = len(ids) - restoring.accepted
        text = f"Queued {_plural(restoring.queued, 'result')} for storing."
        if restoring.waiting:
            text += " " + _waiting_text(restoring.waiting)
        if skipped:
            text += (
                f" {_plural(skipped, 'selected result')} skipped: stored already, "
                "being stored, lost or without an image."
            )
        queued = restoring.queued
        (messages.success if queued else messages.warning)(request, text)
        return _back(request, index_url)
    if action == "delete":
        if request.POST.get("confirmed") == "yes":
            deleted = results_delete(result_ids=ids)
            messages.success(request, f"Deleted {_plural(deleted, 'result')}.")
            return _back(request, index_url)
        results = list(
            GenerationResult.objects.select_related("generation", "model").filter(pk__in=ids)
        )
        next_url = safe_next(request, index_url)
        return render(
            request,
            "gallery/confirm_delete.html",
            {
                "nav": "gallery",
                "results": results,
                "action": reverse("gallery:bulk"),
                "bulk": True,
                "next": next_url,
                "cancel": next_url,
            },
        )
    messages.error(request, "Unknown action.")
    return _back(request, index_url)


@require_GET
@staff_required
def download(request: HttpRequest) -> HttpResponse:
    """A ZIP of every result the index's filters (in the query string) match."""
    models = list(ImageModel.objects.order_by("name"))
    filters = ResultFilterForm(request.GET or None, models=models).filters()
    index_url = reverse("gallery:index")
    back = f"{index_url}?{request.GET.urlencode()}" if request.GET else index_url
    return _download(request, results_filtered(filters=filters), back=back)


def _download(request: HttpRequest, results: Any, *, back: str) -> HttpResponse:
    try:
        rows = results_for_download(results)
    except TooManyToDownload as exc:
        messages.error(request, f"Nothing downloaded: {exc}.")
        return HttpResponseRedirect(back)
    if not any(row.is_stored for row in rows):
        messages.warning(request, "Nothing to download: none of these results is stored.")
        return HttpResponseRedirect(back)
    return archive_response(results_archive(results=rows))  # type: ignore[return-value]


def _bulk_tags(request: HttpRequest, ids: list[int], *, add: bool, index_url: str) -> HttpResponse:
    form = TagNamesForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"No tag changed: {form.errors['tags'][0]}.")
        return _back(request, index_url)
    names = form.cleaned_data["tags"]
    if add:
        tagging = results_add_tags(result_ids=ids, names=names)
        kept = _quoted([tag.name for tag in tagging.tags])
        messages.success(request, f"Tagged {_plural(tagging.results, 'result')} with {kept}.")
    elif results_remove_tags(result_ids=ids, names=names):
        messages.success(
            request, f"Removed {_quoted(names)} from the {_plural(len(ids), 'selected result')}."
        )
    else:
        messages.info(request, f"None of the selected results carries {_quoted(names)}.")
    return _back(request, index_url)


# --- Share links -----------------------------------------------------------------------


@require_GET
@staff_required
def shares(request: HttpRequest) -> HttpResponse:
    """Every share link, newest first, with what it shows, its state and a revoke button."""
    return render(
        request,
        "gallery/shares.html",
        {"nav": "shares", "shares": selectors.shares_for_gallery()},
    )


@require_POST
@staff_required
def share_new(request: HttpRequest) -> HttpResponse:
    """Share one result (`result`, from its page or card) or a tag (`tag`)."""
    result_id = parse_id(request.POST.get("result"))
    tag = (request.POST.get("tag") or "").strip()
    back = safe_next(request, reverse("gallery:shares"))
    if result_id is not None:
        return _share(request, result_ids=[result_id], back=back)
    if tag:
        return _share(request, tag=tag, back=back)
    messages.error(request, "No share made: choose a result or type a tag.")
    return HttpResponseRedirect(back)


def _share(
    request: HttpRequest, *, back: str, result_ids: list[int] | None = None, tag: str | None = None
) -> HttpResponse:
    try:
        share = share_create(user=request.user, result_ids=result_ids, tag=tag)
    except ShareRefused as exc:
        messages.error(request, f"No share made: {exc.message}.")
        return HttpResponseRedirect(back)
    url = request.build_absolute_uri(share.path)
    messages.success(
        request,
        f"Shared {share.describe()} until {share.expires_at:%Y-%m-%d %H:%M} UTC: {url}",
    )
    return redirect("gallery:shares")


@require_POST
@staff_required
def share_revoke_view(request: HttpRequest, share_id: int) -> HttpResponse:
    share = Share.objects.filter(pk=share_id).first()
    if share is None:
        raise Http404("No such share.")
    if share_revoke(share=share, user=request.user):
        messages.success(request, f"Revoked share {share_id}: its link opens nothing now.")
    else:
        messages.info(request, f"Share {share_id} was revoked already.")
    return _back(request, reverse("gallery:shares"))


@require_POST
@staff_required
def restore_all(request: HttpRequest) -> HttpResponse:
    """Queue every result that is not stored and still can be, newest first."""
    ids = list(GenerationResult.objects.storable().order_by("-id").values_list("pk", flat=True))
    restoring = results_restore(result_ids=ids)
    if restoring.waiting:
        messages.warning(
            request,
            f"Queued {_plural(restoring.queued, 'result')} for storing, newest first. "
            + _waiting_text(restoring.waiting),
        )
    elif restoring.accepted:
        messages.success(
            request, f"Queued {_plural(restoring.queued, 'result')} for storing, newest first."
        )
    else:
        messages.info(request, "Nothing to re-store: every image that can be stored is stored.")
    return _back(request, reverse("gallery:index"))


@require_http_methods(["GET", "POST"])
@staff_required
def clear_all(request: HttpRequest) -> HttpResponse:
    """Delete every result, once the user has typed the confirmation word."""
    if request.method == "POST":
        try:
            deleted = results_delete_all(confirmation=request.POST.get("confirmation", ""))
        except NotConfirmed as exc:
            messages.error(request, str(exc))
            return redirect("gallery:clear_all")
        messages.success(request, f"Cleared the gallery: deleted {_plural(deleted, 'result')}.")
        return redirect("gallery:index")
    return render(
        request,
        "gallery/clear_all.html",
        # Fresh: the confirmation of deleting everything must not understate it.
        {"nav": "gallery", "counts": selectors.header_counts(fresh=True)},
    )


# --- Usage ---------------------------------------------------------------------------


@require_GET
@staff_required
def usage(request: HttpRequest) -> HttpResponse:
    """Images and cost by day, model or user: the numbers `GET /api/usage` answers."""
    form = UsageQueryForm(request.GET or None)
    query = form.cleaned_data if form.is_bound and form.is_valid() else {}
    group_by = query.get("groupBy") or "day"
    rows = usage_rows(since=query.get("since"), until=query.get("until"), group_by=group_by)
    return render(
        request,
        "gallery/usage.html",
        {
            "nav": "usage",
            "form": form,
            "rows": rows,
            "totals": usage_totals(rows),
            "group_label": {"day": "Day", "model": "Model", "user": "User"}[group_by],
        },
    )


# --- Generating ----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@staff_required
def generate(request: HttpRequest) -> HttpResponse:
    models = list(ImageModel.objects.enabled().order_by("name"))
    prompts = list(Prompt.objects.all()[:MAX_SAVED_PROMPTS])
    if request.method == "POST":
        form = GenerateForm(request.POST, request.FILES, models=models, prompts=prompts)
        if form.is_valid():
            data = form.cleaned_data
            generation = generation_create(
                user=request.user,
                models=data["model_list"],
                prompt_text=data["prompt_text"],
                prompt=data["prompt_object"],
                save_as=data.get("save_title") or "",
                size=data["size_value"],
                sizes=data["sizes"],
                params=data["params"],
                references=data["references"],
                # Set by the page's script, which then fills the images in as they
                # arrive; without it, the form waits for the models as it always has.
                background=request.POST.get("background") == "1",
            )
            _report_generation(request, generation)
            return redirect(_generation_page(generation.pk))
    else:
        form = GenerateForm(
            initial=_generate_initial(request, models), models=models, prompts=prompts
        )

    shown, results = _shown_generation(request)
    return render(
        request,
        "gallery/generate.html",
        {
            "nav": "generate",
            "form": form,
            "models": models,
            "generation": shown,
            "results": results,
            # Cards show thumbnails: follow them until every stored one has its own.
            "polling": (shown is not None and shown.status == Generation.Status.RUNNING)
            or any(
                r.storage_status in STORAGE_IN_PROGRESS or (r.is_stored and not r.has_thumbnail)
                for r in results
            ),
        },
    )


@require_GET
@staff_required
def generation_cards(request: HttpRequest, generation_id: int) -> HttpResponse:
    """The cards of a generation's results, for the generate page to add each image as
    it arrives: the same partial the page renders, never a second copy in script."""
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        raise Http404("No such generation.")
    results = list(
        generation.results.select_related("model").prefetch_related("tags").order_by("id")
    )
    for result in results:
        result.generation = generation
    return render(
        request,
        "gallery/_generation_cards.html",
        # The cards' forms come back to the generate page, not to this fragment.
        {"results": results, "page_path": _generation_page(generation.pk)},
    )


def _generation_page(generation_id: int) -> str:
    return f"{reverse('gallery:generate')}?generation={generation_id}"


def _report_generation(request: HttpRequest, generation: Generation) -> None:
    if generation.status == Generation.Status.INTERRUPTED and not generation.results.exists():
        messages.error(
            request,
            f"Generation {generation.pk} could not be queued, so nothing was generated: "
            "the background workers are unreachable. Try again in a moment.",
        )
        return
    if generation.status == Generation.Status.RUNNING:
        messages.success(
            request,
            f"Generation {generation.pk} is running: its images appear below as they arrive.",
        )
        return
    outcomes = list(generation.results.values_list("status", flat=True))
    images = outcomes.count(GenerationResult.Status.SUCCESS)
    failed = len(outcomes) - images
    text = f"Generation {generation.pk}: {_plural(images, 'image')}"
    if failed:
        text += f", {failed} failed"
    text += ". Storing happens in the background; the statuses below update by themselves."
    (messages.success if images else messages.warning)(request, text)


def _shown_generation(request: HttpRequest) -> tuple[Generation | None, list[GenerationResult]]:
    generation_id = parse_id(request.GET.get("generation"))
    if generation_id is None:
        return None, []
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        return None, []
    results = list(
        generation.results.select_related("model").prefetch_related("tags").order_by("id")
    )
    for result in results:
        result.generation = generation  # already loaded: no query per card
    return generation, results


def _generate_initial(request: HttpRequest, models: list[ImageModel]) -> dict[str, Any]:
    """Prefill from ?from=ID (continue a result), ?reference=ID (image-to-image) or
    ?generation=ID (the generation just made, to iterate on it)."""
    initial: dict[str, Any] = {"watermark": True}
    source_id = parse_id(request.GET.get("from"))
    reference_id = parse_id(request.GET.get("reference"))
    generation_id = parse_id(request.GET.get("generation"))
    if source_id is not None:
        source = GenerationResult.objects.select_related("generation").filter(pk=source_id).first()
        if source is not None:
            initial.update(_initial_from_generation(source.generation))
            if not initial.get("size") and not initial.get("custom_size"):
                initial.update(_initial_size(str(source.params_used.get("size") or "")))
            if source.model_id:
                initial["models"] = [source.model_id]
    elif generation_id is not None:
        generation = Generation.objects.filter(pk=generation_id).first()
        if generation is not None:
            initial.update(_initial_from_generation(generation))
            initial["models"] = list(
                generation.results.exclude(model=None).values_list("model_id", flat=True).distinct()
            )
            initial.update(_initial_model_sizes(generation))
    if reference_id is not None:
        initial["reference"] = f"result:{reference_id}"
        # Preselect the models that take a reference image.
        initial["models"] = [m.pk for m in models if "image_to_image" in m.capabilities]
    return initial


def _initial_from_generation(generation: Generation) -> dict[str, Any]:
    initial: dict[str, Any] = {"prompt": generation.prompt_text, **_initial_size(generation.size)}
    params = generation.params or {}
    if "watermark" in params:
        initial["watermark"] = bool(params["watermark"])
    if params.get("seed") is not None:
        initial["seed"] = params["seed"]
    if params.get("guidance_scale") is not None:
        initial["guidance_scale"] = params["guidance_scale"]
    if isinstance(params.get("optimize_prompt_options"), dict):
        initial["optimize_prompt_mode"] = params["optimize_prompt_options"].get("mode")
    if params.get("output_format"):
        initial["output_format"] = params["output_format"]
    references = _reference_lines(generation)
    if references:
        initial["reference"] = " ".join(references)
    return initial


def _reference_lines(generation: Generation) -> list[str]:
    """The generation's references as the form takes them: an upload is named by the
    copy kept with the generation, so that continuing sends the same image."""
    lines = []
    for reference in generation.references.all():
        if reference.kind == GenerationReference.Kind.UPLOAD:
            lines.append(f"reference:{reference.pk}")
        elif reference.result_id is not None:
            lines.append(f"result:{reference.result_id}")
        elif reference.url and not reference.url.startswith("data:"):
            lines.append(reference.url)
    if lines:
        return lines
    # A generation from before references were kept one by one.
    if generation.reference_result_id:
        return [f"result:{generation.reference_result_id}"]
    if generation.reference_image_url and not generation.reference_image_url.startswith("data:"):
        return [generation.reference_image_url]
    return []


def _initial_model_sizes(generation: Generation) -> dict[str, str]:
    """The sizes of their own that the generation's models were given."""
    initial: dict[str, str] = {}
    for model_id, params_used in generation.results.exclude(model=None).values_list(
        "model_id", "params_used"
    ):
        size = str((params_used or {}).get("size") or "")
        if size and size != generation.size:
            initial[model_size_field(model_id)] = size
    return initial


def _initial_size(size: str) -> dict[str, str]:
    if not size:
        return {}
    if size in {value for value, _label in SIZE_CHOICES}:
        return {"size": size}
    return {"custom_size": size}
