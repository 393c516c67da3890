"""The pure rules of experiments: the variants and their weights, the sticky assignment of an
advocate, the lifecycle, and the significance readout. No I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from scipy.stats import chi2_contingency

from servicekit.problems import Conflict, InvalidInput

Status = Literal["draft", "running", "paused", "ended"]
Action = Literal["start", "pause", "end"]

# A readout says nothing below this many advocates in every variant, or this many successes
# and failures in each (the normal approximation of the test needs them).
MIN_ADVOCATES_PER_VARIANT = 100
MIN_OUTCOMES_PER_CELL = 5
# Significance level of the readout.
ALPHA = 0.05


@dataclass(frozen=True)
class Variant:
    key: str
    weight: int


def check_weights(weights: list[int]) -> None:
    """Weights are whole numbers >= 0 with a positive total (422 naming the first bad one)."""
    for i, w in enumerate(weights):
        if w < 0:
            raise InvalidInput("a weight is 0 or more", field=f"/variants/{i}/weight")
    if sum(weights) <= 0:
        raise InvalidInput("the weights must sum to a positive total", field="/variants")


def assign(advocate_id: str, salt: str, variants: list[Variant]) -> str:
    """The advocate's variant: sha256 of `salt:advocate_id` as a number, modulo the weights'
    total, falls in one variant's share (in the variants' order). Deterministic and sticky: the
    same advocate, salt and weights give the same variant in every process, after any restart."""
    total = sum(v.weight for v in variants)
    digest = hashlib.sha256(f"{salt}:{advocate_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for v in variants:
        if point < v.weight:
            return v.key
        point -= v.weight
    raise AssertionError("unreachable: point < total")


# What each action may start from, and where it leads.
TRANSITIONS: dict[Action, tuple[frozenset[str], Status]] = {
    "start": (frozenset({"draft", "paused"}), "running"),
    "pause": (frozenset({"running"}), "paused"),
    "end": (frozenset({"running", "paused"}), "ended"),
}


def transition(status: str, action: Action) -> Status:
    allowed, to = TRANSITIONS[action]
    if status not in allowed:
        raise Conflict(f"cannot {action} an experiment that is {status}", field="/status")
    return to


@dataclass(frozen=True)
class Readout:
    """Whether the share of advocates who referred someone differs between two variants:
    Pearson's chi-squared test on the 2x2 table without continuity correction (the same p-value
    as the two-sided two-proportion z-test with a pooled variance)."""

    enough_data: bool
    p_value: float | None
    significant: bool
    leader: str | None


def significance(a: tuple[str, int, int], b: tuple[str, int, int]) -> Readout:
    """`a`, `b`: (variant, advocates, advocates who referred someone)."""
    (ka, na, sa), (kb, nb, sb) = a, b
    cells = [sa, na - sa, sb, nb - sb]
    if min(na, nb) < MIN_ADVOCATES_PER_VARIANT or min(cells) < MIN_OUTCOMES_PER_CELL:
        return Readout(False, None, False, None)
    result = chi2_contingency([[sa, na - sa], [sb, nb - sb]], correction=False)
    p = float(result.pvalue)
    leader = ka if sa / na > sb / nb else kb if sb / nb > sa / na else None
    return Readout(True, p, p < ALPHA, leader if p < ALPHA else None)


def winner(control: str, readouts: list[tuple[str, Readout]]) -> str | None:
    """The variant the readout says won, or None while none is known: the one variant that beats
    the control significantly, or the control when it beats every other variant. Two variants
    each beating the control are not compared with each other, so no winner is known then."""
    beating = [key for key, r in readouts if r.significant and r.leader == key]
    if len(beating) == 1:
        return beating[0]
    if readouts and all(r.significant and r.leader == control for _, r in readouts):
        return control
    return None


def promotion(
    status: str, promoted: str | None, variant: str, known_winner: str | None, force: bool
) -> bool:
    """Whether promoting `variant` changes anything. The same promotion again changes nothing
    (False); an ended experiment takes no other winner, a draft none at all (409); a variant the
    readout does not name as the winner only with `force` (409 on /variant)."""
    if status == "ended" and promoted == variant:
        return False
    if status == "ended":
        raise Conflict(f"the experiment has ended (winner: {promoted or 'none'})", field="/status")
    transition(status, "end")
    if not force and known_winner != variant:
        why = (
            f"the readout's winner is '{known_winner}'"
            if known_winner is not None
            else "the readout knows no winner yet"
        )
        raise Conflict(f"{why}: send force: true to promote '{variant}'", field="/variant")
    return True
