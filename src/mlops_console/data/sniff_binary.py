"""Say what a file named .csv really is when it is not text (a spreadsheet, an archive,
a file of zeros), before a CSV parser turns its bytes into warnings and garbage."""

from __future__ import annotations

from pathlib import Path

HEAD = 4096

# (leading bytes, what they are); the first match wins
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP file — an .xlsx?"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 document — an old .xls?"),
    (b"PAR1", "a Parquet file — name it .parquet"),
    (b"\x1f\x8b", "a gzip file — gunzip it first"),
    (b"BZh", "a bzip2 file — bunzip2 it first"),
    (b"\xfd7zXZ\x00", "an xz file — unxz it first"),
    (b"\x28\xb5\x2f\xfd", "a zstd file — unzstd it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"ARROW1", "an Arrow IPC file"),
)


def describe_binary(path: Path, shown: str | None = None) -> str | None:
    """A sentence saying that `path` (named `shown` to the user) is not text and what it
    looks like, or None if it may be text (UTF-16 text is left to the reader)."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD)
    shown = shown or str(path)
    magic, kind = next(((m, what) for m, what in _MAGIC if head.startswith(m)), (b"", None))
    if kind is None and b"\x00" not in head:
        return None
    all_nul = head.count(0) == len(head)
    if kind is None and not all_nul and _utf16(head):
        return None
    if all_nul:
        looks = (
            f"its first {len(head):,} bytes are all NUL; a file that was allocated but "
            "never written, e.g. by a copy that did not finish"
        )
        todo = "Copy or export it again."
    else:
        where = "NUL bytes in its first 4 KB" if b"\x00" in head else "a binary file signature"
        start = _show(magic or head[:4])
        looks = f"{where}; it starts with {start}" + (f", {kind}" if kind else "")
        todo = "Export it as CSV (UTF-8) or Parquet and point the dataset at that file."
    return f"{shown} looks binary ({looks}). {todo}"


def _utf16(head: bytes) -> bool:
    """A byte-order mark, or NULs at every other byte as ASCII text in UTF-16 has."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    even, odd = head[0::2], head[1::2]
    return len(head) >= 16 and (even.count(0) == len(even) or odd.count(0) == len(odd))


def _show(raw: bytes) -> str:
    """Bytes as a user reads them in a hex dump: printable ASCII as is, the rest \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in raw)
