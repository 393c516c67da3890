"""What a run of events adds to the analytics read models, gathered in memory and written
set-wise (repository.apply_folds: one statement per read model for the whole run), instead of a
statement per counter per event. Every fold commutes (counters add, sets gain members, times
move to the earliest), so merging a run's changes before writing them leaves the same rows as
writing them one by one. No I/O here."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

# (program_id, day, channel, metric, unit): the counter's key; its tenant rides along.
CounterKey = tuple[str, date, str, str, str]
# (program_id, advocate_id, day, metric, unit)
AdvocateCounterKey = tuple[str, str, date, str, str]
# (program_id, kind, day, channel, member)
Member = tuple[str, str, date, str, str]
# (program_id, metric, period, advocate_id)
ScoreKey = tuple[str, str, str, str]


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    # As Postgres' LEAST: NULLs are ignored.
    if a is None:
        return b
    return a if b is None else min(a, b)


@dataclass
class AdvocateRow:
    tenant_id: str
    program_id: str
    display_name: str | None = None
    enrolled_at: datetime | None = None
    first_referral_at: datetime | None = None


@dataclass
class ReferralRow:
    advocate_id: str
    referred_at: datetime | None = None
    first_purchase_at: datetime | None = None


@dataclass
class Folds:
    """The changes a run of events makes, merged per row."""

    programs: dict[str, str] = field(default_factory=dict)  # program_id -> tenant_id
    counters: dict[CounterKey, int] = field(default_factory=lambda: defaultdict(int))
    tenants: dict[str, str] = field(default_factory=dict)  # program_id -> tenant_id
    advocate_counters: dict[AdvocateCounterKey, int] = field(
        default_factory=lambda: defaultdict(int)
    )
    members: set[Member] = field(default_factory=set)
    advocates: dict[str, AdvocateRow] = field(default_factory=dict)
    referrals: dict[tuple[str, str], ReferralRow] = field(default_factory=dict)
    scores: dict[ScoreKey, int] = field(default_factory=lambda: defaultdict(int))

    def program(self, tenant_id: str, program_id: str) -> None:
        self.programs.setdefault(program_id, tenant_id)

    def add(
        self,
        tenant_id: str,
        program_id: str,
        day: date,
        metric: str,
        value: int,
        *,
        channel: str = "",
        unit: str = "",
    ) -> None:
        self.tenants.setdefault(program_id, tenant_id)
        self.counters[(program_id, day, channel, metric, unit)] += value

    def add_for_advocate(
        self,
        program_id: str,
        advocate_id: str,
        day: date,
        metric: str,
        value: int,
        *,
        unit: str = "",
    ) -> None:
        self.advocate_counters[(program_id, advocate_id, day, metric, unit)] += value

    def add_member(self, program_id: str, kind: str, day: date, channel: str, member: str) -> None:
        self.members.add((program_id, kind, day, channel, member))

    def advocate(
        self,
        tenant_id: str,
        program_id: str,
        advocate_id: str,
        *,
        display_name: str | None = None,
        enrolled_at: datetime | None = None,
        first_referral_at: datetime | None = None,
    ) -> None:
        row = self.advocates.get(advocate_id)
        if row is None:
            self.advocates[advocate_id] = AdvocateRow(
                tenant_id, program_id, display_name, enrolled_at, first_referral_at
            )
            return
        if display_name is not None:
            row.display_name = display_name
        row.enrolled_at = _earliest(row.enrolled_at, enrolled_at)
        row.first_referral_at = _earliest(row.first_referral_at, first_referral_at)

    def referral(
        self,
        program_id: str,
        friend_customer_id: str,
        advocate_id: str,
        *,
        referred_at: datetime | None = None,
        first_purchase_at: datetime | None = None,
    ) -> None:
        key = (program_id, friend_customer_id)
        row = self.referrals.get(key)
        if row is None:
            self.referrals[key] = ReferralRow(advocate_id, referred_at, first_purchase_at)
            return
        row.referred_at = _earliest(row.referred_at, referred_at)
        row.first_purchase_at = _earliest(row.first_purchase_at, first_purchase_at)

    def score(
        self, program_id: str, metric: str, periods: list[str], advocate_id: str, delta: int
    ) -> None:
        if delta == 0:
            return
        for period in periods:
            self.scores[(program_id, metric, period, advocate_id)] += delta


def score_moves(
    old: dict[ScoreKey, int], new: dict[ScoreKey, int], block_of: dict[str, str]
) -> dict[tuple[str, str, str, int, str], int]:
    """How the counts of advocates per (program, metric, period, score, block) change when the
    scores `old` (absent: no row yet) become `new`: each advocate leaves their old score and
    joins their new one, under the whole board ("") and under their tie block."""
    moves: dict[tuple[str, str, str, int, str], int] = defaultdict(int)
    for (program, metric, period, advocate), score in old.items():
        for block in ("", block_of[advocate]):
            moves[(program, metric, period, score, block)] -= 1
    for (program, metric, period, advocate), score in new.items():
        for block in ("", block_of[advocate]):
            moves[(program, metric, period, score, block)] += 1
    return moves
