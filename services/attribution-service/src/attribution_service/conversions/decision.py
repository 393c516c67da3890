"""The one decision on a conversion, pure: whether its evidence is accepted (`admit`), which
candidate it chooses (`choose`), and, with the candidate's screening facts and what conversions
decided earlier in the same batch add to them (`Earlier`, folded forward by the caller),
`decide` settles it under the program's settings and fraud policy (those of the chosen
candidate's program). A `Decided` is the decision with the rows it writes and the events it
publishes, one builder whichever path decided the conversion: the single path (handlers), the
group commit (batch), a conversion that waits (`waiting`) or a reviewer (`reviewed`).

The group commit works as a state machine: the facts of its whole batch are read set-wise first,
each conversion is decided here in order against them and the folded-forward `Earlier`, and the
rows are written set-wise after. The single path reads the same facts for one conversion (with
nothing earlier) and writes the same rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from attribution_service.conversions import domain, events, fraud
from attribution_service.conversions.domain import Candidate
from attribution_service.conversions.facts import (
    Conversion,
    Evidence,
    RingAsk,
    Screening,
    ScreeningAsk,
)
from attribution_service.programs.domain import ProgramSettings
from referral_events.outbox import OutboxRow
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput

Status = Literal["pending", "attributed", "review", "rejected", "organic"]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def admit(conv: Conversion, evidence: Evidence, *, too_old_for_lag: bool) -> bool:
    """Refuses evidence of another tenant, and unknown evidence that cannot be a late event:
    awaited before without arriving, or named by a conversion older than the grace period
    (`too_old_for_lag`). Returns whether the conversion must wait for it (unknown, but it may
    still arrive)."""
    waits = False
    for kind, value, owner, field in (
        ("code", conv.code_key, evidence.code_tenant, "/code"),
        ("click", conv.click_id, evidence.click_tenant, "/click_id"),
    ):
        if value is None:
            continue
        label = "referral code" if kind == "code" else "click id"
        if owner is not None and owner != conv.tenant_id:
            raise InvalidInput(f"unknown {label} '{value}'", field=field)
        if owner is None:
            if f"{kind}:{conv.tenant_id}" in evidence.expired or too_old_for_lag:
                raise InvalidInput(f"unknown {label} '{value}'", field=field)
            waits = True
    return waits


def repeat_of_order(conv: Conversion, amount_minor: int | None, currency: str | None) -> None:
    """A request naming a (type, order id) already recorded, with `amount_minor` and
    `currency`, is that conversion only if it says the same about the money: another amount or
    currency is a conflict naming the field (as a repeated Idempotency-Key with another body
    is), never a silent answer with the first amount. Both paths (handlers, the group commit)
    call it through handlers.existing_conversion."""
    if conv.currency != currency:
        raise Conflict(
            f"order '{conv.order_id}' was recorded in {currency or 'no currency'}; "
            "a changed order is a refund or another order id",
            field="/currency",
        )
    if conv.amount_minor != amount_minor:
        raise Conflict(
            f"order '{conv.order_id}' was recorded with another amount; "
            "a changed order is a refund or another order id",
            field="/amount",
        )


@dataclass(frozen=True, slots=True)
class Chosen:
    """A conversion and the evidence chosen for it, before screening."""

    conversion: Conversion
    choice: domain.Choice
    # the click it names is known: the customer is linked to it (first/last click later)
    named_click: bool

    def ask(self) -> ScreeningAsk | None:
        """What screening the candidate reads (None: no candidate, nothing to screen)."""
        cand = self.choice.candidate
        if cand is None:
            return None
        conv = self.conversion
        return ScreeningAsk.of(
            conv,
            cand.program_id,
            cand.advocate_id,
            anchor=cand.click.clicked_at if cand.click else conv.occurred_at,
            network_window=timedelta(
                hours=self.choice.settings.fraud.self_referral.network_window_hours
            ),
        )

    def ring_ask(self) -> RingAsk | None:
        """What the ring rule reads (None: no candidate, or the rule is off)."""
        cand = self.choice.candidate
        ring = self.choice.settings.fraud.ring
        if cand is None or not ring.enabled:
            return None
        return RingAsk.of(self.conversion, timedelta(hours=ring.window_hours))


def choose(conv: Conversion, evidence: Evidence) -> Chosen:
    """The evidence chosen for `conv` from its evidence context."""
    choice = domain.choose(
        conversion_type=conv.type,
        occurred_at=conv.effective_at,
        code=evidence.code,
        clicks=evidence.clicks,
        referrals=evidence.referrals,
        settings_by_program=evidence.settings,
    )
    named = bool(conv.click_id) and any(k.click_id == conv.click_id for k in evidence.clicks)
    return Chosen(conv, choice, named)


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the conversions decided earlier in the same batch add to a later one's screening:
    its screening facts were read before any of them was written."""

    decided: tuple[Decided, ...] = ()

    def then(self, decided: Decided) -> Earlier:
        return Earlier((*self.decided, decided))

    def add_to(
        self, facts: fraud.Facts, conv: Conversion, cand: Candidate, screening: Screening
    ) -> fraud.Facts:
        """`facts` with what the screening read would have counted of these, had they been
        written first (the predicates of repository's screening columns)."""
        occurred = facts.occurred_at
        hour = day = ip = device = denied = 0
        sightings: list[fraud.Sighting] = []
        neighbours: list[fraud.Neighbour] = []
        mine = list(facts.signals.items())
        low = screening.asked.anchor - screening.asked.network_window
        high = screening.asked.anchor + screening.asked.network_window
        for d in self.decided:
            e = d.conversion
            in_day = occurred - DAY < e.occurred_at <= occurred
            if (
                d.status in ("attributed", "review")
                and d.candidate is not None
                and d.candidate.advocate_id == cand.advocate_id
                and in_day
            ):
                day += 1
                hour += e.occurred_at > occurred - HOUR
            if (
                d.candidate is not None
                and d.candidate.advocate_id == cand.advocate_id
                and fraud.counts_against_advocate(d.status, d.reasons)
            ):
                denied += 1
            if e.tenant_id == conv.tenant_id and e.type == "signup" and in_day:
                ip += bool(facts.ip_hash) and e.ip_hash == facts.ip_hash
                device += bool(facts.device_hash) and e.device_hash == facts.device_hash
            if (
                facts.advocate_customer_id is not None
                and e.tenant_id == conv.tenant_id
                and e.customer_id == facts.advocate_customer_id
                and (e.ip_hash is not None or e.device_hash is not None)
                and low <= e.occurred_at <= high
            ):
                sightings.append(fraud.Sighting(e.occurred_at, e.ip_hash, e.device_hash))
            if (
                facts.advocate_id is not None
                and d.candidate is not None
                and d.status in ("attributed", "review", "rejected")
                and e.tenant_id == conv.tenant_id
                and any(d.signals.get(k) == v for k, v in mine)
            ):
                neighbours.append(
                    fraud.Neighbour(
                        e.id,
                        e.customer_id,
                        d.candidate.advocate_id,
                        e.received_at or e.occurred_at,
                        d.signals,
                    )
                )
        if not (hour or day or ip or device or denied or sightings or neighbours):
            return facts
        return replace(
            facts,
            advocate_conversions_hour=facts.advocate_conversions_hour + hour,
            advocate_conversions_day=facts.advocate_conversions_day + day,
            signups_same_ip_day=facts.signups_same_ip_day + ip,
            signups_same_device_day=facts.signups_same_device_day + device,
            advocate_denied=facts.advocate_denied + denied,
            advocate_sightings=(*facts.advocate_sightings, *sightings),
            neighbours=(*facts.neighbours, *neighbours),
        )


NOTHING_EARLIER = Earlier()


# --- the rows a decision writes ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerClick:
    """The customer named this click (later conversions choose first/last click among them)."""

    tenant_id: str
    customer_id: str
    click_id: str


@dataclass(frozen=True, slots=True)
class NewReferral:
    """The friend's referral in the program, created by their first attribution (the id is
    used only then; an existing referral keeps its own)."""

    id: str
    tenant_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    evidence: str
    click_id: str | None


@dataclass(frozen=True, slots=True)
class Referred:
    """The referral as written: its id, whether this write created it, its click."""

    id: str
    created: bool
    click_id: str | None


@dataclass(frozen=True, slots=True)
class NewReview:
    id: str
    tenant_id: str
    conversion_id: str
    program_id: str
    advocate_id: str
    reasons: tuple[str, ...]
    risk_score: int = 0


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """The columns a decision sets on its conversion; its sequence among the referral's
    attributed conversions of its type is numbered by the statement that writes it."""

    status: Status
    decision: str | None
    program_id: str | None
    advocate_id: str | None
    referral_id: str | None
    evidence: str | None
    # None: the explanation stored, with `review` (a reviewer's decision) added to it
    explanation: dict[str, object] | None
    review: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class Decided:
    """A conversion's decision, the rows it writes, and the events it publishes once written."""

    conversion: Conversion
    status: Status
    candidate: Candidate | None = None
    verdict: fraud.Verdict | None = None
    reasons: tuple[str, ...] = ()
    explanation: dict[str, object] | None = None
    named_click: bool = False
    # the new referral's id (attributed), and the review: opened here (status review) or the
    # reviewer's that decided (review_note)
    referral_id: str | None = None
    review_id: str | None = None
    review_note: dict[str, object] | None = None
    risk_score: int = 0
    # the program's auto_block.after_denied (None: off)
    auto_block_after: int | None = None
    # the conversion's ring signals, computed once when screened (later ones of the batch
    # compare with them)
    signals: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def screened(self) -> bool:
        """Decided by fraud screening (not by a reviewer; not waiting, not organic)."""
        return self.verdict is not None and self.review_note is None

    def click_link(self) -> CustomerClick | None:
        c = self.conversion
        if not self.named_click or c.click_id is None:
            return None
        return CustomerClick(c.tenant_id, c.customer_id, c.click_id)

    def referral(self) -> NewReferral | None:
        cand = self.candidate
        if self.status != "attributed" or cand is None or self.referral_id is None:
            return None
        c = self.conversion
        return NewReferral(
            self.referral_id,
            c.tenant_id,
            cand.program_id,
            cand.advocate_id,
            c.customer_id,
            cand.evidence,
            cand.click.click_id if cand.click else None,
        )

    def review(self) -> NewReview | None:
        cand = self.candidate
        if self.status != "review" or cand is None or self.review_id is None:
            return None
        c = self.conversion
        return NewReview(
            self.review_id,
            c.tenant_id,
            c.id,
            cand.program_id,
            cand.advocate_id,
            self.reasons,
            self.risk_score,
        )

    def row(self, referral: Referred | None) -> DecisionRow:
        cand = self.candidate
        return DecisionRow(
            status=self.status,
            decision=self.verdict,
            program_id=cand.program_id if cand else None,
            advocate_id=cand.advocate_id if cand else None,
            referral_id=referral.id if referral else None,
            evidence=cand.evidence if cand else None,
            explanation=self.explanation,
            review=self.review_note,
        )

    def events(
        self, referral: Referred | None, *, sequence: int | None, is_first_purchase: bool
    ) -> list[OutboxRow]:
        """The events, given what writing the rows returned (the referral, the sequence)."""
        cand, conv = self.candidate, self.conversion
        if cand is None:
            return []
        if self.status == "attributed":
            assert referral is not None and sequence is not None
            rows = []
            if referral.created:
                rows.append(events.referral_attributed(conv, cand, referral.id, referral.click_id))
            rows.append(
                events.conversion_attributed(
                    conv,
                    cand,
                    referral_id=referral.id,
                    sequence=sequence,
                    is_first_purchase=is_first_purchase,
                    review_id=self.review_id,
                )
            )
            return rows
        if self.status == "rejected":
            return [events.conversion_rejected(conv, cand, list(self.reasons), self.review_id)]
        if self.status == "review":
            assert self.review_id is not None
            return [events.conversion_flagged(conv, cand, list(self.reasons), self.review_id)]
        return []


def eligible(decision: domain.Decision, conv: Conversion, screening: Screening) -> domain.Decision:
    """The program's eligibility rule on friends' countries (link-service's audience), applied
    to the country the conversion names: a refused country rejects the conversion, whatever
    screening said; an unnamed one passes (counted only where the merchant sends it). Named in
    the explanation as the check `eligibility`."""
    rule = screening.friend_countries
    if rule is None or decision.candidate is None:
        return decision
    why = rule.refuses(conv.country, unknown_passes=True)
    if why is None:
        outcome: Literal["pass", "unknown"] = "pass" if conv.country else "unknown"
        detail = f"friend country {conv.country or 'not sent'}"
        return replace(
            decision, checks=[*decision.checks, domain.Check("eligibility", outcome, detail)]
        )
    check = domain.Check(
        "eligibility",
        "fail",
        f"friend country {conv.country} refused by eligibility.friends.{why}",
        "deny",
    )
    return replace(decision, status="rejected", checks=[*decision.checks, check])


def decide(
    chosen: Chosen,
    screening: Screening | None,
    earlier: Earlier = NOTHING_EARLIER,
    *,
    note: str | None = None,
) -> Decided:
    """Screen the chosen candidate (`screening`: the facts `chosen.ask()` reads; None without a
    candidate) and settle the status; `note` is kept with the explanation."""
    conv = chosen.conversion
    cand = chosen.choice.candidate
    facts = None
    if cand is not None:
        assert screening is not None
        facts = earlier.add_to(screening.facts(conv, cand), conv, cand, screening)
    decision = domain.settle(chosen.choice, facts)
    if screening is not None:
        decision = eligible(decision, conv, screening)
    return Decided(
        conv,
        decision.status,
        decision.candidate,
        decision.fraud_decision,
        tuple(decision.reasons),
        domain.explanation(decision, note=note),
        chosen.named_click,
        referral_id=new_id("ref") if decision.status == "attributed" else None,
        review_id=new_id("rev") if decision.status == "review" else None,
        risk_score=decision.risk_score,
        auto_block_after=_auto_block_after(chosen.choice.settings),
        signals=facts.signals if facts is not None else {},
    )


def _auto_block_after(settings: ProgramSettings) -> int | None:
    ab = settings.fraud.auto_block
    return ab.after_denied if ab.enabled else None


def waiting(conv: Conversion) -> Decided:
    """A conversion waiting for the evidence it names (see pending)."""
    return Decided(conv, "pending")


def reviewed(
    conv: Conversion,
    cand: Candidate,
    *,
    approve: bool,
    review_id: str,
    reasons: Sequence[str],
    note: dict[str, object],
    settings: ProgramSettings,
) -> Decided:
    """A reviewer's decision on a conversion screening flagged: approved, it is attributed to
    `cand`; denied, it is rejected for the reasons screening gave and the reviewer's."""
    if approve:
        return Decided(
            conv,
            "attributed",
            cand,
            "allow",
            referral_id=new_id("ref"),
            review_id=review_id,
            review_note=note,
        )
    return Decided(
        conv,
        "rejected",
        cand,
        "deny",
        (*reasons, "review_denied"),
        review_id=review_id,
        review_note=note,
        auto_block_after=_auto_block_after(settings),
    )
