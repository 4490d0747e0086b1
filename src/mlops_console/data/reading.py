"""Reading a dataset's source files into one Arrow table, with errors a user can act on.

pyarrow parses CSV (multi-threaded, with type inference) and Parquet. Each problem is
reported with the file, the row or column and what to do; nothing is changed on failure.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.data.read_options import ReadOptions

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


class DataError(MlopsError):
    """A data file cannot be used as it is; the message names the file and the problem."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # as shown to the user and recorded (relative to the workspace when inside)
    sha256: str
    size: int
    mtime: float
    # How the file is to be read: the dataset's stored options and its time column.
    options: ReadOptions | None = field(default=None, compare=False)
    time_column: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {"path": self.rel, "sha256": self.sha256, "size": self.size, "mtime": self.mtime}


def expand(source: str, root: Path) -> list[Path]:
    pattern = source if os.path.isabs(source) else str(root / source)
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise DataError(
            f"No file matches {source!r} (looked in {root}). Check the path or glob, e.g. "
            "'data/churn*.csv'."
        )
    known = CSV_SUFFIXES | PARQUET_SUFFIXES
    bad = [p.name for p in paths if p.suffix.lower() not in known]
    if bad and (plugged := _plugin_readers()):
        bad = [b for b in bad if Path(b).suffix.lower() not in plugged]
    if bad:
        raise DataError(
            f"{', '.join(bad)}: not CSV or Parquet (by the file name's suffix). Point the "
            "dataset at .csv or .parquet files, or install a plugin that reads them "
            "(`mlops plugins list`)."
        )
    return paths


def _stat_hash(path: Path, root: Path) -> SourceFile:
    h = hashlib.sha256()
    st = path.stat()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = str(path)
    return SourceFile(path, rel, h.hexdigest(), st.st_size, st.st_mtime)


def read_file(
    path: Path, rel: str, options: ReadOptions | None = None, time_column: str | None = None
):
    """One file as an Arrow table. CSV is read with `options` (None: sniffed from the
    file's head); `time_column`, when given and read as text, is parsed as times."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | PARQUET_SUFFIXES and suffix in (plugged := _plugin_readers()):
        try:
            table = plugged[suffix](path)
        except Exception as exc:  # the plugin's reader: its reason, with the file named
            raise DataError(f"{rel} could not be read ({type(exc).__name__}: {exc})") from None
        if not isinstance(table, pa.Table):
            raise DataError(
                f"{rel}: the {suffix} reader returned {type(table).__name__}, not a table"
            )
    elif suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{rel} is not a readable Parquet file: {exc}") from None
    else:
        if options is None:
            from mlops_console.data.read_options import sniff

            options = sniff(path)[0]
        table = _read_csv(path, rel, options)
    if time_column:
        table = _time_column(table, time_column, options.date_formats if options else (), rel)
    return table


def _plugin_readers() -> dict:
    """{suffix: reader(path) -> pyarrow.Table} from the `mlops_data_sources` hook."""
    from mlops_console.plugins import load_plugins

    return load_plugins().data_sources()


_MAX_RETYPED = 50  # columns re-read as text after a conversion error late in a file


def _read_csv(path: Path, rel: str, options: ReadOptions):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from mlops_console.data.read_options import USUAL_NA

    bad_rows: list[tuple[int | None, int, int, str]] = []

    def on_invalid(row) -> str:
        bad_rows.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    delimiter = options.delimiter or (
        "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(path, options.encoding)
    )
    parse = pcsv.ParseOptions(
        delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=True
    )
    read = pcsv.ReadOptions(encoding=options.encoding or "utf8")
    convert: dict[str, Any] = {"check_utf8": True, "strings_can_be_null": True}
    if options.decimal:
        convert["decimal_point"] = options.decimal
    if options.na_values:
        convert["null_values"] = list(dict.fromkeys([*USUAL_NA, *options.na_values]))
    if options.date_formats:
        convert["timestamp_parsers"] = [pcsv.ISO8601, *options.date_formats]
    as_text: dict[str, object] = {}
    table: Any = None
    while True:
        bad_rows.clear()
        try:
            table = pcsv.read_csv(
                path,
                read_options=read,
                parse_options=parse,
                convert_options=pcsv.ConvertOptions(**convert, column_types=as_text),
            )
            break
        except pa.ArrowInvalid as exc:
            msg = str(exc)
            if "Empty CSV file" in msg:
                raise DataError(f"{rel} is empty (no header line); nothing to ingest.") from None
            late = re.search(r"In CSV column #(\d+): CSV conversion error", msg)
            if late and len(as_text) < _MAX_RETYPED:
                # pyarrow infers a column's type from the file's first block; a value
                # further down that does not fit (1.234,56 after 12,5) is read as text and
                # converted below instead.
                names = pcsv.open_csv(path, read_options=read, parse_options=parse).schema.names
                as_text[names[int(late[1])]] = pa.string()
                continue
            raise DataError(f"{rel} is not a well-formed CSV file: {msg}") from None
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{rel} is not {options.encoding} text ({exc.reason} at byte {exc.start} of a "
                "block). Give the file's real encoding with --encoding (utf-8, cp1252, latin-1)."
            ) from None
    if bad_rows:
        examples = "; ".join(
            f"line {_line_of(path, text) if n is None else n + 1}: expected {e} fields, got {a} "
            f"({text[:60]!r})"
            for n, e, a, text in bad_rows[:3]
        )
        more = f" and {len(bad_rows) - 3} more" if len(bad_rows) > 3 else ""
        raise DataError(
            f"{rel} has {len(bad_rows)} malformed row(s): {examples}{more}. Fix or remove those "
            "rows (an unbalanced quote often causes this) and ingest again."
        )
    for f in table.schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            line = _first_bad_utf8_line(path)
            raise DataError(
                f"{rel}: column {f.name!r} is not valid UTF-8 text (first bad byte on line "
                f"{line}). Give the file's encoding, e.g. --encoding cp1252 (Windows) or "
                "latin-1, or re-export it as UTF-8 (`iconv -f cp1252 -t utf-8`)."
            )
    if table.num_rows == 0:
        raise DataError(f"{rel} has a header but no rows; nothing to ingest.")
    if options.decimal or options.thousands or as_text:
        table = _numbers_from_text(table, options.decimal or ".", options.thousands)
    if options.date_formats:
        # With date formats, dates are timestamps whichever format a month's file uses
        # (ISO dates alone would be read as date32 and change the column's type).
        for i, f in enumerate(table.schema):
            if pa.types.is_date(f.type):
                table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp("s")))
    return table


def _numbers_from_text(table, decimal: str, thousands: str | None):
    """Text columns whose every value is a number written with these marks, as numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    d, t = _re2_literal(decimal), _re2_literal(thousands or "")
    whole = rf"(\d{{1,3}}(?:{t}\d{{3}})+|\d+)" if thousands else r"(\d+)"
    pattern = rf"^\s*[+-]?{whole}(?:{d}\d+)?\s*$"
    for i, f in enumerate(table.schema):
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            continue
        col = table.column(i)
        if (
            col.null_count == len(col)
            or not pc.all(pc.match_substring_regex(col, pattern), skip_nulls=True).as_py()
        ):
            continue
        text = pc.utf8_trim_whitespace(col)
        if thousands:
            text = pc.replace_substring(text, thousands, "")
        if decimal != ".":
            text = pc.replace_substring(text, decimal, ".")
        fractional = pc.any(pc.match_substring(text, "."), skip_nulls=True).as_py()
        try:
            number = text.cast(pa.float64() if fractional else pa.int64())
        except pa.ArrowInvalid:  # an integer beyond int64
            number = text.cast(pa.float64())
        table = table.set_column(i, f.name, number)
    return table


def _re2_literal(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\-/" else c for c in text)


def _time_column(table, column: str, formats: tuple[str, ...], rel: str):
    """The time column parsed as timestamps, or an error saying which values fail."""
    i = table.schema.get_field_index(column)
    if i < 0:
        return table  # the caller names the missing column with the others
    return table.set_column(i, column, _as_times(table.column(i), column, formats, rel))


def to_times(series, column: str, where: str):
    """A pandas column as datetimes, parsed (or refused) like a dataset's time column."""
    import pandas as pd
    import pyarrow as pa

    if pd.api.types.is_datetime64_any_dtype(series):
        return series
    values = pa.chunked_array([pa.array(series, from_pandas=True)])
    parsed = _as_times(values, column, (), where)
    if parsed is values:
        return pd.to_datetime(series)
    return pd.Series(parsed.to_pandas(), index=series.index, name=series.name)


def _as_times(values, column: str, formats: tuple[str, ...], rel: str):
    import pyarrow as pa

    from mlops_console.data.types import logical_type

    typ = values.type
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return values
    if values.null_count == len(values):
        raise DataError(
            f"{rel}: the time column {column!r} should hold timestamps but holds no values "
            f"at all (all {len(values)} are empty or NA). Name the column that holds the event "
            "times (--timestamp)."
        )
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise DataError(
            f"{rel}: the time column {column!r} should hold timestamps but holds "
            f"{logical_type(typ)} values. Name the column that holds the event times "
            "(--timestamp), written like 2025-12-31 or 2025-12-31T23:59:00."
        )
    return parse_times(values, formats, column, rel)


def parse_times(values, formats: tuple[str, ...], column: str, where: str):
    """Text values as timestamp[s]: ISO 8601 or one of `formats` (each value may match
    another). Without `formats`, ISO 8601 or one common format for all the values (never a
    mixture of day-first and month-first). Values that match none are an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlops_console.data.read_options import DATE_FORMATS

    values = pa.chunked_array([values]) if isinstance(values, pa.Array) else values
    given = bool(formats)
    iso = ["%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
    tried = iso + [f for f in (formats or DATE_FORMATS) if f not in iso]
    text = pc.utf8_trim_whitespace(values)

    def parse(fmts):
        out = pa.nulls(len(values), pa.timestamp("s"))
        for fmt in fmts:
            out = pc.coalesce(out, pc.strptime(text, format=fmt, unit="s", error_is_null=True))
        return out, pc.and_(pc.is_null(out), pc.is_valid(values))

    parsed, failed = parse(tried if given else iso)
    nbad = pc.sum(failed).as_py() or 0
    for fmt in () if given or not nbad else DATE_FORMATS:
        candidate, still = parse([*iso, fmt])
        if not pc.any(still).as_py():
            parsed, nbad = candidate, 0
            break
    if nbad:
        rest = pc.filter(values, failed)
        examples = ", ".join(repr(v) for v in pc.unique(rest).to_pylist()[:3])
        shown = ", ".join(["ISO 8601 (2025-12-31T23:59:00)", *map(repr, tried[4:])])
        if nbad == len(values) - values.null_count:
            hint = "Is it the right column? --timestamp names the one with the event times"
        elif given:
            hint = "Add the format they are in with another --date-format"
        else:
            hint = (
                "Give the format with --date-format, e.g. '%d.%m.%Y' (repeat it for files "
                "that mix formats)"
            )
        raise DataError(
            f"{where}: the time column {column!r} should hold timestamps, but {nbad} value(s) "
            f"match none of the formats tried ({shown}), e.g. {examples}. {hint}."
        )
    return parsed


def _sniff_delimiter(path: Path, encoding: str | None = None) -> str:
    from mlops_console.data.read_options import head_text, sniff_delimiter

    return sniff_delimiter(head_text(path, encoding)[0])


def _line_of(path: Path, text: str) -> int | str:
    first = text.split("\n", 1)[0]
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if line.rstrip("\r\n") == first:
                return n
    return "?"


def _first_bad_utf8_line(path: Path) -> int | str:
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return "?"
