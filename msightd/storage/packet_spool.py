"""The open segment of a recording camera node, kept outside the process so that a crash loses nothing.

Each packet of the open segment is copied into a memory-mapped file in shared memory (``shm_dir``): it
outlives the process, not a reboot, and costs no disk writes (the segment is written once, when it
closes). The file keeps its pages from one segment to the next and only grows: a ``write`` to a tmpfs file
allocates and zeroes fresh pages each time, which cost more than storing the segment did. A restarted
node reads it back with :meth:`PacketSpool.recover` and stores it.

Layout: a header (magic, then the length of the records in use, updated after each record is complete, so
a crash mid-copy leaves the previous length), then records: a fixed header, the codec name, the parameter
sets and the access unit. The file's name comes from the sensor name through
:func:`~msightd.storage.naming.safe_sensor_name` and a hash of the recording directory, so two nodes
never share one and nothing leaves ``shm_dir``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from msightd.messages import PACKET_CODECS, PacketMessage
from msightd.storage.naming import safe_sensor_name

#: data, extradata and codec lengths; frame id, capture time, sequence; flags; pts, dts, duration;
#: time base; picture size.
_HEADER = struct.Struct("<IIBqdQBqqqIIII")
_KEYFRAME, _HAS_PTS, _HAS_DTS, _CAMERA_CLOCK = 1, 2, 4, 8
#: Magic and the length in use of the records that follow the file header.
_FILE_HEADER = struct.Struct("<8sQ")
_MAGIC = b"MSDSPL01"
#: The file starts this big (~2 segments of 1280x960 H.264 at 100 frames) and doubles when a segment needs more.
INITIAL_BYTES = 8 << 20


class PacketSpool:
    """One camera's open segment on tmpfs. One owner thread; after a failure it is abandoned for good."""

    def __init__(self, shm_dir: Path, record_dir: Path, sensor_name: str, device_name: str) -> None:
        digest = hashlib.sha256(str(record_dir).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        self.path = shm_dir / f"spool-{safe_sensor_name(sensor_name)}-{digest}.packets"
        self._sensor_name = sensor_name
        self._device_name = device_name
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._size = 0
        self._used = 0
        self.failed = False

    def recover(self) -> list[PacketMessage]:
        """The packets a previous run left (empty if none); the file stays until :meth:`restart`."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if len(content) < _FILE_HEADER.size:
            return []
        magic, used = _FILE_HEADER.unpack_from(content)
        if magic != _MAGIC:
            return []
        end_of_records = min(len(content), _FILE_HEADER.size + used)
        messages = []
        offset = _FILE_HEADER.size
        while offset + _HEADER.size <= end_of_records:
            fields = _HEADER.unpack_from(content, offset)
            data_len, extradata_len, codec_len = fields[:3]
            start = offset + _HEADER.size
            end = start + codec_len + extradata_len + data_len
            if end > end_of_records or data_len == 0 or not all(fields[10:12]):
                break  # not a record this spool wrote
            codec = content[start : start + codec_len].decode("ascii", "replace")
            if codec not in PACKET_CODECS:
                break
            extradata = content[start + codec_len : start + codec_len + extradata_len]
            messages.append(self._message(fields, codec, extradata, content[end - data_len : end]))
            offset = end
        return messages

    def restart(self, messages: Sequence[PacketMessage]) -> None:
        """A new segment began: the spool holds exactly ``messages`` (its overlap and first packet)."""
        if self._map is None and not self._open():
            return
        self._set_used(0)
        for message in messages:
            self.append(message)

    def append(self, message: PacketMessage) -> None:
        if self._map is None and not self._open():
            return
        codec = message.codec.encode("ascii")
        flags = (
            (_KEYFRAME if message.keyframe else 0)
            | (_HAS_PTS if message.pts is not None else 0)
            | (_HAS_DTS if message.dts is not None else 0)
            | (_CAMERA_CLOCK if message.capture_clock == "camera" else 0)
        )
        header = _HEADER.pack(
            len(message.data), len(message.extradata), len(codec),
            message.frame_id, message.capture_timestamp, message.sequence, flags,
            message.pts or 0, message.dts or 0, message.duration,
            message.time_base.numerator, message.time_base.denominator, message.width, message.height,
        )  # fmt: skip
        start = _FILE_HEADER.size + self._used
        end = start + len(header) + len(codec) + len(message.extradata) + len(message.data)
        if end > self._size:
            self._grow(end)
        assert self._map is not None
        position = start
        for part in (header, codec, message.extradata, message.data):
            self._map[position : position + len(part)] = part
            position += len(part)
        self._set_used(end - _FILE_HEADER.size)

    def clear(self) -> None:
        """Nothing is open any more (the segment was stored): the file and its memory go."""
        self.close()
        self.path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """After a failure: closed, and used no more (its owner records without crash safety)."""
        self.close()
        self.failed = True

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> bool:
        if self.failed:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = 0
        self._grow(max(INITIAL_BYTES, os.fstat(self._fd).st_size))
        self._set_used(0)
        return True

    def _grow(self, needed: int) -> None:
        assert self._fd is not None
        size = max(self._size, INITIAL_BYTES)
        while size < needed:
            size *= 2
        if self._map is not None:
            self._map.close()
            self._map = None
        # allocated now, so that a full tmpfs is an OSError here and never a SIGBUS on a later copy
        os.posix_fallocate(self._fd, 0, size)
        self._map = mmap.mmap(self._fd, size)
        self._size = size

    def _set_used(self, used: int) -> None:
        assert self._map is not None
        _FILE_HEADER.pack_into(self._map, 0, _MAGIC, used)
        self._used = used

    def _message(self, fields: tuple[Any, ...], codec: str, extradata: bytes, data: bytes) -> PacketMessage:
        _, _, _, frame_id, captured_at, sequence, flags, pts, dts, duration, num, den, width, height = fields
        return PacketMessage(
            sensor_name=self._sensor_name,
            capture_timestamp=captured_at,
            creation_timestamp=captured_at,
            frame_id=frame_id,
            device_name=self._device_name,
            codec=codec,
            extradata=extradata,
            keyframe=bool(flags & _KEYFRAME),
            pts=pts if flags & _HAS_PTS else None,
            dts=dts if flags & _HAS_DTS else None,
            time_base=Fraction(num, den),
            width=width,
            height=height,
            data=data,
            sequence=sequence,
            duration=duration,
            capture_clock="camera" if flags & _CAMERA_CLOCK else "arrival",
        )
