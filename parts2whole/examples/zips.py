"""Range reads of zip members: only the wanted members of a dataset zip are read, never the archive.

The dataset's folders are single zip files of 1-12 GB. A zip's central directory (at its end) lists every
member's offset, so `zipfile` over a seekable file reads the directory and then only the wanted members.
`huggingface_hub.HfFileSystem` files are seekable (HTTP range requests); any fsspec file system works the
same way. Every byte read is counted (`ByteCounter`), per archive, for the manifest's transfer report.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import zipfile
from collections.abc import Callable

from PIL import Image, ImageOps

from .source import ExampleFetchError

ARCHIVE_SUFFIX = ".zip"
#: A wanted member missing under its full path is also looked up by its file name alone (in case a zip
#: was made from inside its folder). Off: only the exact path counts.
MEMBER_LOOKUP_BY_NAME = True
#: Largest member accepted (bytes, compressed or not): the dataset's JPEG/PNG files are well under 5 MB.
MAX_MEMBER_BYTES = 32 * 1024 * 1024
#: End of a zip read first, in one request: the end-of-central-directory record (22 bytes), the ZIP64
#: locator (20) and record (56) before it, and a comment of up to ~8 KB (a longer one costs zipfile's own
#: extra reads, up to 64 KB).
TAIL_BYTES = 8 * 1024
#: Extra bytes read after a member's data offset as the central directory predicts it: a local header's
#: extra field may be longer than the central one (ZIP64 sizes, timestamps). A longer one costs one more read.
LOCAL_HEADER_SLACK = 512


class TransferError(Exception):
    """Reading from the file system failed (the connection, not the data): passes through zipfile unchanged."""


class ByteCounter:
    """Bytes read per file, and the ranges (for tests and the manifest)."""

    def __init__(self):
        self.bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, count: int) -> None:
        with self._lock:
            self.bytes[name] = self.bytes.get(name, 0) + count
            self.requests[name] = self.requests.get(name, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of a remote file that reads only what is asked (one request per read,
    counted) and serves reads that fall inside a prefetched window from memory.

    `zipfile` sees an ordinary file: its small reads (end record, local headers) hit the prefetched
    windows, so a member costs one request."""

    def __init__(self, raw, size: int, name: str, counter: ByteCounter):
        super().__init__()
        self._raw, self._size, self._name, self._counter = raw, size, name, counter
        self._pos = 0
        self._windows: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fetch(self, start: int, end: int) -> bytes:
        end = min(end, self._size)
        if end <= start:
            return b""
        try:
            self._raw.seek(start)
            data = self._raw.read(end - start)
        except Exception as error:  # noqa: BLE001 - network/file errors, told apart from damaged data
            raise TransferError(f"{type(error).__name__}: {error}") from error
        self._counter.add(self._name, len(data))
        return data

    def prefetch(self, start: int, end: int) -> None:
        """Read [start, end) in one request and keep it for the reads that follow (the last few windows)."""
        start, end = max(0, start), min(end, self._size)
        if any(s <= start and end <= s + len(d) for s, d in self._windows):
            return
        self._windows = [*self._windows[-3:], (start, self._fetch(start, end))]

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        for start, data in self._windows:
            if start <= self._pos and end <= start + len(data):
                out = data[self._pos - start:end - start]
                self._pos = end
                return out
        out = self._fetch(self._pos, end)
        self._pos += len(out)
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class ArchiveReader:
    """Wanted members of one zip on an fsspec file system: the tail and the central directory, then one
    range per member. Errors per member are returned, not raised (a corrupt member drops one example)."""

    def __init__(self, fs, path: str, counter: ByteCounter):
        self.name = path.rsplit("/", 1)[-1]
        self.size = int(fs.size(path))
        self._raw = fs.open(path, "rb", cache_type="none")  # exact range reads, no read-ahead
        self._reader = RangeReader(self._raw, self.size, self.name, counter)
        before = counter.bytes.get(self.name, 0)
        self._reader.prefetch(self.size - TAIL_BYTES, self.size)
        try:
            self._zip = zipfile.ZipFile(self._reader)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            self.close()
            raise ExampleFetchError(f"{self.name} is not a readable zip archive ({error})") from None
        #: Bytes it took to learn where the members are (the tail and the central directory): a fixed cost per
        #: archive, proportional to its number of members, not to what is fetched.
        self.directory_bytes = counter.bytes.get(self.name, 0) - before
        self.members = len(self._zip.infolist())
        self._names = {info.filename: info for info in self._zip.infolist()}
        self._by_file_name = {}
        if MEMBER_LOOKUP_BY_NAME:
            for info in self._zip.infolist():
                self._by_file_name.setdefault(info.filename.rsplit("/", 1)[-1], info)

    def info(self, member: str) -> zipfile.ZipInfo | None:
        return self._names.get(member) or self._by_file_name.get(member.rsplit("/", 1)[-1])

    def read(self, member: str) -> bytes:
        """The member's bytes, CRC-checked; KeyError when absent, ValueError when damaged."""
        info = self.info(member)
        if info is None:
            raise KeyError(f"{member} is not in {self.name}")
        if info.file_size > MAX_MEMBER_BYTES or info.compress_size > MAX_MEMBER_BYTES:
            raise ValueError(f"{member} in {self.name} is {info.file_size} bytes, above {MAX_MEMBER_BYTES}")
        start = info.header_offset
        predicted = 30 + len(info.orig_filename.encode("utf-8")) + len(info.extra) + LOCAL_HEADER_SLACK
        self._reader.prefetch(start, start + predicted + info.compress_size)
        try:
            with self._zip.open(info) as handle:
                return handle.read()
        except TransferError:
            raise
        except Exception as error:  # noqa: BLE001 - BadZipFile (CRC, header), zlib.error, EOFError: damaged
            raise ValueError(f"{member} in {self.name} is damaged ({type(error).__name__}: {error})") from None

    def close(self) -> None:
        for closer in (getattr(self, "_zip", None), getattr(self, "_raw", None)):
            try:
                if closer is not None:
                    closer.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def archive_of(path: str) -> tuple[str, str]:
    """("face.zip", "face/<id>_rgb.jpg") for a dataset path "face/<id>_rgb.jpg"."""
    path = path.lstrip("./")
    folder = path.split("/", 1)[0] if "/" in path else ""
    if not folder:
        raise ValueError(f"dataset path {path!r} has no folder")
    return folder + ARCHIVE_SUFFIX, path


def decode_image(data: bytes, what: str) -> Image.Image:
    """A fully decoded image from member bytes, or ValueError saying what is wrong with it."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure means a damaged member
        raise ValueError(f"{what} is not a readable image ({type(error).__name__}: {error})") from None
    upright = ImageOps.exif_transpose(image)
    upright.format = image.format  # what the bytes really are (the dataset names WebP files .jpg)
    return upright



@dataclasses.dataclass
class MemberReads:
    """What reading the wanted members gave: each member's bytes or why it could not be read, and per archive
    its size and what its directory cost (bytes, member count)."""

    data: dict[str, bytes] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    directories: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def member_bytes(self, path: str) -> bytes:
        """The bytes of dataset path `path`, or ValueError saying why it could not be read."""
        member = archive_of(path)[1]
        if member in self.failures:
            raise ValueError(self.failures[member])
        return self.data[member]


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"


def _read_wanted(reader: ArchiveReader, members: set[str], reads: MemberReads, interrupted: list[str]) -> None:
    """Read `members` of one open archive; a lost connection stops this archive (noted in `interrupted`)."""
    for member in sorted(members):
        try:
            reads.data[member] = reader.read(member)
        except (KeyError, ValueError) as error:
            reads.failures[member] = str(error).strip("'\"")
        except Exception as error:  # noqa: BLE001 - the connection dropped: try again next time
            interrupted.append(f"{member}: {_one_line(error)}")
            break


class ArchiveSet:
    """The dataset's zips under `root`, each opened (its directory read) once and kept open, so a fetch can
    read more members in later rounds (spares for damaged or unusable candidates) without paying for the
    directories again. What it read accumulates in `reads`.

    A missing or unreadable archive, or a missing or damaged member, is a failure of those members only;
    a network error anywhere raises ExampleFetchError (nothing is cached then: the next start tries again)."""

    def __init__(self, fs, root: str, counter: ByteCounter, progress: Callable[[str], None]):
        self.fs, self.root, self.counter, self.progress = fs, root, counter, progress
        self.reads = MemberReads()
        self._readers: dict[str, ArchiveReader | str] = {}  # an open reader, or why the archive is unusable

    def _reader(self, archive: str, interrupted: list[str]) -> ArchiveReader | str | None:
        if archive not in self._readers:
            try:
                reader = ArchiveReader(self.fs, f"{self.root}/{archive}", self.counter)
            except FileNotFoundError:
                self._readers[archive] = f"{archive} is not in the dataset"
            except ExampleFetchError as error:
                self._readers[archive] = str(error)
            except Exception as error:  # noqa: BLE001 - network errors: every member of it is lost
                interrupted.append(f"{archive}: {_one_line(error)}")
                return None
            else:
                self._readers[archive] = reader
                self.reads.sizes[archive] = reader.size
                self.reads.directories[archive] = (reader.directory_bytes, reader.members)
        return self._readers[archive]

    def read(self, wanted: dict[str, set[str]]) -> MemberReads:
        """Read the wanted members ({archive: members}) not read yet, archive by archive; returns `reads`."""
        interrupted: list[str] = []  # archives lost to a network (or other passing) error: nothing is cached then
        for archive in sorted(wanted):
            members = {m for m in wanted[archive] if m not in self.reads.data and m not in self.reads.failures}
            if not members:
                continue
            reader = self._reader(archive, interrupted)
            if reader is None:
                continue
            if isinstance(reader, str):
                self.reads.failures.update({member: reader for member in members})
                continue
            _read_wanted(reader, members, self.reads, interrupted)
            self.progress(f"{archive}: {self.counter.bytes.get(archive, 0) / 1e6:.2f} MB read of "
                          f"{reader.size / 1e6:.1f} MB")
        if interrupted:
            raise ExampleFetchError(f"reading the archives was interrupted ({interrupted[0]}); nothing was cached, "
                                    "the next start tries again")
        return self.reads

    @property
    def unusable(self) -> dict[str, str]:
        """{archive: why} of the archives that are missing or not readable zips."""
        return {archive: reader for archive, reader in self._readers.items() if isinstance(reader, str)}

    def close(self) -> None:
        for reader in self._readers.values():
            if isinstance(reader, ArchiveReader):
                reader.close()
