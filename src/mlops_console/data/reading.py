"""Reading a dataset's source files into one Arrow table, with errors a user can act on.

pyarrow parses CSV (multi-threaded, with type inference) and Parquet. Each problem is
reported with the file, the row or column and what to do; nothing is changed on failure.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mlops_console.errors import MlopsError

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
    bad = [p.name for p in paths if p.suffix.lower() not in CSV_SUFFIXES | PARQUET_SUFFIXES]
    if bad:
        raise DataError(
            f"{', '.join(bad)}: not CSV or Parquet (by the file name's suffix). Point the "
            "dataset at .csv or .parquet files only."
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


def read_sources(paths: list[Path], root: Path):
    """Read and concatenate the files; returns (table, [SourceFile]).

    Each file is hashed before and after it is read: a file that changes meanwhile (still
    being copied in, say) is refused rather than half-read.
    """
    import pyarrow as pa

    tables, sources = [], []
    for path in paths:
        before = _stat_hash(path, root)
        if before.size == 0:
            raise DataError(f"{before.rel} is empty (0 bytes); nothing to ingest. Export it again.")
        table = read_file(path, before.rel)
        after = path.stat()
        if (after.st_size, after.st_mtime) != (before.size, before.mtime):
            raise DataError(
                f"{before.rel} changed while it was being read (size or modification time "
                "moved). Wait until the file is complete, then ingest again."
            )
        tables.append((before, table))
        sources.append(before)
    if len(tables) == 1:
        return tables[0][1], sources
    first_src, first = tables[0]
    for src, table in tables[1:]:
        for field in table.schema:
            idx = first.schema.get_field_index(field.name)
            if idx >= 0 and not _compatible(first.schema.field(idx).type, field.type):
                raise DataError(
                    f"Column {field.name!r} is {first.schema.field(idx).type} in {first_src.rel} "
                    f"but {field.type} in {src.rel}; the files of one dataset must agree."
                )
    try:
        combined = pa.concat_tables([t for _, t in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"The files of this dataset cannot be combined: {exc}") from None
    return combined, sources


def _compatible(a, b) -> bool:
    import pyarrow.types as t

    if a == b or t.is_null(a) or t.is_null(b):
        return True
    numeric = (t.is_integer, t.is_floating)
    return any(f(a) for f in numeric) and any(f(b) for f in numeric)


def read_file(path: Path, rel: str):
    import pyarrow as pa

    if path.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{rel} is not a readable Parquet file: {exc}") from None
    return _read_csv(path, rel)


def _read_csv(path: Path, rel: str):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    bad_rows: list[tuple[int | None, int, int, str]] = []

    def on_invalid(row) -> str:
        bad_rows.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(path)
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=True
            ),
            convert_options=pcsv.ConvertOptions(check_utf8=True, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        msg = str(exc)
        if "Empty CSV file" in msg:
            raise DataError(f"{rel} is empty (no header line); nothing to ingest.") from None
        raise DataError(f"{rel} is not a well-formed CSV file: {msg}") from None
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
    for field in table.schema:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            line = _first_bad_utf8_line(path)
            raise DataError(
                f"{rel}: column {field.name!r} is not valid UTF-8 text (first bad byte on line "
                f"{line}). Re-export the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
            )
    if table.num_rows == 0:
        raise DataError(f"{rel} has a header but no rows; nothing to ingest.")
    return table


def _sniff_delimiter(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).decode("utf-8", "replace")
    first = head.splitlines()[0] if head else ""
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


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
