"""Times people write in a freeze: "for 2h", "until Monday 09:00", "到周一 9 点", ISO 8601.

A relative span is kept as minutes (it runs from when the freeze is declared, i.e. when its
card is confirmed); a weekday, a day word or a clock time is resolved against `now` in the
chat's zone into a local wall-clock time (the tool reads it in that zone); an ISO time with an
offset is kept as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agent.rules.function_words import NUMBER_WORDS

CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7}
CN_DIGITS |= {"八": 8, "九": 9, "十": 10, "半": 0}
NUMBER = (
    r"(\d{1,4}(?:\.\d+)?|half\s+an?|an?|"
    + "|".join(NUMBER_WORDS)
    + "|[一二两三四五六七八九十]{1,3}|半)"
)
UNITS = {
    "minutes": ("m", "min", "mins", "minute", "minutes", "分钟", "分"),
    "hours": ("h", "hr", "hrs", "hour", "hours", "小时", "个小时", "个钟头", "钟头"),
    "days": ("d", "day", "days", "天", "日"),
    "weeks": ("w", "wk", "week", "weeks", "周", "个星期", "星期"),
}
UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 24 * 60, "weeks": 7 * 24 * 60}
UNIT_WORD = {word: unit for unit, words in UNITS.items() for word in words}
SPAN = re.compile(
    rf"(?:\bfor\s+(?:the\s+next\s+)?|\bnext\s+|持续\s*|冻结\s*|(?<![a-z]))"
    rf"{NUMBER}\s*("
    + "|".join(sorted(map(re.escape, UNIT_WORD), key=len, reverse=True))
    + r")(?![a-z])"
)
WEEKDAYS = {
    0: ("monday", "mon", "周一", "星期一", "礼拜一"),
    1: ("tuesday", "tue", "tues", "周二", "星期二", "礼拜二"),
    2: ("wednesday", "wed", "周三", "星期三", "礼拜三"),
    3: ("thursday", "thu", "thur", "thurs", "周四", "星期四", "礼拜四"),
    4: ("friday", "fri", "周五", "星期五", "礼拜五"),
    5: ("saturday", "sat", "周六", "星期六", "礼拜六"),
    6: ("sunday", "sun", "周日", "周天", "星期日", "星期天", "礼拜天", "礼拜日"),
}
DAY_WORDS = {"today": 0, "tonight": 0, "tomorrow": 1, "今天": 0, "今晚": 0, "明天": 1, "后天": 2}
DAY = "|".join(
    sorted(
        [w for words in WEEKDAYS.values() for w in words] + list(DAY_WORDS),
        key=len,
        reverse=True,
    )
)
UNTIL = r"(?:\buntil\b|\btill\b|\btil\b|\bthrough\b|\bto\b|\bby\b|直到|到|至)"
CLOCK = (
    r"(?:at\s*|早上|上午|中午|下午|晚上|凌晨)?\s*(\d{1,2})(?:[:：](\d{2})|\s*点\s*(半|\d{1,2}\s*分?)?"
    r"|\s*(am|pm)\b|\s*时)"
)
DAY_TIME = re.compile(
    rf"{UNTIL}\s*(?:the\s+)?(next\s+|this\s+|下个?|下下)?({DAY})(?:\s*(?:,|at)?\s*{CLOCK}"
    r"(?:\s*(am|pm)\b)?)?",
)
TIME_ONLY = re.compile(rf"{UNTIL}\s*{CLOCK}(?:\s*(am|pm)\b)?")
ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[t ](\d{1,2}:\d{2}(?::\d{2})?)(z|[+-]\d{2}:?\d{2})?)?(?![\d:])"
)
AFTERNOON = ("下午", "晚上")


@dataclass(frozen=True)
class When:
    """The end of a freeze: a span in minutes, or a local time (with its zone) or ISO time."""

    minutes: int | None = None
    until: str | None = None
    timezone: str | None = None
    span: tuple[int, int] = (0, 0)  # where the time expression sits in the text

    def args(self) -> dict[str, object]:
        """The declare_freeze arguments this stands for."""
        if self.minutes is not None:
            return {"duration_minutes": self.minutes}
        out: dict[str, object] = {"until": self.until}
        if self.timezone:
            out["timezone"] = self.timezone
        return out


def _amount(word: str) -> float:
    if word in ("a", "an"):
        return 1
    if word.startswith("half"):
        return 0.5
    if word in NUMBER_WORDS:
        return NUMBER_WORDS[word]
    if word and all(ch in CN_DIGITS for ch in word):
        if word == "半":
            return 0.5
        if "十" in word:
            tens, _, ones = word.partition("十")
            return CN_DIGITS.get(tens, 1) * 10 + CN_DIGITS.get(ones, 0)
        return CN_DIGITS[word[0]]
    return float(word)


def _hour(text: str | None) -> int | None:
    return int(text) if text is not None else None


def _clock(groups: tuple[str | None, ...], prefix: str) -> tuple[int, int] | None:
    """(hour, minute) from CLOCK's groups: hour, :mm, 点 minutes, am/pm, and a trailing am/pm."""
    hour_text, minutes_text, dian, meridiem, late = groups
    hour = _hour(hour_text)
    if hour is None:
        return None
    minute = int(minutes_text) if minutes_text else 0
    if dian:
        minute = 30 if dian.strip() == "半" else int(re.sub(r"\D", "", dian) or 0)
    meridiem = meridiem or late
    if meridiem == "pm" or any(word in prefix for word in AFTERNOON):
        hour = hour + 12 if hour < 12 else hour
    elif meridiem == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def parse_when(text: str, zone: str, now: datetime) -> When | None:
    """The first time expression in `text` (lower case), or None."""
    tz = ZoneInfo(zone)
    local_now = now.astimezone(tz)
    iso = ISO.search(text)
    if iso:
        day, clock, offset = iso.groups()
        stamp = f"{day}T{clock or '00:00'}"
        if offset:
            stamp += "+00:00" if offset == "z" else offset
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return When(
            until=parsed.isoformat(timespec="minutes"),
            timezone=None if offset else zone,
            span=iso.span(),
        )
    day_time = DAY_TIME.search(text)
    if day_time:
        relative, day = day_time.group(1) or "", day_time.group(2)
        clock = _clock(day_time.groups()[2:7], text[day_time.start() : day_time.end()])
        hour, minute = clock or (0, 0)
        if day in DAY_WORDS:
            date = local_now.date() + timedelta(days=DAY_WORDS[day])
        else:
            weekday = next(k for k, words in WEEKDAYS.items() if day in words)
            ahead = (weekday - local_now.weekday()) % 7
            if relative.startswith("下"):  # 下周一: Monday of next week
                ahead = 7 - local_now.weekday() + weekday + (7 if relative == "下下" else 0)
            date = local_now.date() + timedelta(days=ahead)
            if datetime(date.year, date.month, date.day, hour, minute, tzinfo=tz) <= local_now:
                date += timedelta(days=7)
        end = datetime(date.year, date.month, date.day, hour, minute, tzinfo=tz)
        return When(until=_wall(end), timezone=zone, span=day_time.span())
    span = SPAN.search(text)
    if span:
        minutes = round(_amount(span.group(1)) * UNIT_MINUTES[UNIT_WORD[span.group(2)]])
        if minutes > 0:
            return When(minutes=minutes, span=span.span())
    clock_only = TIME_ONLY.search(text)
    if clock_only:
        clock = _clock(clock_only.groups()[0:5], text[clock_only.start() : clock_only.end()])
        if clock is not None:
            wall = local_now.replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
            if wall <= local_now:
                wall += timedelta(days=1)
            return When(until=_wall(wall), timezone=zone, span=clock_only.span())
    return None


def _wall(at: datetime) -> str:
    """The local wall-clock time, without its offset (the tool reads it in the zone given)."""
    return at.replace(tzinfo=None).isoformat(timespec="minutes")
