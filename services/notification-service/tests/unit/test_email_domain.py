"""Pure email rules: locale fallback, wording choice, rendering (autoescape, sandbox), template
checks, unsubscribe tokens, the MIME message, SMTP outcomes and the consent rule."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest

from notification_service.email import domain as ed
from notification_service.email.wording import BUILTIN
from notification_service.webhooks import domain
from servicekit.problems import InvalidInput


def test_locale_chain_falls_back_to_language_program_default_then_english() -> None:
    assert ed.locale_chain("de_at", "fr") == ["de-AT", "de", "fr", "en"]
    assert ed.locale_chain(None, "fr-CA") == ["fr-CA", "fr", "en"]
    assert ed.locale_chain("not a locale!", None) == ["en"]
    assert ed.normalize_locale("PT-br") == "pt-BR"


def test_wording_prefers_the_program_then_builtins_in_chain_order() -> None:
    overrides = {"fr": {"subject": "S-fr", "html": "H", "text": "T"}}
    # the recipient's German has no program wording; the program default (fr) has
    w = ed.choose_wording("advocate_welcome", ["de-AT", "de", "fr", "en"], overrides)
    assert (w.locale, w.source, w.subject) == ("fr", "program", "S-fr")
    w = ed.choose_wording("advocate_welcome", ["de-AT", "de", "en"], {})
    assert (w.locale, w.source) == ("de", "builtin")
    w = ed.choose_wording("advocate_welcome", ["ja"], {})
    assert (w.locale, w.source) == ("en", "builtin")


def test_every_builtin_renders_strictly_with_sample_data() -> None:
    for template in ed.TEMPLATES:
        assert "en" in BUILTIN[template]
        for locale, parts in BUILTIN[template].items():
            wording = ed.Wording(parts["subject"], parts["html"], parts["text"], locale, "builtin")
            rendered = ed.render(wording, ed.sample_context(template), strict=True)
            assert rendered.subject and "\n" not in rendered.subject
            assert "unsubscribe" in rendered.html.lower() or "abmelden" in rendered.html.lower()
            assert "https://notifications.example.com/v1/unsubscribe/sample" in rendered.text


def test_html_is_autoescaped_and_text_is_not() -> None:
    wording = ed.Wording(
        "Hi {{ recipient.name }}", "<p>{{ recipient.name }}</p>", "{{ x }}", "en", "builtin"
    )
    context = {"recipient": {"name": "<b>Bob</b>\r\nBcc: x@y.z"}, "x": "<b>"}
    rendered = ed.render(wording, context)
    assert rendered.html == "<p>&lt;b&gt;Bob&lt;/b&gt;\r\nBcc: x@y.z</p>"
    assert rendered.text == "<b>"
    assert rendered.subject == "Hi <b>Bob</b> Bcc: x@y.z"  # one line: no header injection


def test_templates_are_sandboxed_and_checked() -> None:
    with pytest.raises(InvalidInput) as err:
        ed.check_template("ok", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "t", "invite")
    assert err.value.field == "/html"
    with pytest.raises(InvalidInput) as err:
        ed.check_template("{% if %}", "h", "t", "invite")
    assert err.value.field == "/subject"
    with pytest.raises(InvalidInput) as err:
        ed.check_template("s", "h", "{{ advocate.nmae.first }}", "invite")
    assert err.value.field == "/text"
    ed.check_template(
        "{{ program.name }}", "<a href='{{ advocate.link_url }}'>go</a>", "x", "invite"
    )
    with pytest.raises(InvalidInput) as err:
        ed.template_spec("newsletter")
    assert err.value.field == "/template"


def test_unsubscribe_tokens_cannot_be_forged() -> None:
    token = ed.unsubscribe_token("eml_abc", "k" * 20)
    assert ed.read_unsubscribe_token(token, ["k" * 20]) == "eml_abc"
    assert ed.read_unsubscribe_token(token, ["other-key-123456"]) is None
    forged = "eml_xyz." + token.split(".", 1)[1]
    assert ed.read_unsubscribe_token(forged, ["k" * 20]) is None
    assert ed.read_unsubscribe_token("garbage", ["k" * 20]) is None
    # an old key still accepted while it is listed (rotation)
    assert ed.read_unsubscribe_token(token, ["new-key-456789012", "k" * 20]) == "eml_abc"


def test_the_message_has_both_parts_and_one_click_unsubscribe() -> None:
    rendered = ed.Rendered("Subj é", "<p>Hi</p>", "Hi", "de")
    envelope = ed.Envelope(
        email_id="eml_1",
        sender="Acme <referrals@acme.example>",
        to="sam@example.com",
        rendered=rendered,
        unsubscribe="https://n.example/v1/unsubscribe/t",
        sent_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    raw = ed.build_message(envelope).as_bytes()
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["List-Unsubscribe"] == "<https://n.example/v1/unsubscribe/t>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == "<eml_1@acme.example>" and msg["Subject"] == "Subj é"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Content-Language"] == "de"
    assert msg.get_body(("plain",)).get_content().strip() == "Hi"  # type: ignore[union-attr]
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hi</p>"  # type: ignore[union-attr]


def test_smtp_outcomes() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ed.after_smtp(None, 1, [60], now) == ("sent", None)
    assert ed.after_smtp(550, 1, [60], now) == ("bounced", None)
    assert ed.after_smtp(451, 1, [60], now) == ("retry", now + timedelta(seconds=60))
    assert ed.after_smtp(0, 2, [60], now) == ("failed", None)


def test_mail_without_an_address_is_skipped_not_queued_forever() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # the recipient's copy is here and has no address: final at once
    assert ed.without_address(True, 1, [60, 300], now) == ("skipped", None)
    # no copy yet (another topic): wait on the schedule, then skipped, never failed
    assert ed.without_address(False, 1, [60, 300], now) == (
        "queued",
        now + timedelta(seconds=60),
    )
    assert ed.without_address(False, 2, [60, 300], now)[0] == "queued"
    assert ed.without_address(False, 3, [60, 300], now) == ("skipped", None)


def test_consent_and_suppression() -> None:
    assert ed.suppression("transactional", None, consent=False) is None
    assert ed.suppression("marketing", None, consent=False) == "no_consent"
    assert ed.suppression("marketing", None, consent=True) is None
    assert ed.suppression("transactional", "unsubscribed", consent=True) == "unsubscribed"
    marketing = {"invite", "advocate_share_reminder"}
    assert {k for k, t in ed.TEMPLATES.items() if t.category == "marketing"} == marketing


def test_addresses() -> None:
    assert ed.validate_address(" Sam@Example.COM ") == "sam@example.com"
    for bad in ("sam", "sam@localhost", "Sam <sam@example.com>", "a b@example.com", "@x.io"):
        with pytest.raises(InvalidInput):
            ed.validate_address(bad)
    assert ed.address_key("SAM@example.com") == ed.address_key("sam@example.com")


def test_delivered_types_cover_every_producer_but_clicks() -> None:
    assert "advocate.enrolled.v1" in domain.DELIVERED_EVENT_TYPES
    assert "coupon.allocated.v1" in domain.DELIVERED_EVENT_TYPES
    assert "referral.attributed.v1" in domain.DELIVERED_EVENT_TYPES
    assert "link.clicked.v1" not in domain.DELIVERED_EVENT_TYPES
    assert not any(t.startswith(("delivery.", "email.")) for t in domain.DELIVERED_EVENT_TYPES)


BOMBS = [
    '{{ "x"*10**10 }}',
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    '{% set s = "x"*200000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}',
    '{% for i in range(100000) %}{{ "x"*1000 }}{% endfor %}',
    '{{ "a"|center(1000000000) }}',
    '{{ "{:>999999999}".format(1) }}',
    '{{ "%999999999s"|format(1) }}',
    "{{ 2**100000000 }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
]


@pytest.mark.parametrize("html", BOMBS)
def test_templates_are_bounded_in_output_and_time(html: str) -> None:
    # The review: templates had no resource limits ("x"*10**10, nested ranges).
    started = time.monotonic()
    with pytest.raises(InvalidInput) as err:
        ed.check_template("s", html, "t", "invite")
    assert err.value.field == "/html"
    with pytest.raises(ed.TemplateLimit):
        ed.render(ed.Wording("s", html, "t", "en", "program"), {})
    assert time.monotonic() - started < 2 * ed.RENDER_SECONDS + 1


def test_ordinary_templates_still_render_numbers_and_loops() -> None:
    rendered = ed.render(
        ed.Wording(
            "Hi {{ name }}",
            '{% for i in range(3) %}{{ i }}{% endfor %} {{ "%d"|format(123456789) }}'
            " {{ amount|int }} {{ 'x'|center(9) }}",
            "{{ name|upper }}",
            "en",
            "program",
        ),
        {"name": "Ann", "amount": 10**12},
    )
    assert rendered.html == "012 123456789 1000000000000     x    "
    assert (rendered.subject, rendered.text) == ("Hi Ann", "ANN")


async def test_rendering_runs_off_the_event_loop() -> None:
    # A slow but legal template (a 1 s wordwrap) renders in a thread: the loop keeps ticking.
    from notification_service.email import queue

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    slow = ed.Wording("s", '{{ ("x"*50000)|wordwrap(1) }}', "t", "en", "program")
    started = time.monotonic()
    await queue.off_loop(ed.render, slow, {})
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed > 0.05 and ticks >= elapsed / 0.01 / 4


def test_fraud_actions_are_delivered_and_screening_inputs_are_not() -> None:
    assert "advocate.auto_blocked.v1" in domain.DELIVERED_EVENT_TYPES
    assert "advocate.sighted.v1" not in domain.DELIVERED_EVENT_TYPES
