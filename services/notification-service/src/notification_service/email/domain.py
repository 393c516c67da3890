"""Pure rules of email: which templates exist and what kind of mail each is, which locale and
which wording a mail gets, how templates render, the unsubscribe token, the MIME message, and
the events a mail publishes.
No I/O: the repository supplies contacts, programs and template overrides, the sender does SMTP.

Transactional or marketing, per template (the consent rule):
- Transactional mail tells a person about their own account and activity: the advocate's
  welcome with their link (they just enrolled), their rewards (pending, available), their
  milestones, thank-yous, a friend's own reward or coupon, and a converted friend's own new
  link. It needs no marketing consent.
- Marketing mail promotes the merchant to someone who did not ask for that message. The invite
  is marketing: the friend has no relationship with the merchant yet. It goes out only on an
  advocate's explicit request naming the friend, with the request's `consent: true` (the
  merchant's UI records that the advocate confirmed the friend agreed to be contacted), at most
  once per (advocate, friend address), within a per-advocate daily limit. A share reminder
  (the advocate has not shared yet) is marketing too: it needs the advocate's consent.
- Both kinds carry one-click unsubscribe, and no mail of any kind goes to a suppressed
  (unsubscribed, bounced, complained) address.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Literal

from jinja2 import ChainableUndefined, StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from notification_service.email.wording import BUILTIN
from referral_events.contracts import notification as out
from servicekit.money import format_minor
from servicekit.problems import InvalidInput

Category = Literal["transactional", "marketing"]
RecipientKind = Literal["advocate", "friend", "invitee"]


@dataclass(frozen=True)
class TemplateSpec:
    key: str
    category: Category
    recipient: RecipientKind
    description: str


TEMPLATES: dict[str, TemplateSpec] = {
    t.key: t
    for t in (
        TemplateSpec(
            "advocate_welcome", "transactional", "advocate", "advocate enrolled: their link"
        ),
        TemplateSpec("invite", "marketing", "invitee", "an advocate invites a friend"),
        TemplateSpec(
            "advocate_reward_pending", "transactional", "advocate", "advocate's reward pending"
        ),
        TemplateSpec(
            "advocate_reward_available",
            "transactional",
            "advocate",
            "advocate's reward available",
        ),
        TemplateSpec("friend_reward", "transactional", "friend", "friend's reward available"),
        TemplateSpec("friend_coupon", "transactional", "friend", "friend's coupon allocated"),
        TemplateSpec("milestone_reached", "transactional", "advocate", "advocate milestone"),
        TemplateSpec(
            "advocate_friend_converted",
            "transactional",
            "advocate",
            "thank-you: a friend the advocate referred converted (before any reward)",
        ),
        TemplateSpec(
            "friend_thank_you", "transactional", "friend", "thank-you: the friend's first purchase"
        ),
        TemplateSpec(
            "friend_share_prompt",
            "transactional",
            "advocate",
            "a converted friend, enrolled as an advocate: their own link to share",
        ),
        TemplateSpec(
            "advocate_share_reminder",
            "marketing",
            "advocate",
            "an advocate who has not shared yet: a reminder with their link (program's schedule)",
        ),
    )
}

DEFAULT_LOCALE = "en"
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def template_spec(key: str) -> TemplateSpec:
    spec = TEMPLATES.get(key)
    if spec is None:
        raise InvalidInput(
            f"no template '{key}'; known: {', '.join(sorted(TEMPLATES))}", field="/template"
        )
    return spec


def normalize_locale(value: str | None) -> str | None:
    """ "de_at" -> "de-AT"; None for anything that is not a locale tag."""
    if not value or not _LOCALE.fullmatch(value.strip()):
        return None
    parts = value.strip().replace("_", "-").split("-")
    head = parts[0].lower()
    rest = [p.upper() if len(p) == 2 else p for p in parts[1:]]
    return "-".join([head, *rest])


def validate_locale(value: str, field: str = "/locale") -> str:
    locale = normalize_locale(value)
    if locale is None:
        raise InvalidInput(f"'{value}' is not a locale tag such as 'en' or 'de-AT'", field=field)
    return locale


def locale_chain(requested: str | None, program_default: str | None) -> list[str]:
    """Locales to try, best first: the recipient's, its language, the program's default, its
    language, then English."""
    chain: list[str] = []
    for value in (requested, program_default, DEFAULT_LOCALE):
        locale = normalize_locale(value)
        if locale is None:
            continue
        for candidate in (locale, locale.split("-")[0]):
            if candidate not in chain:
                chain.append(candidate)
    return chain


@dataclass(frozen=True)
class Wording:
    subject: str
    html: str
    text: str
    locale: str
    source: Literal["program", "builtin"]


def choose_wording(
    template: str,
    chain: Sequence[str],
    overrides: Mapping[str, Mapping[str, str]],
) -> Wording:
    """The merchant's wording for the program in the first locale of `chain` that has one,
    else the built-in wording in the first locale that has one (English always does).
    `overrides` maps locale -> {subject, html, text}."""
    for locale in chain:
        o = overrides.get(locale)
        if o is not None:
            return Wording(o["subject"], o["html"], o["text"], locale, "program")
    builtins = BUILTIN[template]
    for locale in chain:
        b = builtins.get(locale)
        if b is not None:
            return Wording(b["subject"], b["html"], b["text"], locale, "builtin")
    b = builtins[DEFAULT_LOCALE]
    return Wording(b["subject"], b["html"], b["text"], DEFAULT_LOCALE, "builtin")


# --- rendering --------------------------------------------------------------------------------

# Merchants write templates: sandboxed, so a template cannot reach Python internals (server-side
# template injection). HTML autoescapes every value; subject and text are plain text.
#
# And bounded: a template cannot make a huge value ("x"*10**10, 10**10**10, a format width of a
# billion), output more than MAX_OUTPUT characters per part, loop more than MAX_STEPS times
# (nested ranges), or run longer than RENDER_SECONDS. Every loop of a template is wrapped in a
# guard at parse time, and every call, operator and output chunk checks the budget, so a
# runaway template stops itself (TemplateLimit) wherever it runs; callers on the event loop run
# it in a thread (queue.off_loop).
MAX_OUTPUT = 256 * 1024
MAX_STEPS = 200_000
RENDER_SECONDS = 1.0
_MAX_INT_BITS = 4096
# The largest number a call or filter takes as a parameter (center(10**9) would allocate a
# gigabyte before its result could be measured).
_MAX_ARGUMENT = 10**6
# A format width or precision of a million or more ("%9999999s", "{:>9999999}").
_WIDE = re.compile(r"[%:{][-+ #0<>^=,_.*]*\d{6,}")


class TemplateLimit(TemplateError):
    """A template went past a resource bound."""


@dataclass
class _Budget:
    deadline: float
    steps: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise TemplateLimit(f"the template takes more than {MAX_STEPS} steps")
    if budget.steps % 64 == 0 and time.monotonic() > budget.deadline:
        raise TemplateLimit(f"the template takes longer than {RENDER_SECONDS} s to render")


def _check_value(value: Any, *, argument: bool = False) -> None:
    """`argument`: a parameter of a call or filter (a width, a count), not the value it acts on."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS or (argument and abs(value) > _MAX_ARGUMENT):
            raise TemplateLimit("a number in the template is too large")
    elif isinstance(value, str) and _WIDE.search(value):
        raise TemplateLimit("a format width in the template is too large")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | bytes) else 1


def _guard(iterable: Any) -> Any:
    for item in iterable:
        _tick()
        yield item


class _Bounded(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(abs(left), 2).bit_length() * right > _MAX_INT_BITS:
                raise TemplateLimit("a power in the template is too large")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                numeric = isinstance(seq, int | float)
                if isinstance(n, int) and not numeric and _size(seq) * n > MAX_OUTPUT:
                    raise TemplateLimit("a repeated value in the template is too large")
        elif operator == "%":
            _check_value(left)
        result = super().call_binop(context, operator, left, right)
        _check_value(result)
        if _size(result) > MAX_OUTPUT:
            raise TemplateLimit("a value in the template is too large")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        for value in (*args, *kwargs.values()):
            _check_value(value, argument=True)
        # "{:>9999999}".format(x): the format string is the bound method's own string.
        _check_value(getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None))
        result = super().call(__context, __obj, *args, **kwargs)
        if _size(result) > MAX_OUTPUT:
            raise TemplateLimit("a value in the template is too large")
        return result

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Every loop iterates through _guard: a step of the budget per item (nested loops of
        # range(100000) each would otherwise run 10^10 empty iterations).
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name("_loop_guard", "load"), [loop.iter], [], None, None)
        return tree


def _bounded_filter(f: Any, parameters: bool = True) -> Any:
    """`parameters`: the filter's further arguments are widths or counts (not for `format`,
    whose arguments are values and whose format string is checked for widths)."""
    # The value a filter acts on comes first (after the context or environment it may take).
    first = 2 if hasattr(f, "jinja_pass_arg") else 1

    @functools.wraps(f)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if first <= len(args):
            _check_value(args[first - 1])
        for value in (*args[first:], *kwargs.values()):
            _check_value(value, argument=parameters)
        result = f(*args, **kwargs)
        if _size(result) > MAX_OUTPUT:
            raise TemplateLimit("a value in the template is too large")
        return result

    return bounded


def _environment(autoescape: bool, undefined: type[Undefined]) -> _Bounded:
    env = _Bounded(autoescape=autoescape, undefined=undefined)
    env.globals["_loop_guard"] = _guard
    env.filters = {name: _bounded_filter(f, name != "format") for name, f in env.filters.items()}
    return env


_HTML = _environment(True, ChainableUndefined)
_TEXT = _environment(False, ChainableUndefined)
_HTML_STRICT = _environment(True, StrictUndefined)
_TEXT_STRICT = _environment(False, StrictUndefined)


def _render(env: _Bounded, source: str, context: Mapping[str, Any]) -> str:
    """One part within the bounds: output streamed and counted, the budget checked per chunk."""
    out: list[str] = []
    size = 0
    try:
        for chunk in env.from_string(source).generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateLimit(f"the template renders more than {MAX_OUTPUT} characters")
            _tick()
            out.append(chunk)
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise TemplateLimit(f"the template cannot render: {type(exc).__name__}") from None
    return "".join(out)


@contextmanager
def _bounded() -> Iterator[None]:
    token = _BUDGET.set(_Budget(time.monotonic() + RENDER_SECONDS))
    try:
        yield
    finally:
        _BUDGET.reset(token)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    locale: str


def render(wording: Wording, context: Mapping[str, Any], *, strict: bool = False) -> Rendered:
    """`strict` refuses names the context lacks: used when a merchant saves or previews a
    template, so a typo is a 422 then rather than a blank in a customer's mail later."""
    html_env, text_env = (_HTML_STRICT, _TEXT_STRICT) if strict else (_HTML, _TEXT)
    with _bounded():
        subject = _render(text_env, wording.subject, context)
        # A header is one line: newlines in a subject would be a header injection.
        subject = " ".join(subject.split())
        return Rendered(
            subject=subject,
            html=_render(html_env, wording.html, context),
            text=_render(text_env, wording.text, context),
            locale=wording.locale,
        )


def check_template(subject: str, html: str, text: str, template: str) -> None:
    """Compiles and renders with the template's sample data; InvalidInput naming the part."""
    sample = sample_context(template)
    for part, source, env in (
        ("subject", subject, _TEXT_STRICT),
        ("html", html, _HTML_STRICT),
        ("text", text, _TEXT_STRICT),
    ):
        try:
            with _bounded():
                _render(env, source, sample)
        except TemplateError as exc:
            raise InvalidInput(f"{part}: {exc}"[:500], field=f"/{part}") from None


def money(amount: int, unit: str) -> str:
    """'20.00 USD' from 2000 USD minor units; '500 points' for non-currencies."""
    return f"{format_minor(amount, unit)} {unit}"


@dataclass(frozen=True)
class Person:
    name: str | None = None
    link_url: str | None = None
    code: str | None = None


def build_context(
    template: str,
    *,
    program_name: str | None,
    recipient: Person,
    advocate: Person,
    facts: Mapping[str, Any],
    unsubscribe_url: str,
) -> dict[str, Any]:
    """Every template sees the same names; absent values are None (rendered empty)."""
    return {
        "template": template,
        "program": {"name": program_name or ""},
        "recipient": {"name": recipient.name},
        "advocate": {
            "name": advocate.name,
            "link_url": advocate.link_url,
            "code": advocate.code,
        },
        "reward": facts.get("reward"),
        "coupon": facts.get("coupon"),
        "milestone": facts.get("milestone"),
        "invite": facts.get("invite"),
        "conversion": facts.get("conversion"),
        "unsubscribe_url": unsubscribe_url,
    }


_SAMPLE_FACTS: dict[str, Any] = {
    "reward": {
        "amount": money(2000, "USD"),
        "amount_minor": 2000,
        "unit": "USD",
        "kind": "cash",
        "available_at": "2026-12-24",
    },
    "coupon": {"code": "FRIEND-7QX2"},
    "milestone": {"milestone": 10, "referral_count": 10, "bonus": money(5000, "USD")},
    "invite": {"message": "You'll love this - I use it every day!"},
    "conversion": {"type": "purchase", "purchase": True},
}


def sample_context(template: str) -> dict[str, Any]:
    return build_context(
        template,
        program_name="Acme Rewards",
        recipient=Person(name="Sam"),
        advocate=Person(name="Jane", link_url="https://go.example.com/r/JANE20", code="JANE20"),
        facts=_SAMPLE_FACTS,
        unsubscribe_url="https://notifications.example.com/v1/unsubscribe/sample",
    )


def reward_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a reward.* event a template shows (no personal data)."""
    available_at = data.get("available_at")
    return {
        "reward": {
            "amount": money(int(data["amount"]), str(data["unit"])),
            "amount_minor": int(data["amount"]),
            "unit": data["unit"],
            "kind": data.get("kind"),
            "available_at": str(available_at)[:10] if available_at else None,
        }
    }


def reminder_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of an advocate.share_reminder_due a reminder shows: which of how many."""
    return {"reminder": {"number": data["reminder"], "of": data["max_reminders"]}}


def conversion_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a conversion.attributed a thank-you shows (no personal data)."""
    return {
        "conversion": {
            "type": data.get("conversion_type"),
            "purchase": data.get("conversion_type") == "purchase",
        }
    }


def coupon_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"coupon": {"code": data["coupon_code"]}}


def milestone_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "milestone": {
            "milestone": data.get("milestone"),
            "referral_count": data.get("referral_count"),
            "bonus": money(int(data["amount"]), str(data["unit"])) if data.get("amount") else None,
        }
    }


# --- addresses, suppression and consent -------------------------------------------------------


def normalize_address(value: str) -> str:
    return value.strip().lower()


def validate_address(value: str, field: str = "/email") -> str:
    """A plain addr-spec: one @, a dotted domain, no spaces or display name."""
    address = normalize_address(value)
    _, parsed = parseaddr(address)
    local, _, domain = parsed.partition("@")
    if (
        parsed != address
        or not local
        or "." not in domain
        or any(c.isspace() for c in address)
        or len(address) > 254
    ):
        raise InvalidInput(f"'{value}' is not an email address", field=field)
    return address


def address_key(address: str) -> str:
    """Invitees are recorded by this digest, so the de-duplication key holds no address."""
    return hashlib.sha256(normalize_address(address).encode()).hexdigest()


SuppressReason = Literal["unsubscribed", "bounced", "complained", "manual", "no_consent"]


def suppression(
    category: Category, suppressed_as: str | None, consent: bool
) -> SuppressReason | None:
    """Why this mail must not go out, or None. A suppressed address gets nothing at all;
    marketing needs consent."""
    if suppressed_as is not None:
        return suppressed_as  # type: ignore[return-value]
    if category == "marketing" and not consent:
        return "no_consent"
    return None


# --- unsubscribe tokens -----------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsubscribe_token(email_id: str, key: str) -> str:
    """The mail's id and an HMAC of it: the link names no address, and cannot be forged to
    unsubscribe someone else."""
    mac = hmac.new(key.encode(), f"unsubscribe:{email_id}".encode(), hashlib.sha256).digest()
    return f"{email_id}.{_b64(mac[:18])}"


def read_unsubscribe_token(token: str, keys: Iterable[str]) -> str | None:
    """The email id if the token is genuine under one of `keys`."""
    email_id, _, _mac = token.rpartition(".")
    if not email_id:
        return None
    for key in keys:
        if hmac.compare_digest(unsubscribe_token(email_id, key), token):
            return email_id
    return None


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/v1/unsubscribe/{token}"


# --- the message ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    email_id: str
    sender: str
    to: str
    rendered: Rendered
    unsubscribe: str
    sent_at: datetime
    headers: dict[str, str] = field(default_factory=dict)


def build_message(envelope: Envelope) -> EmailMessage:
    """multipart/alternative (text, then HTML). The Message-ID derives from the email id, so a
    mail sent again after a crash carries the same id and clients can fold the two.
    List-Unsubscribe with List-Unsubscribe-Post is RFC 8058 one-click unsubscribe (mailbox
    providers also require the outgoing MTA to DKIM-sign these headers)."""
    msg = EmailMessage()
    msg["From"] = envelope.sender
    msg["To"] = envelope.to
    msg["Subject"] = envelope.rendered.subject
    msg["Date"] = format_datetime(envelope.sent_at)
    _, sender_address = parseaddr(envelope.sender)
    domain = sender_address.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = f"<{envelope.email_id}@{domain}>"
    msg["List-Unsubscribe"] = f"<{envelope.unsubscribe}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in envelope.headers.items():
        msg[name] = value
    msg.set_content(envelope.rendered.text)
    msg.add_alternative(envelope.rendered.html, subtype="html")
    # After the content: set_content drops every Content-* header set before it.
    msg["Content-Language"] = envelope.rendered.locale
    return msg


# --- sending outcome --------------------------------------------------------------------------

SendOutcome = Literal["sent", "retry", "failed", "bounced"]


def after_smtp(
    code: int | None, attempt: int, schedule: Sequence[float], now: datetime
) -> tuple[SendOutcome, datetime | None]:
    """What follows an SMTP attempt: `code` is the server's reply code (None: the mail was
    accepted; 0: no reply, e.g. the connection failed). A 5xx refusal of the recipient is a
    hard bounce; 4xx and connection trouble are retried on `schedule`, then given up."""
    if code is None:
        return "sent", None
    if 500 <= code < 600:
        return "bounced", None
    if attempt > len(schedule):
        return "failed", None
    return "retry", now + timedelta(seconds=schedule[attempt - 1])


MailStatus = Literal["queued", "sent", "suppressed", "failed", "skipped"]
# Why a mail was skipped (final, nothing was sent or tried): its recipient has no address.
SkipReason = Literal["no_address"]

_STATUS_AFTER: dict[SendOutcome, MailStatus] = {
    "sent": "sent",
    "retry": "queued",
    "failed": "failed",
    "bounced": "failed",
}


def status_after(outcome: SendOutcome) -> MailStatus:
    """A mail's status after an attempt with this outcome: queued again for a retry."""
    return _STATUS_AFTER[outcome]


def without_address(
    contact_known: bool, attempt: int, schedule: Sequence[float], now: datetime
) -> tuple[MailStatus, datetime | None]:
    """What becomes of a mail whose recipient has no address. When the recipient's copy is
    here and has none (an advocate enrolled without one), the mail is `skipped` at once: no
    retry can find one. When no copy has arrived yet (it travels on another topic), the mail
    waits for it on the retry schedule and is skipped after the last retry. Never `failed`:
    that is for mail the SMTP server refused."""
    if not contact_known and attempt <= len(schedule):
        return "queued", now + timedelta(seconds=schedule[attempt - 1])
    return "skipped", None


def invite_allowance(sent_last_day: int, limit: int) -> int:
    return max(limit - sent_last_day, 0)


# --- the events a mail publishes --------------------------------------------------------------


def _about(mail: Mapping[str, Any]) -> dict[str, Any]:
    """What email.* events say of a mail (a queue row): never its address."""
    return {
        "email_id": mail["id"],
        "template": mail["template"],
        "recipient_kind": mail["recipient_kind"],
        "recipient_id": mail["recipient_id"],
        "program_id": mail["program_id"],
        "cause_event_id": mail["cause_key"],
    }


def sent_event(mail: Mapping[str, Any], locale: str) -> out.EmailSent:
    return out.EmailSent(**_about(mail), locale=locale)


def suppressed_event(mail: Mapping[str, Any], reason: str) -> out.EmailSuppressed:
    return out.EmailSuppressed(**_about(mail), reason=reason)
