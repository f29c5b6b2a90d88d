"""What generating cost: a generation's cost, and images and cost by day, model or user.

An image costs its model's price per image (set in the admin) as the model has it now;
a model without a price makes images whose cost is not known, shown apart rather than
counted as free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from .models import Generation, GenerationResult

GROUP_BY = ("day", "model", "user")
_CENT = Decimal("0.0001")  # the price's own precision (four decimal places)


@dataclass(frozen=True)
class Cost:
    amount: Decimal
    currency: str

    def as_json(self) -> dict[str, str]:
        return {"amount": str(self.amount.quantize(_CENT)), "currency": self.currency}


def generation_cost(results: Iterable[GenerationResult]) -> Cost | None:
    """What a generation's images cost, from its results (their models loaded): None when
    one of them came from a model without a price, or the prices are in two currencies."""
    amount = Decimal(0)
    currencies: set[str] = set()
    for result in results:
        model = result.model
        if model is None or model.price_per_image is None:
            if result.status == GenerationResult.Status.SUCCESS:
                return None
            continue
        currencies.add(model.currency)
        if result.status == GenerationResult.Status.SUCCESS:
            amount += model.price_per_image
    if len(currencies) != 1:
        return None
    return Cost(amount=amount, currency=currencies.pop())


def generation_usage(generation: Generation) -> dict[str, int | None] | None:
    """What Ark counted for the generation, or None when it sent no usage."""
    if generation.usage_generated_images is None and generation.usage_output_tokens is None:
        return None
    return {
        "generatedImages": generation.usage_generated_images,
        "outputTokens": generation.usage_output_tokens,
    }


class UsageQueryForm(forms.Form):
    """The usage page's and `GET /api/usage`'s query: a date range (both days included)
    and what to group by."""

    since = forms.DateField(
        required=False, input_formats=["%Y-%m-%d"], widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, input_formats=["%Y-%m-%d"], widget=forms.DateInput(attrs={"type": "date"})
    )
    groupBy = forms.ChoiceField(
        choices=[(g, g) for g in GROUP_BY], required=False, label="Group by"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if isinstance(since, date) and isinstance(until, date) and since > until:
            self.add_error("until", "until is before since")
        data["groupBy"] = data.get("groupBy") or "day"
        return data


@dataclass(frozen=True)
class UsageRow:
    key: str | None
    images: int
    failed: int
    cost: Cost | None  # None: images of models without a price

    def as_json(self, group_by: str) -> dict[str, Any]:
        return {
            group_by: self.key,
            "images": self.images,
            "failed": self.failed,
            "cost": self.cost.as_json() if self.cost else None,
        }


def usage_rows(*, since: date | None, until: date | None, group_by: str) -> list[UsageRow]:
    """Images made, failures and cost per day, model or user, newest day (or the largest
    cost) first: one query, whatever the number of results. A group with images of
    priced and unpriced models (or in two currencies) has a row for each."""
    key = {
        "day": TruncDate("created_at"),
        "model": Coalesce(F("model__name"), F("upstream_model_id")),
        "user": F("generation__created_by__username"),
    }[group_by]
    results = GenerationResult.objects.all()
    if since is not None:
        results = results.filter(created_at__gte=_start_of(since))
    if until is not None:
        results = results.filter(created_at__lt=_start_of(until + timedelta(days=1)))
    success = Q(status=GenerationResult.Status.SUCCESS)
    priced = Q(model__price_per_image__isnull=False)
    grouped = (
        results.annotate(
            key=key,
            priced=ExpressionWrapper(priced, output_field=BooleanField()),
            currency=F("model__currency"),
        )
        .values("key", "priced", "currency")
        .annotate(
            images=Count("id", filter=success),
            failed=Count("id", filter=~success),
            amount=Sum("model__price_per_image", filter=success),
        )
        .order_by()
    )
    rows = [
        UsageRow(
            key=str(row["key"]) if row["key"] is not None else None,
            images=row["images"],
            failed=row["failed"],
            cost=(
                Cost(amount=row["amount"] or Decimal(0), currency=row["currency"])
                if row["priced"]
                else None
            ),
        )
        for row in grouped
    ]
    if group_by == "day":
        rows.sort(key=lambda r: (r.key or "", r.cost is not None), reverse=True)
    else:
        rows.sort(key=lambda r: (r.cost.amount if r.cost else Decimal(-1), r.images), reverse=True)
    return rows


def usage_totals(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """The rows summed: one row per currency, and one for images without a price."""
    totals: dict[str | None, list[Any]] = {}
    for row in rows:
        currency = row.cost.currency if row.cost else None
        images, failed, amount = totals.setdefault(currency, [0, 0, Decimal(0)])
        totals[currency] = [
            images + row.images,
            failed + row.failed,
            amount + (row.cost.amount if row.cost else 0),
        ]
    return [
        UsageRow(
            key=None,
            images=images,
            failed=failed,
            cost=Cost(amount=amount, currency=currency) if currency is not None else None,
        )
        for currency, (images, failed, amount) in sorted(
            totals.items(), key=lambda item: item[0] is None
        )
    ]


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
