"""Share links: making one for a result, a selection or a tag, revoking it, and opening it.

Every creation and revocation is logged (logger `genvault.shares`): who, when, what, and
until when. What a share shows is fixed when it is made; a tag's share is a snapshot of
the tag's stored results at that moment (see `Share`). Only stored images are shared:
a result not stored yet has nothing of ours to show, and its upstream URL is never
handed out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from generations.models import SHARE_SIGNING_SALT, GenerationResult, Share, Tag

logger = logging.getLogger("genvault.shares")

# A share is a page of images for a person to look at, not an export.
MAX_SHARED_RESULTS = 200
# Shares one person may make in an hour: far above any hand's pace, low enough that a
# script gone wrong cannot fill the table.
MAX_SHARES_PER_HOUR = 100
MIN_SHARE_SECONDS = 60


class ShareRefused(Exception):
    """The share cannot be made; the message says why, to the person who asked."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def share_lifetime(seconds: object = None) -> timedelta:
    """How long a new share lives: SHARE_DEFAULT_SECONDS, or `seconds` (whole, from a
    minute to SHARE_MAX_SECONDS)."""
    if seconds is None:
        return timedelta(seconds=settings.SHARE_DEFAULT_SECONDS)
    longest = int(settings.SHARE_MAX_SECONDS)
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not MIN_SHARE_SECONDS <= seconds <= longest
    ):
        raise ShareRefused(
            f"expiresIn must be a whole number of seconds from {MIN_SHARE_SECONDS} to {longest}",
            field="expiresIn",
        )
    return timedelta(seconds=seconds)


def share_create(
    *,
    user: Any,
    result_ids: Iterable[int] | None = None,
    tag: str | None = None,
    lifetime: timedelta | None = None,
) -> Share:
    """Share one result or a selection (`result_ids`), or a tag's results (`tag`).

    Raises ShareRefused, writing nothing, when nothing of it is stored, when it is more
    than MAX_SHARED_RESULTS, or when `user` made MAX_SHARES_PER_HOUR shares in the last
    hour.
    """
    if (result_ids is None) == (tag is None):
        raise ShareRefused("share results or a tag, one of the two")
    lifetime = lifetime if lifetime is not None else share_lifetime()
    now = timezone.now()
    recent = Share.objects.filter(created_by=user, created_at__gt=now - timedelta(hours=1))
    if recent.count() >= MAX_SHARES_PER_HOUR:
        raise ShareRefused(f"at most {MAX_SHARES_PER_HOUR} shares an hour: try again later")

    stored = GenerationResult.objects.filter(storage_status=GenerationResult.StorageStatus.STORED)
    tag_name = ""
    if tag is not None:
        found = Tag.objects.named(tag).first()
        if found is None:
            raise ShareRefused(f"no tag “{tag}”", field="tag")
        tag_name = found.name
        chosen = stored.filter(tag_links__tag=found)
        kind = Share.Kind.TAG
    else:
        ids = sorted(set(result_ids or ()))
        if not ids:
            raise ShareRefused("choose at least one result", field="resultId")
        chosen = stored.filter(pk__in=ids)
        kind = Share.Kind.RESULT if len(ids) == 1 else Share.Kind.SELECTION
    shared = list(chosen.order_by("-id").values_list("pk", flat=True)[: MAX_SHARED_RESULTS + 1])
    if not shared:
        if tag is not None:
            what = f"the tag “{tag_name}” has no stored image"
        elif kind == Share.Kind.RESULT:
            what = f"result {ids[0]} has no stored image"
        else:
            what = "none of these results has a stored image"
        raise ShareRefused(f"nothing to share: {what}")
    if len(shared) > MAX_SHARED_RESULTS:
        raise ShareRefused(f"at most {MAX_SHARED_RESULTS} images in one share")

    with transaction.atomic():
        share = Share.objects.create(
            kind=kind, tag_name=tag_name, created_by=user, created_at=now, expires_at=now + lifetime
        )
        share.results.add(*shared)
    logger.info(
        "share %s created by %s at %s: %s (results %s), expires %s",
        share.pk,
        _who(user),
        now.isoformat(),
        share.describe(),
        ",".join(map(str, sorted(shared))),
        share.expires_at.isoformat(),
    )
    return share


def share_revoke(*, share: Share, user: Any) -> bool:
    """Revoke the share at once; False when it was revoked already."""
    now = timezone.now()
    changed = Share.objects.filter(pk=share.pk, revoked_at__isnull=True).update(
        revoked_at=now, revoked_by=user
    )
    share.refresh_from_db()
    if changed:
        logger.info(
            "share %s revoked by %s at %s: %s",
            share.pk,
            _who(user),
            now.isoformat(),
            share.describe(),
        )
    return bool(changed)


def share_for_token(token: str) -> Share | None:
    """The active share a link's token opens, or None: a token that was altered or made
    with another secret, and a share expired or revoked, open nothing alike."""
    try:
        key = signing.Signer(salt=SHARE_SIGNING_SALT).unsign(token)
    except signing.BadSignature:
        return None
    return Share.objects.active().filter(key=key).first()


def _who(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "nobody"
    return f"{user.get_username()} (user {user.pk})"
