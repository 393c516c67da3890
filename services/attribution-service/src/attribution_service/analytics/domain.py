"""The pure rules of analytics: days and buckets, leaderboard periods, the masked display name,
and the derived figures (rates, cost per acquired customer, ROI, K-factor). No I/O."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

from servicekit.problems import InvalidInput

Interval = Literal["day", "week", "month"]
Period = Literal["all", "month", "week"]
Metric = Literal["referrals", "earned"]

# The most buckets one answer holds; a finer interval over a longer range is refused (422).
MAX_BUCKETS = 1000
# The default range when `from`/`to` are not given: the last 30 days.
DEFAULT_DAYS = 30

# Programs carry no time zone yet (link-service publishes none): every day is a UTC day.
DEFAULT_TIME_ZONE = "UTC"


def day_of(at: datetime, time_zone: str = DEFAULT_TIME_ZONE) -> date:
    """The program's calendar day of an instant (UTC for a naive one)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(time_zone)).date()


def bucket_start(d: date, interval: Interval) -> date:
    """The first day of the bucket holding `d`: the day, its ISO week's Monday, its month's 1st
    (the same as Postgres' date_trunc, which the queries use)."""
    if interval == "day":
        return d
    if interval == "week":
        return d - timedelta(days=d.weekday())
    return d.replace(day=1)


def next_bucket(start: date, interval: Interval) -> date:
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class Range:
    """Days `start`..`end` inclusive, cut into buckets of `interval`."""

    start: date
    end: date
    interval: Interval

    def buckets(self) -> list[tuple[date, date]]:
        """(first day, last day) of each bucket, clipped to the range."""
        out: list[tuple[date, date]] = []
        b = bucket_start(self.start, self.interval)
        while b <= self.end:
            nxt = next_bucket(b, self.interval)
            out.append((max(b, self.start), min(nxt - timedelta(days=1), self.end)))
            b = nxt
        return out


def bucket_count(start: date, end: date, interval: Interval) -> int:
    if interval == "day":
        return (end - start).days + 1
    if interval == "week":
        return (bucket_start(end, "week") - bucket_start(start, "week")).days // 7 + 1
    return (end.year - start.year) * 12 + end.month - start.month + 1


def query_range(start: date | None, end: date | None, interval: Interval, today: date) -> Range:
    """The range a query asks for; `from` after `to`, or more than MAX_BUCKETS buckets, is 422."""
    end = end or today
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput("'from' is after 'to'", field="/from")
    if bucket_count(start, end, interval) > MAX_BUCKETS:
        raise InvalidInput(
            f"more than {MAX_BUCKETS} buckets of a {interval} in this range", field="/interval"
        )
    return Range(start, end, interval)


# --- leaderboard -----------------------------------------------------------------------------


def period_key(period: Period, at: datetime) -> str:
    """The leaderboard period an instant falls in: `all`, `month:2026-12`, `week:2026-W49`."""
    d = day_of(at)
    if period == "all":
        return "all"
    if period == "month":
        return f"month:{d.year:04d}-{d.month:02d}"
    year, week, _ = d.isocalendar()
    return f"week:{year:04d}-W{week:02d}"


def period_keys(at: datetime) -> list[str]:
    """Every leaderboard period a fact at `at` counts in."""
    return [period_key(p, at) for p in ("all", "month", "week")]


def metric_key(metric: Metric, unit: str | None) -> str:
    """`referrals`, or `earned:<unit>` (amounts of different units never add up)."""
    if metric == "earned":
        if not unit:
            raise InvalidInput("metric 'earned' needs a unit (e.g. USD, points)", field="/unit")
        return f"earned:{unit}"
    return "referrals"


# An advocate's rank counts the advocates with its score inside its own block of ids only; ids
# are prefixed random base32 (`adv_` + 24), so 6 characters make 1,024 blocks of a few each.
TIE_BLOCK_CHARS = 6


def tie_block(advocate_id: str) -> str:
    """The block of ids an advocate's id sorts in (bytewise, as the leaderboard compares ids)."""
    return advocate_id[:TIE_BLOCK_CHARS]


def masked_name(name: str | None, advocate_id: str) -> str:
    """What a leaderboard shows of an advocate: first name and last initial ("Ann S."), or
    "Advocate" and the end of their id when there is no usable name. Never an email address:
    a name that looks like one is not used."""
    words = re.findall(r"[^\s@]+", name or "") if name and "@" not in name else []
    if not words:
        return f"Advocate …{advocate_id[-4:]}"
    first = words[0][:20]
    return f"{first} {words[-1][0].upper()}." if len(words) > 1 else first


# --- derived figures -------------------------------------------------------------------------


def rate(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by."""
    return numerator / denominator if denominator else None


def per_customer(total_minor: int, customers: int) -> int | None:
    """An amount per customer in minor units, rounded half up; None without customers."""
    if not customers:
        return None
    return math.floor(total_minor / customers + 0.5)


def roi(net_revenue_minor: int, net_cost_minor: int) -> float | None:
    """(referred net revenue - net reward cost) / net reward cost, in one currency."""
    return (net_revenue_minor - net_cost_minor) / net_cost_minor if net_cost_minor else None


@dataclass(frozen=True)
class Purchase:
    """A purchase the merchant reported (a decided conversion with an amount), referred or not:
    `program_id` is the program whose advocate it is attributed to, None when it is not."""

    tenant_id: str
    customer_id: str
    currency: str
    amount_minor: int
    occurred_at: datetime
    program_id: str | None


@dataclass(frozen=True)
class CustomerTotals:
    """What a group of customers who bought in a window adds up to, in one currency: how many,
    their purchases and revenue in the window, and the sum over them of the seconds from their
    first to their last purchase ever seen (exact: Postgres' numeric epoch). Totals of disjoint
    groups add (a program's referred customers are the sum of its cohorts')."""

    customers: int = 0
    purchases: int = 0
    revenue_minor: int = 0
    lifespan_seconds: Decimal = Decimal(0)

    def __add__(self, other: CustomerTotals) -> CustomerTotals:
        return CustomerTotals(
            self.customers + other.customers,
            self.purchases + other.purchases,
            self.revenue_minor + other.revenue_minor,
            self.lifespan_seconds + other.lifespan_seconds,
        )

    @property
    def lifespan_days(self) -> Fraction | None:
        """The mean over the customers of (last - first purchase) in days, plus one."""
        if not self.customers:
            return None
        return Fraction(self.lifespan_seconds) / (86400 * self.customers) + 1


@dataclass(frozen=True)
class _Value:
    """The one computation of customer value and CLV, exact (fractions):

    - average order value (AOV) = revenue / purchases;
    - purchases per customer = purchases / customers (in the window);
    - customer value = AOV x purchases per customer: what a customer brings per window;
    - average customer lifespan = the mean, over these customers, of the days from their first
      to their last purchase ever seen, plus one; in windows: that / window_days, at least 1;
    - CLV = customer value x average lifespan in windows."""

    aov: Fraction | None
    per_customer: Fraction | None
    value: Fraction | None
    clv: Fraction | None

    @classmethod
    def of(
        cls,
        customers: int,
        purchases: int,
        revenue_minor: int,
        lifespan_days: Fraction | None,
        window_days: int,
    ) -> _Value:
        aov = Fraction(revenue_minor, purchases) if purchases else None
        per_customer = Fraction(purchases, customers) if customers else None
        value = aov * per_customer if aov is not None and per_customer is not None else None
        clv = None
        if value is not None and lifespan_days is not None:
            clv = value * max(Fraction(1), lifespan_days / window_days)
        return cls(aov, per_customer, value, clv)


def _f(x: Fraction | None) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class CustomerValue:
    """One group of customers (referred by the program, or the merchant's others) who bought in
    a window of `window_days`, in one currency, as floats (the first form of the answer;
    ExactCustomerValue is the same computation, _Value, in minor units and Decimals)."""

    customers: int
    purchases: int
    revenue_minor: int
    lifespan_days: float | None
    aov_minor: float | None
    purchases_per_customer: float | None
    customer_value_minor: float | None
    clv_minor: float | None

    @classmethod
    def of(
        cls,
        *,
        customers: int,
        purchases: int,
        revenue_minor: int,
        lifespan_days: float | Fraction | None,
        window_days: int,
    ) -> CustomerValue:
        life = None if lifespan_days is None else Fraction(lifespan_days)
        v = _Value.of(customers, purchases, revenue_minor, life, window_days)
        return cls(
            customers,
            purchases,
            revenue_minor,
            _f(life),
            _f(v.aov),
            _f(v.per_customer),
            _f(v.value),
            _f(v.clv),
        )

    @classmethod
    def of_totals(cls, t: CustomerTotals, window_days: int) -> CustomerValue:
        return cls.of(
            customers=t.customers,
            purchases=t.purchases,
            revenue_minor=t.revenue_minor,
            lifespan_days=t.lifespan_days,
            window_days=window_days,
        )


# Places of the Decimal ratios of ExactCustomerValue (lifespan in days, purchases per customer).
RATIO_PLACES = Decimal("0.0001")


def half_up(x: Fraction) -> int:
    """An exact amount rounded half up to a whole minor unit (amounts here are >= 0)."""
    return math.floor(x + Fraction(1, 2))


def _ratio(x: Fraction | None) -> Decimal | None:
    if x is None:
        return None
    return (Decimal(x.numerator) / Decimal(x.denominator)).quantize(RATIO_PLACES, ROUND_HALF_UP)


@dataclass(frozen=True)
class ExactCustomerValue:
    """CustomerValue's figures without floats: amounts in whole minor units, each rounded half
    up once from its exact value (CLV from the exact customer value, not the rounded one), and
    the ratios (lifespan in days, purchases per customer) as Decimals of 4 places."""

    customers: int
    purchases: int
    revenue_minor: int
    lifespan_days: Decimal | None
    aov_minor: int | None
    purchases_per_customer: Decimal | None
    customer_value_minor: int | None
    clv_minor: int | None

    @classmethod
    def of(cls, t: CustomerTotals, window_days: int) -> ExactCustomerValue:
        life = t.lifespan_days
        v = _Value.of(t.customers, t.purchases, t.revenue_minor, life, window_days)
        return cls(
            t.customers,
            t.purchases,
            t.revenue_minor,
            _ratio(life),
            None if v.aov is None else half_up(v.aov),
            _ratio(v.per_customer),
            None if v.value is None else half_up(v.value),
            None if v.clv is None else half_up(v.clv),
        )


def payback_days(
    cost_per_customer_minor: int | None, value: CustomerValue, window_days: int
) -> float | None:
    """Days until a referred customer's value pays back the reward cost of acquiring them:
    cost per acquired customer / (customer value / window days)."""
    if cost_per_customer_minor is None or not value.customer_value_minor:
        return None
    return cost_per_customer_minor / (value.customer_value_minor / window_days)


@dataclass(frozen=True)
class KFactor:
    """K = invites per advocate x invite conversion rate, over one period:

    - invites: unique human visitors who arrived through an advocate's link (bots never count);
    - invites per advocate: invites / advocates enrolled in the period;
    - invite conversion rate: referred first purchases / invites;
    - so K = referred first purchases / advocates enrolled: new customers each new advocate
      brings. K > 1 means the program grows on itself."""

    invites_per_advocate: float | None
    invite_conversion_rate: float | None
    k_factor: float | None

    @classmethod
    def of(cls, advocates: int, invites: int, converted: int) -> KFactor:
        i, c = rate(invites, advocates), rate(converted, invites)
        return cls(i, c, i * c if i is not None and c is not None else None)
