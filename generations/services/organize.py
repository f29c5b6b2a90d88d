"""Organizing results: the star, and tags, on one result or a selection of them.

Each write is a few bulk queries whatever the number of results, and announces
`results_changed` once it has committed. Tags are created by typing them: a name
nobody used before becomes a tag, a name in another case is the tag already there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from generations.models import (
    GenerationResult,
    InvalidTagName,
    ResultTag,
    Tag,
    clean_tag_name,
    tag_key,
)
from generations.signals import announce_results_changed

# More than anyone tags at once by hand; a bound on what one request may ask.
MAX_TAGS_AT_ONCE = 20
_LINK_BATCH = 1000


@dataclass(frozen=True)
class Tagging:
    """What adding tags did: the tags (as kept, in the order asked) and the results they
    are on now (those of the ids that exist)."""

    tags: list[Tag]
    results: int


def clean_tag_names(names: Iterable[object]) -> list[str]:
    """The names as they will be kept, each once whatever its case, in the order given.

    Raises InvalidTagName for the first name that breaks a rule (see `clean_tag_name`),
    for no name at all, and for more than MAX_TAGS_AT_ONCE.
    """
    cleaned: dict[str, str] = {}
    for raw in names:
        name = clean_tag_name(raw)
        cleaned.setdefault(tag_key(name), name)
    if not cleaned:
        raise InvalidTagName("type at least one tag")
    if len(cleaned) > MAX_TAGS_AT_ONCE:
        raise InvalidTagName(f"at most {MAX_TAGS_AT_ONCE} tags at once, not {len(cleaned)}")
    return list(cleaned.values())


def results_set_favorite(*, result_ids: Iterable[int], favorite: bool) -> int:
    """Star (or unstar) these results; returns how many of the ids name a result."""
    with transaction.atomic():
        matched = GenerationResult.objects.filter(pk__in=list(result_ids)).update(favorite=favorite)
        if matched:
            announce_results_changed()
    return matched


def results_add_tags(*, result_ids: Iterable[int], names: Iterable[object]) -> Tagging:
    """Put the named tags on these results, creating the tags nobody used yet.

    A result that has a tag already keeps it (and its date). Raises InvalidTagName, before
    anything is written, when a name breaks a rule.
    """
    wanted = clean_tag_names(names)
    with transaction.atomic():
        tags = _tags_named(wanted)
        ids = list(
            GenerationResult.objects.filter(pk__in=list(result_ids)).values_list("pk", flat=True)
        )
        ResultTag.objects.bulk_create(
            (ResultTag(result_id=result_id, tag=tag) for result_id in ids for tag in tags),
            ignore_conflicts=True,  # tagged already: keep that link
            batch_size=_LINK_BATCH,
        )
        if ids:
            announce_results_changed()
    return Tagging(tags=tags, results=len(ids))


def results_remove_tags(*, result_ids: Iterable[int], names: Iterable[str]) -> int:
    """Take the named tags off these results; returns how many tags came off in all.

    A name that is no tag, or a tag a result does not carry, is nothing to remove. The
    tag itself stays, with whatever results still carry it (the admin deletes tags).
    """
    keys = {tag_key(name) for name in names}
    with transaction.atomic():
        removed, _ = ResultTag.objects.filter(
            tag__key__in=keys, result_id__in=list(result_ids)
        ).delete()
        if removed:
            announce_results_changed()
    return removed


def tags_merge(*, into: Tag, tags: Iterable[Tag]) -> int:
    """Merge `tags` into `into`: every result of theirs carries `into`, and they are gone.

    Returns how many results gained `into` (a result that had both counts once, and
    not at all when it had `into` already).
    """
    sources = [tag.pk for tag in tags if tag.pk != into.pk]
    gained = 0
    with transaction.atomic():
        for source in sources:
            carrying = ResultTag.objects.filter(tag=into).values("result_id")
            gained += (
                ResultTag.objects.filter(tag_id=source)
                .exclude(result_id__in=carrying)
                .update(tag=into)
            )
        # What is left of their links are results that carried `into` already.
        Tag.objects.filter(pk__in=sources).delete()
        if sources:
            announce_results_changed()
    return gained


def _tags_named(names: list[str]) -> list[Tag]:
    """The tags of these (clean) names, creating the missing ones, in the order given.

    Two people typing the same new tag at once both get the one tag: the unique key
    lets one insert win and the other read it.
    """
    keys = {tag_key(name): name for name in names}
    existing = set(Tag.objects.filter(key__in=keys).values_list("key", flat=True))
    Tag.objects.bulk_create(
        [Tag(name=name, key=key) for key, name in keys.items() if key not in existing],
        ignore_conflicts=True,
    )
    by_key = {tag.key: tag for tag in Tag.objects.filter(key__in=keys)}
    return [by_key[key] for key in keys]
