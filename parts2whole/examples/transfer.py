"""The bytes report of a fetch: bytes read per archive against its size (the share must stay small: only
members are read), what the archives' directories cost, and the report as lines for the CLI."""

from __future__ import annotations

from typing import Any

from .index import TEST_INDEX
from .zips import ByteCounter


def transfer_report(counter: ByteCounter, sizes: dict[str, int], index_size: int, examples: int, poses: int,
                    seconds: float, directories: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Bytes read per archive, against its size (the share must stay small: only members are read), and the
    part of them spent on the archive's directory (tail + central directory) and its member count."""
    directories = directories or {}
    archives = {name: {"bytes_read": counter.bytes.get(name, 0), "archive_bytes": size,
                       "share": counter.bytes.get(name, 0) / size if size else 0.0,
                       "requests": counter.requests.get(name, 0),
                       "directory_bytes": directories.get(name, (0, 0))[0],
                       "members_in_archive": directories.get(name, (0, 0))[1]} for name, size in sorted(sizes.items())}
    total = counter.total
    return {"bytes_read": total, "index_bytes": index_size, "archives": archives,
            "directory_bytes": sum(a["directory_bytes"] for a in archives.values()),
            "archive_bytes": sum(sizes.values()),
            "bytes_per_example": total / examples if examples else None,
            "max_share": max((a["share"] for a in archives.values()), default=0.0),
            "examples": examples, "poses": poses, "seconds": round(seconds, 2)}


def format_transfer(transfer: dict[str, Any]) -> list[str]:
    """The bytes report as lines (the CLI prints them)."""
    lines = []
    total, archives = transfer.get("bytes_read", 0), transfer.get("archives", {})
    per_example = transfer.get("bytes_per_example")
    lines.append(f"read {total / 1e6:.2f} MB in all ({transfer.get('index_bytes', 0) / 1e6:.2f} MB of it {TEST_INDEX}, "
                 f"{transfer.get('directory_bytes', 0) / 1e6:.2f} MB the archives' directories) "
                 f"for {transfer.get('examples', 0)} examples and {transfer.get('poses', 0)} poses"
                 + (f": {per_example / 1e6:.2f} MB per example" if per_example else "")
                 + f", in {transfer.get('seconds', 0):.1f} s")
    for name, item in archives.items():
        lines.append(f"  {name:<24} {item['bytes_read'] / 1e6:9.3f} MB of {item['archive_bytes'] / 1e6:10.1f} MB "
                     f"({item['share']:.3%}, {item['requests']} requests; directory {item.get('directory_bytes', 0) / 1e6:.3f} MB "
                     f"for {item.get('members_in_archive', 0)} members)")
    if archives:
        lines.append(f"largest share of one archive: {transfer.get('max_share', 0):.3%}")
    return lines
