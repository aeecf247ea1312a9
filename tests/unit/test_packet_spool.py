"""The recording camera node's spool of its open segment: what a crash leaves is read back exactly, a
record cut short by the crash ends the recovery, and nothing leaves the spool directory."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from msightd.storage.packet_spool import PacketSpool
from tests.support.filesystems import small_filesystem
from tests.unit.test_packet_messages import make_packet


def test_spooled_packets_come_back_as_they_were_written(tmp_path: Path) -> None:
    packets = [
        make_packet(
            frame_id=10 + n,
            sequence=n,
            keyframe=n == 0,
            pts=n * 9000 if n else None,
            dts=None,
            data=bytes([n]) * (n + 1),
            capture_clock="camera" if n % 2 else "arrival",
        )
        for n in range(5)
    ]
    packets.append(make_packet(codec="hevc", time_base=Fraction(1, 25), width=640, height=480, sequence=5, dts=-3))
    spool = PacketSpool(tmp_path, Path("/srv/videos"), "cam", "edge1")
    spool.restart(packets[:2])
    for packet in packets[2:]:
        spool.append(packet)
    spool.close()
    recovered = PacketSpool(tmp_path, Path("/srv/videos"), "cam", "edge1").recover()
    expected = [
        (p.frame_id, p.capture_timestamp, p.sequence, p.keyframe, p.pts, p.dts, p.duration, p.time_base, p.codec,
         p.extradata, p.width, p.height, p.data, p.sensor_name, p.device_name, p.capture_clock)
        for p in packets
    ]  # fmt: skip
    assert [
        (p.frame_id, p.capture_timestamp, p.sequence, p.keyframe, p.pts, p.dts, p.duration, p.time_base, p.codec,
         p.extradata, p.width, p.height, p.data, p.sensor_name, p.device_name, p.capture_clock)
        for p in recovered
    ] == expected  # fmt: skip


def test_a_new_segment_restarts_the_spool_and_a_torn_record_ends_recovery(tmp_path: Path) -> None:
    spool = PacketSpool(tmp_path, Path("/srv/videos"), "cam", "edge1")
    for n in range(3):
        spool.append(make_packet(sequence=n))
    spool.restart([make_packet(sequence=7)])
    spool.append(make_packet(sequence=8, data=b"x" * 1000))
    spool.close()
    assert [p.sequence for p in spool.recover()] == [7, 8]
    whole = bytearray(spool.path.read_bytes())
    used = int.from_bytes(whole[8:16], "little")
    whole[8:16] = (used - 10).to_bytes(8, "little")  # as if the crash came in the middle of the last copy
    spool.path.write_bytes(whole)
    assert [p.sequence for p in spool.recover()] == [7]
    spool.path.write_bytes(b"not a spool" + bytes(100))
    assert spool.recover() == []
    spool.clear()
    assert spool.recover() == [] and not spool.path.exists()


def test_spool_names_stay_in_the_directory_and_apart(tmp_path: Path) -> None:
    hostile = PacketSpool(tmp_path, Path("/srv/videos"), "../../etc/passwd", "edge1")
    assert hostile.path.parent == tmp_path and hostile.path.name.startswith("spool-")
    other_dir = PacketSpool(tmp_path, Path("/srv/other"), "../../etc/passwd", "edge1")
    assert other_dir.path != hostile.path


def test_the_spool_grows_for_a_segment_larger_than_it_and_a_full_tmpfs_is_an_oserror(tmp_path: Path) -> None:
    spool = PacketSpool(tmp_path, Path("/srv/videos"), "cam", "edge1")
    big = [make_packet(sequence=n, data=bytes([n]) * (3 << 20)) for n in range(4)]  # 12 MiB > the initial 8
    spool.restart(big)
    spool.close()
    assert [p.data for p in spool.recover()] == [p.data for p in big]
    with small_filesystem(tmp_path / "shm", 4 << 20) as shm:  # smaller than the spool's first 8 MiB
        full = PacketSpool(shm, Path("/srv/videos"), "cam", "edge1")
        with pytest.raises(OSError):
            full.append(big[0])
        full.close()
