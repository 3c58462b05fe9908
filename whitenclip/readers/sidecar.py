"""Row ids (and group ids, encoder metadata) recorded beside rows: a store shard's
``shard-NNNNN.ids.json`` and the ``NAME.ids.json`` that ``embed -o NAME.npy`` writes, one layout:
``{"ids": [...], "items_end": n, "groups": [...], "meta": {...}}``."""

from __future__ import annotations

import json
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.readers.base import check_ids, is_count, one_line


def _shard_doc(ids_path: Path) -> dict:
    """A store shard's ``.ids.json``, parsed and checked for its shape (``ids`` a list, ``items_end``
    a non-negative integer)."""
    try:
        doc = json.loads(Path(ids_path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{ids_path}: unreadable shard ids ({one_line(exc)[:160]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list) or not is_count(doc.get("items_end", 0)):
        raise InputError(f"{ids_path}: shard ids must be {{\"ids\": [...], \"items_end\": N}} with N a "
                         "non-negative integer")
    return doc


def read_shard_ids(ids_path: Path, n_rows: int | None = None) -> tuple[list[str], int]:
    """``(ids, items_end)`` of a store shard's ``.ids.json``, validated (``n_rows`` ids when given;
    ``items_end`` 0 when the file records none)."""
    doc = _shard_doc(ids_path)
    if n_rows is not None:
        check_ids(ids_path, doc["ids"], n_rows)
    return [str(v) for v in doc["ids"]], doc.get("items_end", 0)


def read_shard(ids_path: Path, n_rows: int) -> tuple[list[str], list | None]:
    """``(ids, groups)`` of a store shard's ``.ids.json``, the file parsed once: ``n_rows`` ids, and
    the ``groups`` list (one id or null per row), or None when it records none (``embed`` writes
    them when its captions had groups)."""
    return _shard_rows(_shard_doc(ids_path), ids_path, n_rows)


def _shard_rows(doc: dict, ids_path, n_rows: int) -> tuple[list[str], list | None]:
    """``(ids, groups)`` of a parsed shard ids document (:func:`read_shard`)."""
    check_ids(ids_path, doc["ids"], n_rows)
    groups = doc.get("groups")
    if groups is not None:
        if not isinstance(groups, list) or len(groups) != n_rows:
            raise InputError(f"{ids_path}: 'groups' must be a list of {n_rows} ids (one per row)")
        groups = [None if g is None else str(g) for g in groups]
    return [str(v) for v in doc["ids"]], groups


def read_groups_file(path, n_rows: int) -> list:
    """Group ids from ``path``, one line per row (UTF-8; an empty line: the row is its own group);
    InputError unless there are exactly ``n_rows`` of them."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (--groups)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read group ids ({' '.join(str(exc).split())[:120]})") from None
    lines = text.splitlines()
    if len(lines) != n_rows:
        raise InputError(f"{path}: {len(lines)} group ids for {n_rows} input rows (--groups needs one line per row)")
    return [line.strip() or None for line in lines]


def records_groups(ids_path) -> bool:
    """True when the ids file records group ids (``embed`` writes them when it was given groups).
    Reads the file's bytes only, looking for the key ``"groups": [`` (an id can never be followed by
    ``: [``, and a quote inside an id is escaped); the groups themselves are parsed by :func:`read_shard`."""
    try:
        text = Path(ids_path).read_bytes()
    except OSError:
        return False
    return b'"groups": [' in text or b'"groups":[' in text
