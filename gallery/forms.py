"""Forms of the gallery: the generate form, tags typed in, the page cursor (the index
filters are `generations.filters.ResultFilterForm`, which the API reads too).

The generate form owns no rules of its own: it hands every value to the same
parsers the JSON API uses (`generations.inputs`) and shows their `InvalidInput`
as an error on the field it names. Each model has a size select of its own, offering
the sizes that model takes (`generations.sizes.presets`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms.boundfield import BoundField, BoundWidget

from generations.checks import parse_id
from generations.inputs import (
    InvalidInput,
    check_model_options,
    check_model_size,
    check_models_fit,
    parse_models,
    parse_params,
    parse_prompt_text,
    parse_references,
    parse_size,
    parse_upload,
)
from generations.models import (
    MAX_REFERENCE_IMAGES,
    TAG_NAME_MAX_CHARS,
    ImageModel,
    InvalidTagName,
    Prompt,
)
from generations.services.organize import MAX_TAGS_AT_ONCE, clean_tag_names
from generations.services.references import MAX_REFERENCE_BYTES, ReferenceImage
from generations.sizes import presets

SIZE_CHOICES = [
    ("", "Model default"),
    ("1K", "1K"),
    ("2K", "2K"),
    ("3K", "3K"),
    ("4K", "4K"),
    ("1024x1024", "1024 x 1024 (square)"),
    ("2048x2048", "2048 x 2048 (square)"),
    ("2304x1728", "2304 x 1728 (4:3)"),
    ("1728x2304", "1728 x 2304 (3:4)"),
    ("2560x1440", "2560 x 1440 (16:9)"),
    ("1440x2560", "1440 x 2560 (9:16)"),
    ("adaptive", "Adaptive (follow the reference)"),
]

# Where an InvalidInput from generations.inputs is shown on this form.
_FIELD_FOR_INPUT = {
    "prompt": "prompt",
    "promptId": "saved_prompt",
    "modelIds": "models",
    "size": "size",
    "image": "reference",
    "params.seed": "seed",
    "params.guidance_scale": "guidance_scale",
    "params.watermark": "watermark",
    "params.optimize_prompt_options": "optimize_prompt_mode",
    "params.output_format": "output_format",
}


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several files in one input, as Django's documentation shows: a list, maybe empty."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget", MultipleFileInput(attrs={"accept": "image/png,image/jpeg,image/webp"})
        )
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleImageField, self).clean(f, initial) for f in files if f]


class TagNamesForm(forms.Form):
    """Tags typed into one field, separated by commas: "night sky, harbour"."""

    tags = forms.CharField(
        label="Tags",
        required=False,  # an empty field gets the rule's own words, as a blank one does
        max_length=MAX_TAGS_AT_ONCE * (TAG_NAME_MAX_CHARS + 2),
        strip=False,
    )

    def clean_tags(self) -> list[str]:
        pieces = [piece for piece in self.cleaned_data["tags"].split(",") if piece.strip()]
        try:
            return clean_tag_names(pieces)
        except InvalidTagName as exc:
            raise forms.ValidationError(exc.message, code="invalid") from None


class IdField(forms.Field):
    """A row id typed into a URL, read by the one id parser: ASCII digits, bounded.

    IntegerField would take "٣", " 7" and "1_000" as numbers (int() does).
    """

    widget = forms.HiddenInput
    default_error_messages = {"invalid": "Enter a row id."}

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        number = parse_id(value)
        if number is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return number


class PageCursorForm(forms.Form):
    """Which page of the index: `before` an id (older) or `after` one (newer); none is the
    newest. Kept apart from the filters, which the pagination links carry along. A cursor
    that is not an id (hand-edited) is ignored: the newest page is shown."""

    before = IdField(required=False)
    after = IdField(required=False)


class GenerateForm(forms.Form):
    prompt = forms.CharField(
        label="Prompt",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": "A lighthouse at dusk, oil painting, warm light"}
        ),
    )
    saved_prompt = forms.TypedChoiceField(
        label="…or a saved prompt", coerce=int, required=False, empty_value=None
    )
    models = forms.TypedMultipleChoiceField(
        label="Models", coerce=int, widget=forms.CheckboxSelectMultiple, required=False
    )
    size = forms.ChoiceField(
        label="Size",
        choices=SIZE_CHOICES,
        required=False,
        help_text="For every chosen model without a size of its own.",
    )
    custom_size = forms.CharField(
        label="…or a custom size",
        required=False,
        max_length=20,
        widget=forms.TextInput(attrs={"placeholder": "e.g. 1536x1024"}),
    )
    watermark = forms.BooleanField(label="Watermark", required=False, initial=True)
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        help_text="Only for models that take one (Seedream 3.0, SeedEdit 3.0). -1 is random.",
    )
    guidance_scale = forms.FloatField(
        label="Guidance scale",
        required=False,
        help_text="1 to 10; only for models that take one.",
    )
    optimize_prompt_mode = forms.ChoiceField(
        label="Prompt optimization",
        choices=[("", "Model default"), ("standard", "Standard"), ("fast", "Fast")],
        required=False,
        help_text="Only for models that take it (Seedream 4.0 and later); fast: Seedream 4.0.",
    )
    output_format = forms.ChoiceField(
        label="Output format",
        choices=[("", "Model default (JPEG)"), ("png", "PNG"), ("jpeg", "JPEG")],
        required=False,
        help_text="Only for models that take it (Seedream 5.0 lite).",
    )
    reference = forms.CharField(
        label="Reference images",
        required=False,
        max_length=MAX_REFERENCE_IMAGES * 4100,
        help_text=(
            "For image-to-image: https URLs, or result:ID of images in the gallery, separated "
            "by spaces. Each model takes up to its own number of references."
        ),
        widget=forms.TextInput(attrs={"placeholder": "https://… result:42"}),
    )
    reference_files = MultipleImageField(
        label="…and uploaded references",
        required=False,
        help_text="PNG, JPEG or WebP, up to 10 MB each; kept with the generation.",
    )
    save_title = forms.CharField(
        label="Save the prompt as",
        required=False,
        max_length=200,
        help_text="Optional: a title to keep this prompt for later.",
    )

    def __init__(
        self, *args: Any, models: list[ImageModel], prompts: list[Prompt], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # Choices come from the view, so that rendering the form runs no query.
        self.prompts_by_id = {p.pk: p for p in prompts}
        models_field, prompt_field = self.fields["models"], self.fields["saved_prompt"]
        assert isinstance(models_field, forms.ChoiceField)
        assert isinstance(prompt_field, forms.ChoiceField)
        models_field.choices = [(m.pk, m.name) for m in models]
        for model in models:
            self.fields[model_size_field(model.pk)] = forms.ChoiceField(
                label=f"Size for {model.name}", choices=model_size_choices(model), required=False
            )
        prompt_field.choices = [("", "(type one above)")] + [
            (p.pk, _prompt_label(p)) for p in prompts
        ]
        prompt_field.widget.attrs["disabled"] = not prompts

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            saved = self.prompts_by_id.get(data.get("saved_prompt") or 0)
            typed = (data.get("prompt") or "").strip()
            if saved is not None and typed:
                raise InvalidInput("type a prompt or choose a saved one, not both", field="prompt")
            data["prompt_object"] = saved
            data["prompt_text"] = saved.text if saved is not None else parse_prompt_text(typed)
            data["model_list"] = parse_models(list(data.get("models") or []))
            data["size_value"] = parse_size(data.get("custom_size") or data.get("size") or "")
            data["sizes"], refusals = self._model_sizes(data["model_list"], data["size_value"])
            for refusal in refusals:  # every model whose size is refused, each on its field
                self._add_input_error(refusal, data)
            if refusals:
                return data
            params: dict[str, Any] = {"watermark": bool(data.get("watermark"))}
            if data.get("seed") is not None:
                params["seed"] = data["seed"]
            if data.get("guidance_scale") is not None:
                params["guidance_scale"] = data["guidance_scale"]
            if data.get("optimize_prompt_mode"):
                params["optimize_prompt_options"] = {"mode": data["optimize_prompt_mode"]}
            if data.get("output_format"):
                params["output_format"] = data["output_format"]
            data["params"] = parse_params(params)
            check_model_options(data["model_list"], params=data["params"])
            typed = (data.get("reference") or "").split()  # a URL holds no space
            data["references"] = parse_references(typed) + self._uploaded_references(
                data.get("reference_files") or []
            )
            if len(data["references"]) > MAX_REFERENCE_IMAGES:
                raise InvalidInput(
                    f"at most {MAX_REFERENCE_IMAGES} reference images in all", field="image"
                )
            check_models_fit(data["model_list"], references=data["references"])
        except InvalidInput as exc:
            self._add_input_error(exc, data)
        return data

    @staticmethod
    def _uploaded_references(files: list[Any]) -> list[ReferenceImage]:
        references = []
        for upload in files:
            name = f"“{upload.name}”"
            if upload.size > MAX_REFERENCE_BYTES:  # refused before reading it
                raise InvalidInput(
                    f"{name} is {upload.size / 1024 / 1024:.1f} MB: a reference image is at "
                    "most 10 MB",
                    field="reference_files",
                )
            references.append(parse_upload(upload.read(), name=name, field="reference_files"))
        return references

    def model_rows(self) -> list[tuple[BoundWidget, BoundField]]:
        """Each model's checkbox beside its size select, in the order of the models."""
        boxes = list(self["models"])
        return [(box, self[model_size_field(int(box.data["value"]))]) for box in boxes]

    def _model_sizes(
        self, models: list[ImageModel], common: str
    ) -> tuple[dict[int, str], list[InvalidInput]]:
        """The size of its own each chosen model was given, and the refusal of every
        model whose size (its own, or the common one) it does not take."""
        sizes: dict[int, str] = {}
        refusals: list[InvalidInput] = []
        for model in models:
            field = model_size_field(model.pk)
            own = self.cleaned_data.get(field) or ""
            try:
                if own:
                    sizes[model.pk] = check_model_size(model, own, field=field)
                elif common:
                    check_model_size(model, common, field="size")
            except InvalidInput as refusal:
                refusals.append(refusal)
        return sizes, refusals

    def _add_input_error(self, exc: InvalidInput, data: dict[str, Any]) -> None:
        field = _FIELD_FOR_INPUT.get(exc.field) or (exc.field if exc.field in self.fields else None)
        if field == "size" and data.get("custom_size"):
            field = "custom_size"
        self.add_error(field, exc.message)


def model_size_field(model_id: int) -> str:
    """The name of a model's own size select."""
    return f"size_{model_id}"


def model_size_choices(model: ImageModel) -> list[Any]:
    """A model's size select: the common size, then each size the model takes, grouped
    by resolution."""
    choices: list[Any] = [("", "As “Size” says")]
    for resolution, group in presets(model.size_rules):
        options = [(preset.size, preset.label) for preset in group]
        if resolution:
            choices.append((resolution, options))
        else:
            choices.extend(options)
    return choices


def _prompt_label(prompt: Prompt) -> str:
    text = " ".join(prompt.text.split())
    text = text if len(text) <= 70 else text[:69] + "…"
    return f"{prompt.title}: {text}" if prompt.title else text
