"""The result filters: what the gallery's index, a download and the API's listing
narrow results by, read from a query (the gallery's URL, the API's parameters or a
download's body) by one form, so that every way in takes the same values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from django import forms

from generations.models import TAG_NAME_MAX_CHARS, GenerationResult, ImageModel

RESULT_STATUS_CHOICES = [("", "Any result"), *GenerationResult.Status.choices]
STORAGE_STATUS_CHOICES = [
    ("", "Any storage"),
    *[(value, label) for value, label in GenerationResult.StorageStatus.choices if value],
    ("none", "No image"),
]

REFERENCE_CHOICES = [
    ("", "Any"),
    ("with", "Image-to-image"),
    ("without", "Text-to-image"),
]
# ASCII spaces only, as the API's document says them (SIZE_PATTERN, ASPECT_PATTERN).
_SIZE_RE = re.compile(r"\s*([0-9]{1,5})\s*[xX\u00d7]\s*([0-9]{1,5})\s*", re.ASCII)
_ASPECT_RE = re.compile(r"\s*([0-9]{1,3})\s*:\s*([0-9]{1,3})\s*", re.ASCII)
# The shapes above as JSON Schema patterns (ECMA-262, anchored).
_SPACES = r"[ \t\n\r\f\v]*"
SIZE_PATTERN = f"^{_SPACES}[0-9]{{1,5}}{_SPACES}[xX\u00d7]{_SPACES}[0-9]{{1,5}}{_SPACES}$"
ASPECT_PATTERN = f"^{_SPACES}[0-9]{{1,3}}{_SPACES}:{_SPACES}[0-9]{{1,3}}{_SPACES}$"
_SEED_RE = re.compile(r"\s*(-?[0-9]{1,10})\s*")
MAX_SEED = 2_147_483_647


class _PairField(forms.Field):
    """Two positive whole numbers in one box ("2048x2048", "16:9"), read as ASCII digits."""

    widget = forms.TextInput
    pattern: re.Pattern[str]
    example: str

    def to_python(self, value: Any) -> tuple[int, int] | None:
        text = "" if value in self.empty_values else str(value)
        if not text.strip():
            return None
        match = self.pattern.fullmatch(text)
        if match is None or 0 in (pair := (int(match[1]), int(match[2]))):
            raise forms.ValidationError(f"Enter it as {self.example}.", code="invalid")
        return pair


class SizeField(_PairField):
    pattern = _SIZE_RE
    example = "width x height, e.g. 2048x2048"


class AspectField(_PairField):
    pattern = _ASPECT_RE
    example = "width:height, e.g. 16:9"


class SeedField(forms.Field):
    """A seed as typed: ASCII digits (IntegerField would read "٣" as 3)."""

    widget = forms.TextInput

    def to_python(self, value: Any) -> int | None:
        text = "" if value in self.empty_values else str(value)
        if not text.strip():
            return None
        match = _SEED_RE.fullmatch(text)
        if match is None or not -1 <= int(match[1]) <= MAX_SEED:
            raise forms.ValidationError(
                f"Enter a seed: a whole number from -1 to {MAX_SEED}.", code="invalid"
            )
        return int(match[1])


class ResultFilterForm(forms.Form):
    """GET filters of the index, in the order the page shows them. A value that is not
    valid is shown with its error and left out; the other filters still apply."""

    q = forms.CharField(
        label="Prompt contains",
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Search prompts"}),
    )
    tag = forms.CharField(
        label="Tag",
        required=False,
        max_length=TAG_NAME_MAX_CHARS * 2,
        widget=forms.TextInput(attrs={"placeholder": "any"}),
    )
    storage_status = forms.ChoiceField(
        label="Storage", choices=STORAGE_STATUS_CHOICES, required=False
    )
    status = forms.ChoiceField(label="Result", choices=RESULT_STATUS_CHOICES, required=False)
    model = forms.TypedChoiceField(label="Model", coerce=int, required=False, empty_value=None)
    since = forms.DateField(
        label="Since", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="Until", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    size = SizeField(
        label="Size",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. 2048x2048", "maxlength": 20}),
    )
    aspect = AspectField(
        label="Aspect",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. 16:9", "maxlength": 10}),
    )
    seed = SeedField(label="Seed", required=False, widget=forms.TextInput(attrs={"maxlength": 20}))
    reference = forms.ChoiceField(label="Reference", choices=REFERENCE_CHOICES, required=False)
    favorite = forms.BooleanField(label="Starred only", required=False)
    at_risk = forms.BooleanField(label="At risk only", required=False)

    def __init__(self, *args: Any, models: list[ImageModel], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The view hands over the models, so that rendering the form runs no query.
        model_field = self.fields["model"]
        assert isinstance(model_field, forms.ChoiceField)
        model_field.choices = [("", "Any model")] + [(m.pk, m.name) for m in models]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if isinstance(since, date) and isinstance(until, date) and since > until:
            self.add_error("until", "Until is before since: no result could match.")
        return data

    def filters(self) -> dict[str, Any]:
        """The filters to apply: every valid one (none for a form not filled in)."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if name not in self.errors}


# The filters as the API names them, and the form's fields they fill (`storage` is its
# storage_status).
API_FILTER_FIELDS = {
    "q": "q",
    "since": "since",
    "until": "until",
    "model": "model",
    "storage": "storage_status",
    "status": "status",
    "favorite": "favorite",
    "tag": "tag",
    "size": "size",
    "aspect": "aspect",
    "seed": "seed",
    "reference": "reference",
}


class InvalidFilter(ValueError):
    """A filter the API was given that the form refuses; `field` is the API's name."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def api_filters(values: Mapping[str, Any], *, models: list[ImageModel]) -> dict[str, Any]:
    """The filters to apply from the API's names and values (text, numbers, true;
    None, false or "" leave a filter out), or InvalidFilter naming the first wrong one.

    Unlike the gallery, which shows a wrong filter's error and applies the others, the
    API refuses the request: a script must not get a wider list than it asked for.
    """
    data: dict[str, str] = {}
    for key, value in values.items():
        if value is None or value is False or value == "":
            continue
        if value is True:
            value = "on"
        data[API_FILTER_FIELDS[key]] = str(value)
    form = ResultFilterForm(data, models=models)
    if not form.is_valid():
        field, errors = next(iter(form.errors.items()))
        key = next((k for k, v in API_FILTER_FIELDS.items() if v == field), field)
        raise InvalidFilter(str(errors[0]), field=key)
    return form.filters()
