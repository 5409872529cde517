"""Telling real divergences from noise (Diffy's rule), as pure functions over field counts.

A field that differs between the serving side and itself (a second call, or a secondary instance) is
noisy: timestamps, random ids. A field counts as a divergence only when its difference rate `d` clearly
exceeds its own noise rate `n`: d > n, relatively |d - n| / (d + n) > `relative` (20%) and absolutely
d - n > `absolute` (0.03% of samples). This is Diffy's filter (`JoinedField.relativeDifference`,
`absoluteDifference`), on rates because noise is measured on a sample of the requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RELATIVE = 0.20
ABSOLUTE = 0.0003


@dataclass(frozen=True, slots=True)
class FieldVerdict:
    field: str
    differed: int
    compared: int
    noise_differed: int
    noise_samples: int
    noise: bool

    @property
    def rate(self) -> float:
        return self.differed / self.compared if self.compared else 0.0

    @property
    def noise_rate(self) -> float:
        return self.noise_differed / self.noise_samples if self.noise_samples else 0.0


def is_real(rate: float, noise_rate: float, relative: float = RELATIVE, absolute: float = ABSOLUTE) -> bool:
    gap = rate - noise_rate
    return gap > 0 and gap > relative * (rate + noise_rate) and gap > absolute


def classify_fields(
    compared: int,
    differed: Mapping[str, int],
    noise_samples: int,
    noise_differed: Mapping[str, int],
    relative: float = RELATIVE,
    absolute: float = ABSOLUTE,
) -> dict[str, FieldVerdict]:
    """A verdict for every field that differed in comparisons or in noise samples."""
    verdicts = {}
    for name in {*differed, *noise_differed}:
        d, n = differed.get(name, 0), noise_differed.get(name, 0)
        rate = d / compared if compared else 0.0
        noise_rate = n / noise_samples if noise_samples else 0.0
        structural = name == "status"  # a status-code mismatch is never noise
        noise = not structural and not is_real(rate, noise_rate, relative, absolute)
        verdicts[name] = FieldVerdict(name, d, compared, n, noise_samples, noise)
    return verdicts


def is_divergent(fields: Iterable[str], noise_fields: frozenset[str] | set[str]) -> bool:
    """A comparison diverges when at least one of its differing fields is not noise."""
    return any(f not in noise_fields for f in fields)
