"""CSV as Japanese offices really have it: UTF-8 with or without BOM, or
Shift_JIS/CP932 as Excel saves it; headers in English or Japanese; lists in one
cell separated by ``;``, ``,``, ``、`` or ``・``.  And CSV that Excel opens safely.

Rules kept here:

- Headers are matched through the caller's one alias table, after NFKC (so
  ``Ｅメール`` and ``ﾒｰﾙｱﾄﾞﾚｽ`` are ``Eメール`` and ``メールアドレス``), case, spaces,
  ``_`` and ``-`` are folded.  A header this table does not know is listed in
  ``Rows.unknown`` for the caller to report (the subscriber import does).
- A large file is streamed (``open_text``): the encoding is decided and checked
  by a first pass over the bytes that keeps only one line in memory, so a
  decoding error is reported, with its line, before any row is processed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def _first_bad_line(path: Path, codec: str) -> tuple[int, int] | None:
    """(line number, byte offset) of the first byte ``codec`` cannot decode, else None.

    Line by line: ``\n`` is never part of a multi-byte character in UTF-8 or CP932."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode(codec)
            except UnicodeDecodeError as exc:
                return number, offset + exc.start
            offset += len(raw)
    return None


def open_text(path: Path, encoding: str, where: str) -> io.TextIOWrapper:
    """The file as a stream of text (for ``read_rows``), with the rules of ``decode``.

    The encoding is checked over the whole file first (one line in memory at a
    time), so the stream never fails half-way; use it in a ``with`` block."""
    try:
        with open(path, "rb") as fh:
            bom = fh.read(3) == b"\xef\xbb\xbf"
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if encoding == "auto":
        if bom:
            encoding = "utf-8"  # a BOM is a promise; hold the file to it below
        elif _first_bad_line(path, "utf-8") is None:
            encoding = "utf-8"
        else:
            bad = _first_bad_line(path, "cp932")
            if bad is not None:
                raise InputError(
                    f"{where}: cannot tell the encoding (neither UTF-8 nor Shift_JIS/CP932; "
                    f"bad byte at offset {bad[1]}); use --encoding"
                )
            encoding = "cp932"
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    bad = _first_bad_line(path, encoding)
    if bad is not None:
        raise InputError(f"{where}:{bad[0]}: not valid {encoding} (byte offset {bad[1]}); try --encoding auto")
    return open(path, encoding=codec, newline="")  # the caller closes it


def normalize_header(name: str) -> str:
    name = unicodedata.normalize("NFKC", name.strip().strip("\ufeff"))
    return re.sub(r"[\s_\-]+", "", name.lower())


class Rows:
    """The rows of a CSV (see ``read_rows``); the header is read when it is made.

    ``columns``: the canonical name of each column (None: not known);
    ``unknown``: the header names the alias table does not know, as written."""

    def __init__(self, reader, where: str, columns: list[str | None], unknown: list[str]):
        self._reader = reader
        self.where = where
        self.columns = columns
        self.unknown = unknown

    def __contains__(self, canon: str) -> bool:
        return canon in self.columns

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        reader, where, columns = self._reader, self.where, self.columns
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


def read_rows(
    text: str | Iterable[str], where: str, aliases: Mapping[str, Sequence[str]], required: Sequence[str]
) -> Rows:
    """The header now, then (line number, {canonical column: value}) for each non-empty row.

    ``text`` is the whole text or a stream of lines (``open_text``).  ``aliases``
    maps a canonical column to the header spellings accepted for it.  A malformed
    line (unbalanced quote, NUL byte) raises InputError with its line.
    """
    lookup = {normalize_header(a): canon for canon, names in aliases.items() for a in (canon, *names)}
    lines = io.StringIO(text, newline="") if isinstance(text, str) else text
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{where}: the file is empty") from None
    except csv.Error as exc:
        raise InputError(f"{where}:1: malformed CSV header ({exc})") from None
    columns: list[str | None] = []
    unknown: list[str] = []
    for raw_name in header:
        canon = lookup.get(normalize_header(raw_name))
        if canon in columns and canon is not None:
            raise InputError(f"{where}:1: column '{raw_name}' given twice")
        if canon is None and normalize_header(raw_name):
            unknown.append(raw_name.strip().strip("\ufeff"))
        columns.append(canon)
    for need in required:
        if need not in columns:
            accepted = ", ".join((need, *aliases.get(need, ())))
            raise InputError(f"{where}:1: no '{need}' column in the header (accepted names: {accepted})")
    return Rows(reader, where, columns, unknown)


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
    """Write atomically; ``excel`` adds a BOM and CRLF so Excel reads UTF-8 Japanese.

    A path that cannot be written (no such folder, no permission, disk full) is an
    InputError naming it; nothing is left behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8-sig" if excel else "utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\r\n" if excel else "\n")
            writer.writerow(header)
            for row in rows:
                writer.writerow([excel_safe(v) for v in row])
                count += 1
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return count
