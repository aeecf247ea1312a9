"""The open segment of a recording camera node, kept outside the process so that a crash loses nothing.

Each packet of the open segment is appended (one ``writev``, no fsync) to a file in shared memory
(``shm_dir``): it outlives the process, not a reboot, and costs no disk writes (the segment is written
once, when it closes). A restarted node reads it back with :meth:`PacketSpool.recover` and stores it.
A record is a fixed header, the codec name, the parameter sets and the access unit; a record cut short
by the crash ends the recovery there. The file's name comes from the sensor name through
:func:`~msightd.storage.naming.safe_sensor_name` and a hash of the recording directory, so two nodes
never share one and nothing leaves ``shm_dir``.
"""

from __future__ import annotations

import hashlib
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
_KEYFRAME, _HAS_PTS, _HAS_DTS = 1, 2, 4


class PacketSpool:
    """One camera's open segment on tmpfs. One owner thread; a spool that fails is abandoned (said once)."""

    def __init__(self, shm_dir: Path, record_dir: Path, sensor_name: str, device_name: str) -> None:
        digest = hashlib.sha256(str(record_dir).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        self.path = shm_dir / f"spool-{safe_sensor_name(sensor_name)}-{digest}.packets"
        self._sensor_name = sensor_name
        self._device_name = device_name
        self._fd: int | None = None
        self.failed = False

    def recover(self) -> list[PacketMessage]:
        """The packets a previous run left (empty if none); the file stays until :meth:`restart`."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return []
        messages = []
        offset = 0
        while offset + _HEADER.size <= len(content):
            fields = _HEADER.unpack_from(content, offset)
            data_len, extradata_len, codec_len = fields[:3]
            start = offset + _HEADER.size
            end = start + codec_len + extradata_len + data_len
            if end > len(content) or data_len == 0 or not all(fields[10:12]):
                break  # cut short by the crash (or not a spool)
            codec = content[start : start + codec_len].decode("ascii", "replace")
            if codec not in PACKET_CODECS:
                break
            extradata = content[start + codec_len : start + codec_len + extradata_len]
            messages.append(self._message(fields, codec, extradata, content[end - data_len : end]))
            offset = end
        return messages

    def restart(self, messages: Sequence[PacketMessage]) -> None:
        """A new segment began: the spool holds exactly ``messages`` (its overlap and first packet)."""
        fd = self._open()
        if fd is None:
            return
        os.ftruncate(fd, 0)
        for message in messages:
            self.append(message)

    def append(self, message: PacketMessage) -> None:
        fd = self._open()
        if fd is None:
            return
        codec = message.codec.encode("ascii")
        flags = (
            (_KEYFRAME if message.keyframe else 0)
            | (_HAS_PTS if message.pts is not None else 0)
            | (_HAS_DTS if message.dts is not None else 0)
        )
        header = _HEADER.pack(
            len(message.data), len(message.extradata), len(codec),
            message.frame_id, message.capture_timestamp, message.sequence, flags,
            message.pts or 0, message.dts or 0, message.duration,
            message.time_base.numerator, message.time_base.denominator, message.width, message.height,
        )  # fmt: skip
        os.writev(fd, (header, codec, message.extradata, message.data))

    def clear(self) -> None:
        """Nothing is open any more (the segment was stored)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int | None:
        if self._fd is None and not self.failed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        return self._fd

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
        )
