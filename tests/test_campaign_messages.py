"""Message templates and campaign rules: every template renders, errors name the template, sms
bodies respect the GSM-7 limit, html is escaped; a bad [campaign] key is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsys.campaign.messages import (
    GSM_BASIC,
    GSM_BASIC_PATTERN,
    MARKER,
    UNSUBSCRIBE_MARKER,
    Renderer,
    TemplateProblem,
    gsm7_length,
    offer_text,
)
from recsys.config.catalog import DEFAULT_CONFIG, load_catalog
from recsys.config.rules import load_rules
from recsys.db import Connection, fetch_value
from recsys.errors import ConfigError


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(load_rules().templates_dir, target)
    return target


def _renderer(templates_dir: Path, **kw) -> Renderer:
    return Renderer(
        load_catalog(),
        templates_dir,
        fallback="there",
        sms_max_chars=kw.get("sms_max_chars", 160),
        validity_hours=kw.get("validity_hours", 24),
    )


def test_every_shipped_template_renders_with_catalog_units() -> None:
    renderer = _renderer(load_rules().templates_dir)
    renderer.check_all(["home & garden"])
    email = renderer.render("email", "discount", 10.0, None)
    assert email.subject == f"{MARKER}, 10% off your next order"
    assert "<p>Take 10% off your next order.</p>" in email.body and email.is_html
    assert email.fallback_body.count("Hi there,") == 1
    sms = renderer.render("sms", "free_shipping", 10.0, None)
    assert sms.subject is None and "free shipping on orders over 10" in sms.body and sms.max_chars == 160
    push = renderer.render("push", "recommendation", 5.0, "books")
    assert push.subject and "5 picks in books" in push.body
    # html autoescaping applies to template values too (a category name with markup)
    html = renderer.render("email", "bundle", 15.0, "<b>tools</b>")
    assert "&lt;b&gt;tools&lt;/b&gt;" in html.body and "<b>tools" not in html.body
    assert "<b>tools</b>" in str(html.subject)  # the subject is plain text


def test_every_email_has_an_unsubscribe_link_and_the_campaign_validity() -> None:
    renderer = _renderer(load_rules().templates_dir, validity_hours=48)
    for offer_type in load_catalog().offer_types:
        email = renderer.render("email", offer_type, 10.0, "books")
        for body in (email.body, email.fallback_body):
            assert f'<a href="{UNSUBSCRIBE_MARKER}">Unsubscribe</a>' in body
            assert "Valid for 48 hours." in body and "24" not in body
        sms = renderer.render("sms", offer_type, 10.0, "books")
        assert "Valid 48h." in sms.body and UNSUBSCRIBE_MARKER not in sms.body
    # the default campaign (24 hours) keeps the texts it always had
    sms = _renderer(load_rules().templates_dir).render("sms", "discount", 10.0, None)
    assert sms.fallback_body == "Hi there! Take 10% off your next order. Valid 24h. Reply STOP to opt out."


def test_offer_text_per_unit() -> None:
    assert offer_text("percent_off", 5.0, None) == "5% off"
    assert offer_text("min_order_value", 15.0, None) == "free shipping on orders over 15"
    assert offer_text("products_shown", 5.0, "books") == "5 picks in books"
    assert offer_text("percent_off_bundle", 10.0, "toys") == "10% off a toys bundle"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("email/discount.body.html.j2", "<p>{{ first_name }</p>", r"template email/discount.body.html.j2, line 1"),
        ("sms/bundle.body.txt.j2", "Hi {{ first_name }} {{ missing_var }}", r"'missing_var' is undefined"),
        ("push/discount.subject.txt.j2", None, r"template push/discount.subject.txt.j2: not found"),
        ("sms/discount.body.txt.j2", "x" * 161, r"sms is 161 GSM-7 characters, over the limit of 160"),
        ("sms/recommendation.body.txt.j2", "{{ offer_text }} \u2764", r"characters outside GSM-7"),
        ("push/bundle.body.txt.j2", "{% if false %}x{% endif %}", r"renders an empty body"),
        ("email/bundle.body.html.j2", "<p>{{ offer_text }}</p>", r"every email needs a visible unsubscribe link"),
        ("sms/bundle.body.txt.j2", "{{ offer_text }} {{ unsubscribe_url }}", r"'unsubscribe_url' is undefined"),
    ],
)
def test_template_errors_name_the_template(templates: Path, name: str, text: str | None, message: str) -> None:
    path = templates / name
    if text is None:
        path.unlink()
    else:
        path.write_text(text)
    with pytest.raises(TemplateProblem, match=message) as info:
        _renderer(templates).check_all(["books"])
    assert name in str(info.value)


def test_the_sql_pattern_accepts_exactly_the_gsm_basic_characters(db: Connection) -> None:
    # every code point PostgreSQL can hold (the surrogates cannot be text), matched in the database
    matched = fetch_value(
        db,
        "select array_agg(i order by i) from generate_series(1, 1114111) as i "
        "where (i < 55296 or i > 57343) and chr(i) ~ %s",
        (GSM_BASIC_PATTERN,),
    )
    assert matched == sorted(ord(c) for c in GSM_BASIC)
    names = ["José", "Zoë", "O'Brien", "Jean-Luc", "A^B", "[Ann]", "Ann\\", "Łukasz", "Bob", "ÆØÅ äöñü", ""]
    sql = "select array_agg(n ~ %s order by k) from unnest(%s::text[]) with ordinality as t(n, k)"
    in_sql = fetch_value(db, sql, (GSM_BASIC_PATTERN, names))
    assert in_sql == [all(c in GSM_BASIC for c in n) for n in names]
    assert in_sql.count(True) == 6  # José, O'Brien, Jean-Luc, Bob, ÆØÅ äöñü and the empty name


def test_gsm7_lengths() -> None:
    assert gsm7_length("Hello") == 5
    assert gsm7_length("price: 5€ [ok]") == 17  # € [ ] count twice
    assert gsm7_length("Zoë") is None
    assert gsm7_length("José") == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("holdout_share = 1.5", r"\[campaign\] holdout_share must be a number in \[0, 1\)"),
        ('send_time = "25:00"', r"\[campaign\] send_time must be a time as \"HH:MM\""),
        ("validity_hours = 0", r"\[campaign\] validity_hours must be a whole number >= 1"),
        ("holdoutshare = 0.1", r"\[campaign\] has unknown keys \['holdoutshare'\]"),
        ('exploration_salt = "holdout-v1"', r"exploration_salt must differ from holdout_salt"),
        ('[campaign.quiet_hours]\nfax = { start = "21:00", end = "08:00" }', r"quiet_hours.fax: unknown channel"),
        ('[campaign.quiet_hours]\nsms = { start = "9pm", end = "08:00" }', r"quiet_hours.sms.start must be a time"),
        ("[campaign.frequency_cap]\ntotal = -1", r"total must be a whole number >= 1"),
    ],
)
def test_invalid_campaign_rules_name_the_key(tmp_path: Path, edit: str, message: str) -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    head, _, _ = text.partition("[campaign]")
    path = tmp_path / "config.toml"
    path.write_text(head + "[campaign]\n" + edit + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_default_rules() -> None:
    rules = load_rules()
    assert (rules.active_window_days, rules.holdout_share, rules.exploration_share) == (90, 0.05, 0.05)
    assert (rules.cap_total, rules.cap_window_days, rules.cooldown_days, rules.max_attempts) == (3, 7, 2, 3)
    assert set(rules.quiet_hours) == {"sms", "push"} and rules.retention_days == 180
    assert rules.as_json()["quiet_hours"]["sms"] == {"start": "21:00", "end": "08:00"}
