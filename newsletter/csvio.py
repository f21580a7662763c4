"""CSV as Japanese offices really have it: UTF-8 with or without BOM, or
Shift_JIS/CP932 as Excel saves it; headers in English or Japanese; lists in one
cell separated by ``;``, ``,``, ``、`` or ``・``.  And CSV that Excel opens safely.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .errors import InputError

ENCODINGS = ("auto", "utf-8", "cp932")
LIST_SPLIT_RE = re.compile(r"[;,、・，；／/\s]+")


def decode(data: bytes, encoding: str, where: str) -> str:
    """Bytes to text; ``auto`` takes a BOM, then strict UTF-8, then CP932."""
    if encoding == "auto":
        if data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8"  # a BOM is a promise; hold the file to it below
        elif _utf8_ok(data):
            return data.decode("utf-8")
        else:
            try:
                return data.decode("cp932")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{where}: cannot tell the encoding (neither UTF-8 nor Shift_JIS/CP932; "
                    f"bad byte at offset {exc.start}); use --encoding"
                ) from None
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{where}:{line}: not valid {encoding} (byte offset {exc.start}); try --encoding auto"
        ) from None


def _utf8_ok(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_text(path: Path, encoding: str = "auto") -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return decode(data, encoding, str(path))


def normalize_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().strip("\ufeff").lower())


def read_rows(
    text: str, where: str, aliases: Mapping[str, Sequence[str]], required: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, {canonical column: value}) for each non-empty row.

    ``aliases`` maps a canonical column to the header spellings accepted for it.
    A malformed line (unbalanced quote, NUL byte) raises InputError with its line.
    """
    lookup = {normalize_header(a): canon for canon, names in aliases.items() for a in (canon, *names)}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{where}: the file is empty") from None
    except csv.Error as exc:
        raise InputError(f"{where}:1: malformed CSV header ({exc})") from None
    columns: list[str | None] = []
    for raw_name in header:
        canon = lookup.get(normalize_header(raw_name))
        if canon in columns and canon is not None:
            raise InputError(f"{where}:1: column '{raw_name}' given twice")
        columns.append(canon)
    for need in required:
        if need not in columns:
            accepted = ", ".join((need, *aliases.get(need, ())))
            raise InputError(f"{where}:1: no '{need}' column in the header (accepted names: {accepted})")
    while True:
        # An unterminated quote is only noticed at the end of the file: name the line it opened on.
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{where}:{start}: malformed CSV line ({exc})") from None
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
            raise InputError(f"{where}:{line}: {len(cells)} cells but the header has {len(columns)} columns")
        row = {col: excel_unquote(cells[i].strip()) for i, col in enumerate(columns) if col and i < len(cells)}
        yield line, row


def split_list(cell: str) -> list[str]:
    return [p for p in LIST_SPLIT_RE.split(cell.strip()) if p]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def excel_safe(value: object) -> str:
    """Neutralise formula injection: a cell Excel would evaluate gets a leading quote.

    A cell that already starts with a quote gets another one, so that
    ``excel_unquote`` can undo exactly this on import (an export re-imports as it was).
    """
    text = "" if value is None else str(value)
    if text.startswith((*_FORMULA_START, "'")):
        return "'" + text
    return text


def excel_unquote(text: str) -> str:
    """The inverse of ``excel_safe``: ``'=SUM(A1)`` → ``=SUM(A1)``, ``''x`` → ``'x``; else unchanged."""
    if len(text) > 1 and text[0] == "'" and text[1] in (*_FORMULA_START, "'"):
        return text[1:]
    return text


def write_csv(path: Path, header: Sequence[str], rows, *, excel: bool) -> int:
    """Write atomically; ``excel`` adds a BOM and CRLF so Excel reads UTF-8 Japanese."""
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8-sig" if excel else "utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n" if excel else "\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([excel_safe(v) for v in row])
            count += 1
    tmp.replace(path)
    return count
