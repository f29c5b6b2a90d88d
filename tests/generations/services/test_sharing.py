"""Making and revoking share links: what a share holds, its limits, and the log of each."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from generations.models import Share
from generations.services import sharing
from generations.services.organize import results_add_tags
from generations.services.sharing import (
    ShareRefused,
    share_create,
    share_for_token,
    share_lifetime,
    share_revoke,
)
from tests.factories import GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db


def stored() -> Any:
    return mark_stored(GenerationResultFactory())


def test_a_share_lives_seven_days_by_default_and_is_logged_with_who_when_what(
    staff_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    result = stored()
    with caplog.at_level(logging.INFO, logger="genvault.shares"):
        share = share_create(user=staff_user, result_ids=[result.pk])
        share_revoke(share=share, user=staff_user)
        assert not share_revoke(share=share, user=staff_user)  # once is enough
    assert share.kind == Share.Kind.RESULT
    assert share.expires_at - share.created_at == timedelta(days=7)
    logged = [r for r in caplog.records if r.name == "genvault.shares"]
    made, revoked = (record.getMessage() for record in logged)
    assert made.startswith(f"share {share.pk} created by staff (user {staff_user.pk}) at ")
    assert f": result {result.pk} (results {result.pk}), expires " in made
    assert revoked.startswith(f"share {share.pk} revoked by staff (user {staff_user.pk}) at ")
    assert len(logged) == 2
    assert share_for_token(share.token) is None


def test_only_stored_images_are_shared_and_a_selection_of_none_is_refused(
    staff_user: Any,
) -> None:
    kept, pending = stored(), GenerationResultFactory()
    share = share_create(user=staff_user, result_ids=[kept.pk, pending.pk])
    assert share.kind == Share.Kind.SELECTION
    assert list(share.results.values_list("pk", flat=True)) == [kept.pk]
    with pytest.raises(ShareRefused, match="no stored image"):
        share_create(user=staff_user, result_ids=[pending.pk])
    with pytest.raises(ShareRefused, match="no tag “nowhere”"):
        share_create(user=staff_user, tag="nowhere")
    assert Share.objects.count() == 1


def test_size_rate_and_lifetime_limits(
    staff_user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    results = [stored() for _ in range(3)]
    results_add_tags(result_ids=[r.pk for r in results], names=["sea"])
    monkeypatch.setattr(sharing, "MAX_SHARED_RESULTS", 2)
    with pytest.raises(ShareRefused, match="at most 2 images in one share"):
        share_create(user=staff_user, tag="sea")
    monkeypatch.setattr(sharing, "MAX_SHARES_PER_HOUR", 2)
    share_create(user=staff_user, result_ids=[results[0].pk])
    share_create(user=staff_user, result_ids=[results[1].pk])
    with pytest.raises(ShareRefused, match="at most 2 shares an hour"):
        share_create(user=staff_user, result_ids=[results[2].pk])
    Share.objects.update(created_at=timezone.now() - timedelta(hours=2))
    share_create(user=staff_user, result_ids=[results[2].pk])

    assert share_lifetime(3600) == timedelta(hours=1)
    for wrong in (59, settings.SHARE_MAX_SECONDS + 1, "3600", True, 3600.5):
        with pytest.raises(ShareRefused, match="expiresIn must be"):
            share_lifetime(wrong)
