"""How a dataset's CSV files are read (delimiter, decimal mark, NA spellings, encoding,
date formats), and sniffing that proposes them from the head of a file.

The options are stored with the dataset when it is registered and applied on every
ingest, so a file is read the same way each month; nothing is guessed again later.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlops_console.data.reading import DataError

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
# pyarrow's own spellings of a missing value (pyarrow.csv.ConvertOptions().null_values).
USUAL_NA = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "n/a",
    "nan",
    "null",
)
# Spellings that mean "missing" only where the other values are numbers or dates.
OTHER_NA = ("-", "--", "?", "k.A.", "n.a.", "N.A.", "none", "None", "NONE", "#NV")
# Tried in this order: on a tie (every day <= 12) the day-first format wins.
DATE_FORMATS = (
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%y",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%Y/%m/%d",
    "%d-%m-%Y",
)
FLAGS = {
    "delimiter": "--delimiter",
    "decimal": "--decimal",
    "thousands": "--thousands",
    "na_values": "--na",
    "encoding": "--encoding",
    "date_formats": "--date-format",
}

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_DATEISH = re.compile(
    r"^(\d{1,2}[./-]\d{1,2}[./-](\d{4}|\d{2})|\d{4}[./-]\d{1,2}[./-]\d{1,2})"
    r"( \d{1,2}:\d{2}(:\d{2})?)?$"
)
_INT = re.compile(r"^[+-]?\d+$")
_NUMBER_FORMS = (
    # (pattern, decimal it proves or None, thousands it proves or None)
    (re.compile(r"^[+-]?\d{1,3}(\.\d{3})+,\d+$"), ",", "."),
    (re.compile(r"^[+-]?\d{1,3}(,\d{3})+\.\d+$"), ".", ","),
    (re.compile(r"^[+-]?\d{1,3}(\.\d{3}){2,}$"), None, "."),
    (re.compile(r"^[+-]?\d{1,3}(,\d{3}){2,}$"), None, ","),
    (re.compile(r"^[+-]?\d{1,3},\d{3}$"), None, None),  # 1,234: a decimal or thousands
    (re.compile(r"^[+-]?\d{1,3}\.\d{3}$"), None, None),  # 1.234: likewise
    (re.compile(r"^[+-]?\d*,\d+$"), ",", None),
    (re.compile(r"^[+-]?\d*\.\d+([eE][+-]?\d+)?$"), ".", None),
)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a CSV file; None / empty means the default (or sniff, when registering)."""

    delimiter: str | None = None
    decimal: str | None = None  # "." or ","
    thousands: str | None = None
    na_values: tuple[str, ...] = ()  # besides the usual spellings (USUAL_NA)
    encoding: str | None = None  # None: UTF-8
    date_formats: tuple[str, ...] = ()  # strptime formats, besides ISO 8601

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReadOptions:
        """Options from stored JSON or command-line flags, checked; unknown keys are ignored."""
        d = {k: v for k, v in (d or {}).items() if k in FLAGS and v not in (None, "", [], ())}
        delimiter = d.get("delimiter")
        if delimiter is not None:
            delimiter = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(delimiter, delimiter)
            if len(delimiter) != 1 or delimiter in '"\r\n':
                raise DataError(
                    f"--delimiter {delimiter!r}: give one character, e.g. ';' or '\\t' (a tab)."
                )
        decimal = d.get("decimal")
        if decimal is not None and decimal not in (".", ","):
            raise DataError(f"--decimal {decimal!r}: the decimal mark is '.' or ','.")
        thousands = d.get("thousands")
        if thousands is not None:
            if len(thousands) != 1 or thousands.isalnum() or thousands in '"\r\n-+':
                raise DataError(
                    f"--thousands {thousands!r}: give one character, e.g. '.', ',', ' ' or \"'\"."
                )
            if thousands == (decimal or "."):
                raise DataError(
                    f"--thousands {thousands!r} is also the decimal mark; give --decimal "
                    f"{',' if thousands == '.' else '.'!r} as well."
                )
            if thousands == delimiter:
                raise DataError(f"--thousands {thousands!r} is also the delimiter.")
        encoding = d.get("encoding")
        if encoding is not None:
            try:
                encoding = codecs.lookup(encoding).name
            except LookupError:
                raise DataError(
                    f"--encoding {encoding!r} is not an encoding Python knows; e.g. utf-8, "
                    "cp1252 (Windows, Western Europe) or latin-1."
                ) from None
            if encoding == "utf-8":
                encoding = None
        formats = tuple(d.get("date_formats") or ())
        for fmt in formats:
            if "%" not in fmt:
                raise DataError(
                    f"--date-format {fmt!r} has no %-directive; write it like '%d.%m.%Y' "
                    "(day.month.year) or '%m/%d/%Y %H:%M'."
                )
        return cls(
            delimiter=delimiter,
            decimal=None if decimal == "." and thousands is None else decimal,
            thousands=thousands,
            na_values=tuple(d.get("na_values") or ()),
            encoding=encoding,
            date_formats=formats,
        )

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, as stored in `dataset.read_options`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v not in (None, ()):
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def describe(stored: dict[str, Any]) -> str:
    """One line for the user: "delimiter ';', decimal ',', NA 'NA', '-', dates '%d.%m.%Y'"."""
    parts = []
    if stored.get("delimiter"):
        parts.append(f"delimiter {stored['delimiter']!r}")
    if stored.get("decimal"):
        parts.append(f"decimal {stored['decimal']!r}")
    if stored.get("thousands"):
        parts.append(f"thousands {stored['thousands']!r}")
    na = stored.get("na_seen") or stored.get("na_values")
    if na:
        parts.append("NA " + ", ".join(repr(v) for v in na))
    if stored.get("encoding"):
        parts.append(f"encoding {stored['encoding']}")
    if stored.get("date_formats"):
        parts.append("dates " + ", ".join(repr(v) for v in stored["date_formats"]))
    return ", ".join(parts) or "the defaults"


def choose(path: Path, given: dict[str, Any] | None) -> dict[str, Any]:
    """The options to store for a dataset whose first file is `path`: the given ones, and
    for the rest what sniffing the head of the file proposes. The result also records
    which were sniffed ("sniffed") and the NA spellings seen ("na_seen")."""
    given_opts = ReadOptions.from_dict(given)
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return given_opts.to_dict()
    named = {k for k, v in (given or {}).items() if k in FLAGS and v not in (None, "", [], ())}
    sniffed, na_seen = sniff(path, given_opts, named)
    stored = given_opts.to_dict()
    picked = [k for k, v in sniffed.to_dict().items() if k not in named]
    stored.update({k: sniffed.to_dict()[k] for k in picked})
    ReadOptions.from_dict(stored)  # a sniffed combination must be one a user could give
    if picked:
        stored["sniffed"] = picked
    if na_seen and "na_values" not in named:
        stored["na_seen"] = list(na_seen)
    return stored


# --- sniffing ----------------------------------------------------------------------------


def head_text(path: Path, encoding: str | None) -> tuple[str, str | None]:
    """The complete lines of the first ~64 KB (more if the header is longer), decoded; and
    the encoding that decodes them (None: UTF-8)."""
    with open(path, "rb") as fh:
        raw = fh.read(SAMPLE_BYTES)
        while raw.count(b"\n") < 3 and len(raw) < 64 * SAMPLE_BYTES:
            more = fh.read(SAMPLE_BYTES)
            if not more:
                break
            raw += more
        complete = len(fh.read(1)) == 0
    if not complete and b"\n" in raw:
        raw = raw[: raw.rindex(b"\n") + 1]
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    elif not encoding and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode text" export: UTF-16 with its byte-order mark
        if len(raw) % 2:
            raw = raw[:-1]
        return raw.decode("utf-16", "replace"), "utf-16"
    tried = [encoding] if encoding else ["utf-8", "cp1252", "latin-1"]
    for enc in tried:
        try:
            return raw.decode(enc or "utf-8"), (None if enc == "utf-8" else enc)
        except UnicodeDecodeError:
            continue
    return raw.decode(encoding or "utf-8", "replace"), encoding


def sniff_delimiter(text: str) -> str:
    """The candidate that splits the lines into the same number (> 1) of fields."""
    lines = text.splitlines()[:50]
    best, best_score = ",", (0.0, 0)
    for d in DELIMITERS:
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=d))
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        n = len(rows[0])
        score = (sum(len(r) == n for r in rows) / len(rows), n)
        if score > best_score:
            best, best_score = d, score
    return best


def sniff(
    path: Path, given: ReadOptions = ReadOptions(), named: frozenset[str] | set[str] = frozenset()
) -> tuple[ReadOptions, tuple[str, ...]]:
    """Options proposed by the head of a CSV file, and the NA spellings seen there."""
    text, encoding = head_text(path, given.encoding)
    delimiter = given.delimiter or (
        "\t" if path.suffix.lower() == ".tsv" else sniff_delimiter(text)
    )
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(
            f"{path.name} cannot be read as CSV with delimiter {delimiter!r} ({exc}). Is it "
            "a CSV file? Give --delimiter and --encoding if they were sniffed wrong."
        ) from None
    if len(rows) < 2:
        return ReadOptions(delimiter=delimiter, encoding=encoding), ()
    width = len(rows[0])
    columns = [[r[i] for r in rows[1:] if i < len(r)] for i in range(width)]
    na_seen: set[str] = set()
    extra_na: set[str] = set()
    numbers: list[list[str]] = []
    formats: list[str] = []
    for values in columns:
        present = [v for v in values if v not in USUAL_NA and v not in OTHER_NA]
        na_seen.update(v for v in values if v in USUAL_NA and v != "")
        if not present:
            continue
        kind, fmts = _kind(present)
        if kind == "text":
            continue
        extra_na.update(v for v in values if v in OTHER_NA)
        na_seen.update(v for v in values if v in OTHER_NA)
        if kind == "number":
            numbers.append(present)
        else:
            formats += [f for f in fmts if f not in formats]
    decimal, thousands = _marks(numbers, given.decimal if "decimal" in named else None)
    na_order = [v for v in (*USUAL_NA, *OTHER_NA) if v in na_seen]
    options = ReadOptions(
        delimiter=delimiter,
        decimal=decimal,
        thousands=thousands,
        na_values=tuple(v for v in OTHER_NA if v in extra_na),
        encoding=encoding,
        date_formats=tuple(formats),
    )
    return options, tuple(na_order)


def _kind(values: list[str]) -> tuple[str, list[str]]:
    """("number" | "date" | "text", the strptime formats that parse the dates)."""
    if all(_INT.match(v) or any(p.match(v) for p, _, _ in _NUMBER_FORMS) for v in values):
        return "number", []
    if not all(_ISO.match(v) or _DATEISH.match(v) for v in values):
        return "text", []
    left = [v for v in values if not _ISO.match(v)]
    chosen: list[str] = []
    while left:
        counts = {f: sum(_parses(v, f) for v in left) for f in DATE_FORMATS}
        best = max(DATE_FORMATS, key=lambda f: counts[f])  # the first one of the most
        if counts[best] == 0:
            return "text", []
        chosen.append(best)
        left = [v for v in left if not _parses(v, best)]
    return "date", chosen


def _parses(value: str, fmt: str) -> bool:
    try:
        parsed = dt.datetime.strptime(value, fmt)
    except ValueError:
        return False
    return parsed.year >= 1000 or "%Y" not in fmt  # '31.12.25' is no date in %Y


def _marks(columns: list[list[str]], decimal: str | None) -> tuple[str | None, str | None]:
    """(decimal, thousands) that the number-like columns prove; None where they don't."""
    votes = {".": 0, ",": 0}
    thousands_seen = {".": 0, ",": 0}
    ambiguous = {".": 0, ",": 0}  # 1.234 / 1,234
    for values in columns:
        for v in values:
            for pattern, dec, th in _NUMBER_FORMS:
                if pattern.match(v):
                    if dec:
                        votes[dec] += 1
                    if th:
                        thousands_seen[th] += 1
                    if not dec and not th:
                        ambiguous["." if "." in v else ","] += 1
                    break
    if decimal is None:
        decimal = "," if votes[","] > votes["."] else "."
    other = "." if decimal == "," else ","
    thousands = other if thousands_seen[other] or (votes[decimal] and ambiguous[other]) else None
    if decimal == "." and thousands is None:
        return None, None
    return decimal, thousands
