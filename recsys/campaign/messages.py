"""Message rendering: `templates/<channel>/<offer_type>.<part>.<ext>.j2` into subject and body.

One Jinja2 Environment (StrictUndefined, autoescape for `.html.j2`). A campaign renders each
template once per distinct set of inputs (channel, offer type, value, category), with a marker in
place of the user's first name; the database fills the marker per user in the bulk INSERT
(`replace`, HTML-escaped for html bodies), so 1M offers cost a few hundred renders, not 1M.

Parts per channel: email `subject.txt` + `body.html`; sms `body.txt`; push `subject.txt` (the title)
+ `body.txt`. Variables: first_name, offer_type, value (formatted), value_unit, offer_text (e.g.
"10% off"), category (None for offers without one), channel, validity_hours and validity (e.g. "24
hours"): how long the offer is valid, the campaign's `validity_hours` that sets every offer's
`expires_at = scheduled_at + validity_hours`; email also unsubscribe_url. Use `first_name` and
`unsubscribe_url` as they are (no filters): both are filled in after rendering.

Every email body must contain `unsubscribe_url` (a visible unsubscribe link). It renders as
UNSUBSCRIBE_MARKER, which the sender replaces at send time with the offer's own link (its offer id
and token are known only then: see `recsys.sender.unsubscribe`), so the rendering stays once per
distinct offer and the link's secret stays with the senders.

SMS: a body must fit `sms_max_chars` GSM-7 septets (one part; extension characters count twice)
with the fallback greeting; a user's own first name is used in an sms only when it is plain GSM-7
and the message still fits (decided in SQL), else the fallback. A template error (syntax, undefined
variable, missing file) or a too-long sms raises TemplateProblem naming the template, before any
offer is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from recsys.config.catalog import Catalog
from recsys.errors import RecsysError

MARKER = "\u27e6first_name\u27e7"
UNSUBSCRIBE_MARKER = "\u27e6unsubscribe_url\u27e7"
PARTS = {
    "email": (("subject", "txt"), ("body", "html")),
    "sms": (("body", "txt"),),
    "push": (("subject", "txt"), ("body", "txt")),
}

# GSM 03.38 basic character set (one septet each) and its extension table (two septets each).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "^{}\\[~]|€\f"
GSM_BASIC_PATTERN = "^[" + "".join("\\" + c if c in "\\[]^-" else c for c in GSM_BASIC) + "]*$"
"""A PostgreSQL regular expression matching text made of `GSM_BASIC` characters only: how the
offers' SQL decides that a first name fits an SMS (about 8x faster than `translate()` over the
alphabet, which looks up every character of every name in it)."""


class TemplateProblem(RecsysError):
    """A message template cannot be rendered, or renders a message that cannot be sent."""


def gsm7_length(text: str) -> int | None:
    """Septets `text` needs in GSM-7, or None if it has a character GSM-7 cannot encode."""
    n = 0
    for ch in text:
        if ch in GSM_BASIC:
            n += 1
        elif ch in GSM_EXTENDED:
            n += 2
        else:
            return None
    return n


def validity_text(hours: int) -> str:
    """The validity in words: "1 hour", "24 hours"."""
    return f"{hours} hour" if hours == 1 else f"{hours} hours"


def offer_text(unit: str, value: float, category: str | None) -> str:
    """The offer in words, from the catalog's value unit."""
    v = f"{value:g}"
    if unit == "percent_off":
        return f"{v}% off"
    if unit == "min_order_value":
        return f"free shipping on orders over {v}"
    if unit == "products_shown":
        return f"{v} picks in {category}" if category else f"{v} picks for you"
    if unit == "percent_off_bundle":
        return f"{v}% off a {category} bundle" if category else f"{v}% off a bundle"
    return f"{v} {unit}"


def environment(templates_dir: Path) -> jinja2.Environment:
    """The one Environment: strict about undefined names, autoescaping html templates."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Rendered:
    """One rendered message with the first-name marker still in it."""

    subject: str | None
    body: str
    is_html: bool
    max_chars: int | None  # sms only: the limit the filled body must respect
    fallback_subject: str | None
    fallback_body: str


class Renderer:
    """Renders (channel, offer type, value, category) combinations, each once."""

    def __init__(
        self, catalog: Catalog, templates_dir: Path, *, fallback: str, sms_max_chars: int, validity_hours: int
    ) -> None:
        if validity_hours < 1:
            raise TemplateProblem(f"validity of {validity_hours} hours: must be at least 1")
        self.catalog = catalog
        self.validity_hours = validity_hours
        self.env = environment(templates_dir)
        self.templates_dir = templates_dir
        self.fallback = fallback
        self.sms_max_chars = sms_max_chars
        self._templates: dict[str, jinja2.Template] = {}

    def _template(self, name: str) -> jinja2.Template:
        if name not in self._templates:
            try:
                self._templates[name] = self.env.get_template(name)
            except jinja2.TemplateNotFound as e:
                raise TemplateProblem(f"template {name}: not found in {self.templates_dir}") from e
            except jinja2.TemplateSyntaxError as e:
                raise TemplateProblem(f"template {name}, line {e.lineno}: syntax error: {e.message}") from e
        return self._templates[name]

    def _render(self, name: str, context: dict[str, object]) -> str:
        try:
            return self._template(name).render(context).strip()
        except TemplateProblem:
            raise
        except jinja2.TemplateError as e:
            raise TemplateProblem(f"template {name}: {type(e).__name__}: {e}") from e

    def render(self, channel: str, offer_type: str, value: float, category: str | None) -> Rendered:
        """Subject and body for one combination, with MARKER for the first name (and a fallback copy)."""
        unit = self.catalog.value_units[offer_type]
        context: dict[str, object] = {
            "offer_type": offer_type,
            "value": f"{value:g}",
            "value_unit": unit,
            "offer_text": offer_text(unit, value, category),
            "category": category,
            "channel": channel,
            "validity_hours": self.validity_hours,
            "validity": validity_text(self.validity_hours),
        }
        if channel == "email":
            context["unsubscribe_url"] = UNSUBSCRIBE_MARKER
        out: dict[str, str | None] = {"subject": None, "body": None}
        fallback: dict[str, str | None] = {"subject": None, "body": None}
        names = []
        for part, ext in PARTS[channel]:
            name = f"{channel}/{offer_type}.{part}.{ext}.j2"
            names.append(name)
            out[part] = self._render(name, {**context, "first_name": MARKER})
            fallback[part] = self._render(name, {**context, "first_name": self.fallback})
            if not out[part]:
                raise TemplateProblem(f"template {name}: renders an empty {part}")
        body = str(out["body"])
        if channel == "email" and UNSUBSCRIBE_MARKER not in body:
            raise TemplateProblem(
                f"template {names[-1]}: every email needs a visible unsubscribe link, e.g. "
                '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
            )
        max_chars = None
        if channel == "sms":
            max_chars = self.sms_max_chars
            length = gsm7_length(str(fallback["body"]))
            if length is None:
                raise TemplateProblem(
                    f"template {names[-1]}: the sms has characters outside GSM-7: {fallback['body']!r}"
                )
            if length > max_chars:
                raise TemplateProblem(
                    f"template {names[-1]}: the sms is {length} GSM-7 characters, over the limit of {max_chars} "
                    f"(offer {offer_type} {value:g}, category {category!r})"
                )
        return Rendered(
            subject=out["subject"],
            body=body,
            is_html=channel == "email",
            max_chars=max_chars,
            fallback_subject=fallback["subject"],
            fallback_body=str(fallback["body"]),
        )

    def check_all(self, categories: list[str]) -> None:
        """Render every template of the catalog once (first category, and none) to fail early."""
        sample = categories[:1] or ["general"]
        for channel in self.catalog.channels:
            for offer_type in self.catalog.offer_types:
                for value in self.catalog.values:
                    for category in (*sample, None) if offer_type in self.catalog.category_offer_types else (None,):
                        self.render(channel, offer_type, value, category)
