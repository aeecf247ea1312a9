"""Shared-memory frame rings: decoded frames handed from a camera node to same-host consumers.

Passing a frame through Redis as JPEG costs a JPEG encode and decode per frame, and as raw pixels more (3.7 MB
through the broker at 1280x960; the measured costs are in README, Performance). When producer and consumer
share a host, the frame can stay where it is: the camera node writes it, once converted to the encoders' I420
input, into a slot of a ring in shared memory (a file in ``/dev/shm``), and the bus message carries only a
reference (ring, slot, sequence number). The consumer copies the slot out (one copy) and checks that it was
not overwritten meanwhile (a sequence lock).

Nothing is lost to the ring: every consumer keeps a *cursor* in the ring's header, the newest frame it is done
with (for the aggregator: acknowledged, i.e. inside a published segment). The writer never overwrites a slot
whose frame a consumer still holds; it returns ``None`` and the caller sends that frame inline (JPEG) instead,
so a slow or stopped consumer only costs speed. A consumer not heard from (no read, release or heartbeat) for
``consumer_timeout_s`` is evicted: a node removed from the pipeline must not force JPEG forever. A ring nobody
has claimed yet keeps its frames for as long too, so a camera node that starts before its consumer (whose
stream entries wait in Redis) loses nothing either.

Layout (little-endian uint64 words): a 64 KiB header, then ``slots`` slots of ``width*height*3/2`` bytes.
Header words: magic, version, slots, slot bytes, height, width, last sequence number, then
:data:`MAX_CONSUMERS` consumer entries (id, cursor, heartbeat ns, 0), then one sequence number per slot (0
while the slot is being written). A ring's file name carries its geometry, so a camera that changes resolution
gets a new ring rather than a reshaped one under a reader's feet.

Rings stay in ``/dev/shm`` while any consumer holds frames (unacknowledged stream entries point into them) and
are reused when the camera node restarts; a writer that stops with nothing held removes its ring. One writer
per ring; many readers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from msightd.media.capture import DecodedFrame
from msightd.media.formats import RING_CONSUMERS_AT as _CONSUMERS_AT
from msightd.media.formats import RING_HEADER_BYTES as HEADER_BYTES
from msightd.media.formats import RING_MAX_CONSUMERS as MAX_CONSUMERS
from msightd.media.formats import RING_MAX_SLOTS
from msightd.media.formats import RING_SLOT_SEQS_AT as _SLOT_SEQS_AT
from msightd.media.i420 import Picture, contiguous_planes, copy_planes, i420_bytes
from msightd.messages import FrameRef

MAGIC = 0x4D53_4947_4652_4E47  # "MSIGFRNG"
VERSION = 1
_W_MAGIC, _W_VERSION, _W_SLOTS, _W_SLOT_BYTES, _W_HEIGHT, _W_WIDTH, _W_LAST_SEQ = range(7)
PictureT = TypeVar("PictureT", bound=Picture)
_RING_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}\.ring$")


class RingError(Exception):
    """A ring cannot be created or used (no shared memory left, bad geometry, ...). The message says what
    to do; the caller falls back to sending frames inline."""


class FrameLost(Exception):
    """A referenced frame is not in its ring (overwritten, or the ring is gone). ``reason`` is a short
    metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def ring_name(topic: str, sensor_name: str, height: int, width: int, slots: int) -> str:
    """A file name safe in any directory (sensor names come from configuration, but may hold anything)."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", f"{topic}.{sensor_name}")[:80]
    digest = hashlib.blake2b(f"{topic}\0{sensor_name}".encode(), digest_size=4).hexdigest()
    return f"{readable}-{digest}-{width}x{height}x{slots}.ring"


def _holding(consumers: np.ndarray, seq: int) -> np.ndarray:
    """Which consumer entries are registered and still hold frame ``seq`` (their cursor is before it)."""
    return (consumers[:, 0] != 0) & (consumers[:, 1] < seq)


def _consumer_id(consumer: str) -> int:
    return int.from_bytes(hashlib.blake2b(consumer.encode(), digest_size=8).digest(), "little") | 1


class _MappedRing:
    """A mapped ring file: its header words and slot views."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise RingError(f"{path} is not a frame ring (too short)")
        self.map = mmap.mmap(fd, size)
        self.words = np.frombuffer(self.map, dtype="<u8", count=HEADER_BYTES // 8)
        if self.words[_W_MAGIC] != MAGIC or self.words[_W_VERSION] != VERSION:
            raise RingError(f"{path} is not a version-{VERSION} frame ring")
        self.slots = int(self.words[_W_SLOTS])
        self.height = int(self.words[_W_HEIGHT])
        self.width = int(self.words[_W_WIDTH])
        slot_bytes = int(self.words[_W_SLOT_BYTES])
        if size < HEADER_BYTES + self.slots * slot_bytes or slot_bytes != i420_bytes(self.height, self.width):
            raise RingError(f"{path} has an inconsistent geometry")
        pixels = np.frombuffer(self.map, dtype=np.uint8, offset=HEADER_BYTES, count=self.slots * slot_bytes)
        self.pixels = pixels.reshape(self.slots, self.height * 3 // 2, self.width)
        self.slot_seqs = self.words[_SLOT_SEQS_AT : _SLOT_SEQS_AT + self.slots]
        self.consumers = self.words[_CONSUMERS_AT:_SLOT_SEQS_AT].reshape(MAX_CONSUMERS, 4)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Registration and eviction change consumer entries from several processes: serialise them."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        # numpy views pin the buffer; drop them before closing the map
        del self.pixels, self.slot_seqs, self.consumers, self.words
        with contextlib.suppress(BufferError):
            self.map.close()
        os.close(self.fd)


def _create(path: Path, height: int, width: int, slots: int) -> None:
    """Create a ring file atomically (temp file + rename), its memory reserved up front: a tmpfs that runs
    out while a page is first written kills the writer with SIGBUS, a reservation fails cleanly."""
    slot_bytes = i420_bytes(height, width)
    size = HEADER_BYTES + slots * slot_bytes
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o660)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG):
                free = os.statvfs(path.parent)
                raise RingError(
                    f"no room for a {size / 1e6:.0f} MB frame ring in {path.parent} "
                    f"({free.f_bavail * free.f_frsize / 1e6:.0f} MB free): lower shm_slots or give the host "
                    "(container: --shm-size) more shared memory"
                ) from exc
            raise
        words = np.zeros(_SLOT_SEQS_AT, dtype="<u8")
        words[[_W_MAGIC, _W_VERSION, _W_SLOTS, _W_SLOT_BYTES, _W_HEIGHT, _W_WIDTH]] = (
            MAGIC, VERSION, slots, slot_bytes, height, width,
        )  # fmt: skip
        os.pwrite(fd, words.tobytes(), 0)
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    finally:
        os.close(fd)


def _open(path: Path) -> _MappedRing:
    fd = os.open(path, os.O_RDWR)
    try:
        return _MappedRing(path, fd)
    except BaseException:
        os.close(fd)
        raise


class FrameRingWriter:
    """The camera node's side: one ring per (topic, sensor, geometry), created on the first frame."""

    def __init__(
        self, directory: str | os.PathLike[str], topic: str, sensor_name: str, slots: int, consumer_timeout_s: float
    ) -> None:
        if not 2 <= slots <= RING_MAX_SLOTS:
            raise RingError(f"shm_slots must be 2..{RING_MAX_SLOTS}, got {slots}")
        self._directory = Path(directory)
        self._topic = topic
        self._sensor = sensor_name
        self._slots = slots
        self._timeout_ns = int(consumer_timeout_s * 1e9)
        self._ring: _MappedRing | None = None
        self._unclaimed_since: int | None = None  # monotonic ns since when no consumer is registered
        self.evicted: list[int] = []  # consumer ids evicted since the caller last looked
        self.opened: list[Path] = []  # rings mapped (created or reused) since the caller last looked

    @property
    def path(self) -> Path | None:
        return self._ring.path if self._ring is not None else None

    def write(self, picture: DecodedFrame) -> FrameRef | None:
        """Store ``picture`` (even width and height) as I420, converted from BGR only if the decoder made
        BGR. Returns its reference, or None when a consumer still holds the frame in that slot (send this one
        inline)."""
        height, width = picture.shape[:2]
        ring = self._ring_for(height, width)
        seq = int(ring.words[_W_LAST_SEQ]) + 1
        slot = seq % ring.slots
        if self._held(ring, int(ring.slot_seqs[slot])):
            return None
        ring.slot_seqs[slot] = 0  # readers of the old frame now see it is gone
        stored = ring.pixels[slot]
        if not picture.copy_i420_into(contiguous_planes(stored, height, width)):
            cv2.cvtColor(picture.bgr(), cv2.COLOR_BGR2YUV_I420, dst=stored)
        ring.slot_seqs[slot] = seq
        ring.words[_W_LAST_SEQ] = seq
        return FrameRef(ring.path.name, slot, seq)

    def _ring_for(self, height: int, width: int) -> _MappedRing:
        ring = self._ring
        if ring is not None and (ring.height, ring.width) == (height, width):
            return ring
        if height % 2 or width % 2:
            raise RingError(f"a {width}x{height} frame has an odd side; I420 needs even ones")
        path = self._directory / ring_name(self._topic, self._sensor, height, width, self._slots)
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            try:
                new = _open(path)
            except (FileNotFoundError, RingError):
                _create(path, height, width, self._slots)
                new = _open(path)
        except OSError as exc:
            raise RingError(f"cannot use a frame ring at {path}: {exc.strerror or exc}; check shm_dir") from exc
        self._claim(new)
        if ring is not None:
            self.close()
        self._ring = new
        self.opened.append(new.path)
        return new

    def _claim(self, ring: _MappedRing) -> None:
        """Be the ring's only writer for as long as this process holds it open (a POSIX record lock, which
        the kernel drops when the process dies, so a restarted node gets it back). Two writers would
        overwrite each other's slots."""
        try:
            fcntl.lockf(ring.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            ring.close()
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise RingError(f"cannot lock frame ring {ring.path}: {exc.strerror or exc}") from exc
            raise RingError(
                f"another process writes frames to {ring.path}: do two camera nodes publish sensor "
                f"{self._sensor!r} to topic {self._topic!r}? Give every camera its own sensor_name"
            ) from None

    def _held(self, ring: _MappedRing, old_seq: int) -> bool:
        """Does a live consumer still need frame ``old_seq``? Evicts consumers silent for too long."""
        if old_seq == 0:
            return False
        consumers = ring.consumers
        now = time.monotonic_ns()
        if not np.any(consumers[:, 0] != 0):
            if self._unclaimed_since is None:
                self._unclaimed_since = now
            return now - self._unclaimed_since < self._timeout_ns
        self._unclaimed_since = None
        if not _holding(consumers, old_seq).any():
            return False
        with ring.locked():  # entries may change under us until the lock is held: look again inside
            for index in np.flatnonzero(_holding(consumers, old_seq)):
                entry = consumers[index]
                if now - int(entry[2]) > self._timeout_ns:
                    self.evicted.append(int(entry[0]))
                    entry[:] = 0
        return bool(_holding(consumers, old_seq).any())

    def close(self, remove_if_unheld: bool = False) -> None:
        """Unmap; with ``remove_if_unheld``, delete the ring when its consumers hold none of its frames."""
        ring, self._ring = self._ring, None
        if ring is None:
            return
        claimed = bool(np.any(ring.consumers[:, 0] != 0))
        # a ring nobody has claimed stays: its frames may wait in the broker for a consumer yet to start
        if remove_if_unheld and claimed and not _holding(ring.consumers, int(ring.words[_W_LAST_SEQ])).any():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ring.path)
        ring.close()


class FrameRingReader:
    """A consumer's side: opens rings by the name in a message (only inside its own directory), copies
    frames out and moves its cursor when it is done with them. Thread-safe per ring, which is all that
    is needed: each ring belongs to one sensor and each sensor to one worker thread."""

    def __init__(self, directory: str | os.PathLike[str], consumer: str) -> None:
        self._directory = Path(directory)
        self._id = _consumer_id(consumer)
        self._rings: dict[str, _MappedRing] = {}

    def read_into(self, ref: FrameRef, height: int, width: int, allocate: Callable[[int, int], PictureT]) -> PictureT:
        """Copy the frame into ``allocate(height, width)`` (e.g. an encoder's own frame: then this is the
        only copy on its way from the camera to x264); :class:`FrameLost` if it is no longer there. The
        destination is allocated only once the reference is known to fit the ring, so a forged size in a
        message cannot make this allocate gigabytes."""
        ring = self._ring(ref.ring)
        if (ring.height, ring.width) != (height, width) or not 0 <= ref.slot < ring.slots:
            raise FrameLost("bad_reference", f"frame {ref} does not fit ring {ref.ring}")
        entry = self._entry(ring, ref.seq)
        entry[2] = time.monotonic_ns()
        if int(ring.slot_seqs[ref.slot]) != ref.seq:
            raise FrameLost("overwritten", f"frame {ref.seq} of {ref.ring} was overwritten before it was read")
        picture = allocate(height, width)
        copy_planes(contiguous_planes(ring.pixels[ref.slot], height, width), picture.planes)
        if int(ring.slot_seqs[ref.slot]) != ref.seq:
            raise FrameLost("overwritten", f"frame {ref.seq} of {ref.ring} was overwritten while it was read")
        return picture

    def release(self, ref: FrameRef) -> None:
        """Done with every frame of ``ref.ring`` up to ``ref.seq`` (call in order)."""
        ring = self._rings.get(ref.ring)
        if ring is None:
            return
        entry = self._entry(ring, ref.seq)
        entry[1] = max(int(entry[1]), ref.seq)
        entry[2] = time.monotonic_ns()

    def heartbeat(self) -> None:
        """Tell writers this consumer is alive though it received nothing (an idle camera)."""
        now = time.monotonic_ns()
        for ring in self._rings.values():
            entry = self._find(ring)
            if entry is not None:
                entry[2] = now

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()

    def _ring(self, name: str) -> _MappedRing:
        ring = self._rings.get(name)
        if ring is not None:
            return ring
        if not _RING_NAME.match(name) or name.startswith("."):
            raise FrameLost("bad_reference", f"{name!r} is not a ring name")
        try:
            ring = self._rings[name] = _open(self._directory / name)
        except FileNotFoundError:
            raise FrameLost(
                "ring_missing", f"ring {name} is not in {self._directory}: do producer and consumer share shm_dir?"
            ) from None
        except RingError as exc:
            raise FrameLost("bad_reference", str(exc)) from None
        except OSError as exc:
            raise FrameLost("ring_unreadable", f"cannot open ring {name}: {exc.strerror or exc}") from None
        return ring

    def _find(self, ring: _MappedRing) -> np.ndarray | None:
        matches = np.flatnonzero(ring.consumers[:, 0] == self._id)
        return ring.consumers[matches[0]] if matches.size else None

    def _entry(self, ring: _MappedRing, seq: int) -> np.ndarray:
        """This consumer's entry, registered (holding frames from ``seq`` on) when it has none."""
        entry = self._find(ring)
        if entry is not None:
            return entry
        with ring.locked():
            entry = self._find(ring)
            if entry is None:
                free = np.flatnonzero(ring.consumers[:, 0] == 0)
                if free.size == 0:
                    raise FrameLost("ring_full", f"ring {ring.path.name} has {MAX_CONSUMERS} consumers already")
                entry = ring.consumers[free[0]]
                entry[1] = seq - 1
                entry[2] = time.monotonic_ns()
                entry[0] = self._id
        return entry
