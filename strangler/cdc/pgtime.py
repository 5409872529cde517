"""PostgreSQL's ISO text output of dates and times -> Debezium's numbers and UTC strings.

Dates count days and timestamps microseconds from 1970-01-01, proleptic Gregorian, as java.time does.
`infinity` becomes the values Debezium's PostgreSQL connector uses for it.
"""

from __future__ import annotations

import re

_US_PER_DAY = 86_400_000_000
# Debezium: PGStatement.DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY taken as microseconds
TIMESTAMP_INFINITY = 9_223_372_036_825_200_000
TIMESTAMP_MINUS_INFINITY = -9_223_372_036_832_400_000


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


DATE_INFINITY = days_from_civil(-5877611, 6, 21)  # Debezium's POSITIVE_INFINITY_LOCAL_DATE
DATE_MINUS_INFINITY = days_from_civil(-5877611, 6, 22)


def _date(text: str) -> int:
    bc = text.endswith(" BC")
    if bc:
        text = text[:-3]
    year, month, day = text.rsplit("-", 2)
    y = int(year)
    return days_from_civil(1 - y if bc else y, int(month), int(day))


def _clock(text: str) -> int:
    """HH:MM:SS[.ffffff] -> microseconds."""
    hours, minutes, seconds = text.split(":")
    whole, _, fraction = seconds.partition(".")
    micros = int(fraction.ljust(6, "0")[:6]) if fraction else 0
    return ((int(hours) * 60 + int(minutes)) * 60 + int(whole)) * 1_000_000 + micros


def _offset_seconds(text: str) -> int:
    sign = -1 if text[0] == "-" else 1
    parts = [int(p) for p in text[1:].split(":")]
    parts += [0] * (3 - len(parts))
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2])


def date_days(data: bytes) -> int:
    if len(data) == 10 and data[4] == 45:  # YYYY-MM-DD
        return days_from_civil(int(data[:4]), int(data[5:7]), int(data[8:]))
    text = data.decode()
    if text == "infinity":
        return DATE_INFINITY
    if text == "-infinity":
        return DATE_MINUS_INFINITY
    return _date(text)


def time_micros(data: bytes) -> int:
    return _clock(data.decode())


def timestamp_micros(data: bytes) -> int:
    if len(data) >= 19 and data[4] == 45 and data[10] == 32 and data[-1] != 67:  # YYYY-MM-DD HH:MM:SS[.f], not BC
        days = days_from_civil(int(data[:4]), int(data[5:7]), int(data[8:10]))
        seconds = ((days * 24 + int(data[11:13])) * 60 + int(data[14:16])) * 60 + int(data[17:19])
        return seconds * 1_000_000 + (int(data[20:].ljust(6, b"0")) if len(data) > 20 else 0)
    text = data.decode()
    if text == "infinity":
        return TIMESTAMP_INFINITY
    if text == "-infinity":
        return TIMESTAMP_MINUS_INFINITY
    bc = text.endswith(" BC")
    day, _, clock = (text[:-3] if bc else text).partition(" ")
    return _date(day + " BC" if bc else day) * _US_PER_DAY + _clock(clock)


_TZ = re.compile(r"^(.*\d)([+-]\d\d(?::\d\d){0,2})$")


def _split_zone(text: str) -> tuple[str, int]:
    match = _TZ.match(text)
    if match is None:
        raise ValueError(f"no UTC offset in {text!r}")
    return match.group(1), _offset_seconds(match.group(2))


def format_iso_utc(micros: int, digits: int) -> str:
    """Epoch microseconds -> `YYYY-MM-DDTHH:MM:SS[.f]Z` with exactly `digits` fractional digits."""
    days, rest = divmod(micros, _US_PER_DAY)
    year, month, day = civil_from_days(days)
    seconds, fraction = divmod(rest, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    if 0 <= year <= 9999:
        year_text = f"{year:04d}"
    else:
        year_text = f"+{year}" if year > 9999 else f"-{-year:04d}"
    frac = f".{fraction:06d}"[: digits + 1] if digits > 0 else ""
    return f"{year_text}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{frac}Z"


def timestamptz_iso(data: bytes, digits: int) -> str:
    text = data.decode()
    if text in ("infinity", "-infinity"):
        return text
    if text.endswith("+00") and len(text) >= 22 and text[4] == "-" and text[10] == " ":
        # the session runs in UTC: reshape the text rather than compute
        clock = text[11:-3]
        whole, _, fraction = clock.partition(".")
        frac = "." + fraction.ljust(digits, "0")[:digits] if digits > 0 else ""
        return f"{text[:10]}T{whole}{frac}Z"
    bc = text.endswith(" BC")
    local, offset = _split_zone(text[:-3] if bc else text)
    day, _, clock = local.partition(" ")
    micros = _date(day + " BC" if bc else day) * _US_PER_DAY + _clock(clock) - offset * 1_000_000
    return format_iso_utc(micros, digits)


def timetz_iso(data: bytes) -> str:
    """`HH:MM:SS[.f]+HH[:MM]` -> the same instant of the day in UTC, fraction without trailing zeros."""
    local, offset = _split_zone(data.decode())
    micros = (_clock(local) - offset * 1_000_000) % _US_PER_DAY
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    frac = f".{fraction:06d}".rstrip("0") if fraction else ""
    return f"{hour:02d}:{minute:02d}:{second:02d}{frac}Z"


_INTERVAL = re.compile(
    r"^(?:(?P<years>[+-]?\d+) years? ?)?(?:(?P<months>[+-]?\d+) mons? ?)?(?:(?P<days>[+-]?\d+) days? ?)?"
    r"(?:(?P<sign>[+-])?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?))?$"
)
DAYS_PER_MONTH = 365.25 / 12.0  # Debezium's MicroDuration.DAYS_PER_MONTH_AVG


def interval_micros(data: bytes) -> int:
    """An interval in IntervalStyle=postgres -> approximate microseconds, as Debezium's MicroDuration."""
    match = _INTERVAL.match(data.decode())
    if match is None:
        raise ValueError(f"cannot read the interval {data.decode()!r}")
    years, months, days = (int(match.group(k) or 0) for k in ("years", "months", "days"))
    sign = -1 if match.group("sign") == "-" else 1
    hours = sign * int(match.group("h") or 0)
    minutes = sign * int(match.group("m") or 0)
    seconds = sign * float(match.group("s") or 0)
    number_of_days = (years * 12 + months) * DAYS_PER_MONTH + days
    number_of_seconds = ((number_of_days * 24 + hours) * 60 + minutes) * 60 + seconds
    return int(number_of_seconds * 1e6)
