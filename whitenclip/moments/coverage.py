"""What a moments part covers: a file's content identity and row ranges, and the overlap checks
that refuse counting rows twice."""

from __future__ import annotations

IDENTITY_BLOCK = 1 << 16
"""Bytes read from the start, the middle and the end of a file for :func:`file_identity`."""


def file_identity(path) -> str:
    """Content identity of a file: blake2b of its size and of three 64 KiB blocks (start, middle,
    end; the whole file when smaller), 32 hex digits.

    It names the *file* whatever piece of it a task reads, so the coverage of two parts can be
    compared row range against row range (a piece's own hash changes with where pieces are cut).
    It is path-independent: a copy of a shard is the same file, and its rows are not counted
    twice. Cost: three reads of 64 KiB per piece. Two files whose sizes and three blocks agree are
    taken to be the same file (for embedding shards: the same header and the same first, middle
    and last rows).
    """
    import hashlib
    import os

    size = os.path.getsize(path)
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        for at in sorted({0, max(0, size // 2 - IDENTITY_BLOCK // 2), max(0, size - IDENTITY_BLOCK)}):
            fh.seek(at)
            h.update(fh.read(IDENTITY_BLOCK))
    return h.hexdigest()


def coverage_entry(path, start: int, stop: int, identity: str | None = None) -> dict:
    """What a piece covers: ``{"file": absolute path, "id": file_identity, "rows": [start, stop]}``."""
    import os

    return {"file": os.path.abspath(str(path)), "id": identity or file_identity(path), "rows": [int(start), int(stop)]}


def first_overlap(a: list[dict], b: list[dict]) -> tuple[dict, dict] | None:
    """The first pair (entry of ``a``, entry of ``b``) covering overlapping, non-empty row ranges of
    the same file identity, or None. The ranges of ``a`` must be disjoint per file (a merged or a
    loaded part's are: see :func:`check_part_info`). O((|a| + |b|) log |a|)."""
    import bisect

    spans: dict[str, tuple[list, list]] = {}
    for e in sorted((e for e in a if e["rows"][1] > e["rows"][0]), key=lambda e: e["rows"][0]):
        starts, entries = spans.setdefault(e["id"], ([], []))
        starts.append(e["rows"][0])
        entries.append(e)
    for e in b:
        lo, hi = e["rows"]
        if hi <= lo or e["id"] not in spans:
            continue
        starts, entries = spans[e["id"]]
        i = bisect.bisect_left(starts, hi) - 1  # the last range of ``a`` starting before hi
        if i >= 0 and entries[i]["rows"][1] > lo:  # disjoint ranges: ends ascend with starts
            return entries[i], e
    return None


def _self_overlap(coverage: list[dict]) -> bool:
    by_id: dict[str, list] = {}
    for e in coverage:
        if e["rows"][1] > e["rows"][0]:
            by_id.setdefault(e["id"], []).append(tuple(e["rows"]))
    for spans in by_id.values():
        spans.sort()
        if any(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
            return True
    return False
