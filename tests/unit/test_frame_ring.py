"""Shared-memory frame rings, on real mapped files: what is written is read back, a frame a consumer
holds is never overwritten, and references from messages cannot leave the ring directory."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from msightd.media.capture import DecodedFrame
from msightd.media.frame_ring import FrameLost, FrameRingReader, FrameRingWriter, RingError
from msightd.media.i420 import ContiguousPicture
from msightd.messages import FrameRef

HEIGHT, WIDTH = 48, 64


def write_bgr(ring: FrameRingWriter, image: np.ndarray) -> FrameRef | None:
    return ring.write(DecodedFrame(bgr=image))


def read_i420(reader: FrameRingReader, ref: FrameRef, height: int, width: int) -> np.ndarray:
    """A copy of the frame as an I420 array of shape (height*3/2, width)."""
    return reader.read_into(ref, height, width, ContiguousPicture).array


def frame(value: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def writer(directory: Path, slots: int = 4, timeout_s: float = 60.0, sensor: str = "cam1") -> FrameRingWriter:
    return FrameRingWriter(directory, "frames", sensor, slots, timeout_s)


def test_a_written_frame_reads_back_as_its_i420(tmp_path: Path) -> None:
    ring = writer(tmp_path)
    reader = FrameRingReader(tmp_path, "aggregator")
    image = cv2.resize(frame(1), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    image = cv2.GaussianBlur(image, (15, 15), 5)  # smooth, as camera pictures are at chroma resolution
    ref = write_bgr(ring, image)
    assert ref is not None and ref.seq == 1
    planar = read_i420(reader, ref, HEIGHT, WIDTH)
    assert np.array_equal(planar, cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420))
    back = cv2.cvtColor(planar, cv2.COLOR_YUV2BGR_I420)
    assert float(np.mean(np.abs(back.astype(int) - image.astype(int)))) < 4  # the same picture, chroma subsampled


def test_a_held_slot_is_not_overwritten_until_released(tmp_path: Path) -> None:
    ring = writer(tmp_path, slots=3)
    reader = FrameRingReader(tmp_path, "aggregator")
    refs = [write_bgr(ring, frame(i)) for i in range(3)]
    assert all(ref is not None for ref in refs)
    first = refs[0]
    assert first is not None
    read_i420(reader, first, HEIGHT, WIDTH)  # registers: this consumer holds frame 1 onwards
    assert write_bgr(ring, frame(9)) is None, "frame 1's slot is still held: the caller must send inline"
    reader.release(first)
    fourth = write_bgr(ring, frame(4))
    assert fourth is not None and fourth.slot == first.slot and fourth.seq == 4
    with pytest.raises(FrameLost) as lost:
        read_i420(reader, first, HEIGHT, WIDTH)
    assert lost.value.reason == "overwritten"
    second = refs[1]
    assert second is not None
    assert np.array_equal(read_i420(reader, second, HEIGHT, WIDTH), cv2.cvtColor(frame(1), cv2.COLOR_BGR2YUV_I420))


def test_an_unclaimed_ring_keeps_its_frames_for_the_consumer_timeout(tmp_path: Path) -> None:
    ring = writer(tmp_path, slots=2, timeout_s=0.5)
    assert write_bgr(ring, frame(0)) is not None and write_bgr(ring, frame(1)) is not None
    assert write_bgr(ring, frame(2)) is None, "no consumer yet: its frames wait for it"
    time.sleep(0.6)
    assert write_bgr(ring, frame(3)) is not None, "nobody came within the timeout: the ring moves on"


def test_a_silent_consumer_is_evicted_and_a_live_one_is_not(tmp_path: Path) -> None:
    ring = writer(tmp_path, slots=2, timeout_s=0.5)
    silent = FrameRingReader(tmp_path, "gone")
    live = FrameRingReader(tmp_path, "alive")
    ref = write_bgr(ring, frame(0))
    assert ref is not None
    read_i420(silent, ref, HEIGHT, WIDTH)
    read_i420(live, ref, HEIGHT, WIDTH)
    live.release(ref)
    second = write_bgr(ring, frame(1))
    assert second is not None
    assert write_bgr(ring, frame(2)) is None, "'gone' still holds frame 1"
    for _ in range(4):
        time.sleep(0.2)
        live.heartbeat()
    assert write_bgr(ring, frame(2)) is not None
    assert len(ring.evicted) == 1
    assert write_bgr(ring, frame(3)) is None, "'alive' has not read frame 2 yet"
    read_i420(live, second, HEIGHT, WIDTH)
    live.release(second)
    assert write_bgr(ring, frame(3)) is not None


def test_a_restarted_writer_continues_the_ring_and_keeps_held_frames(tmp_path: Path) -> None:
    first = writer(tmp_path, slots=2)
    reader = FrameRingReader(tmp_path, "aggregator")
    ref = write_bgr(first, frame(0))
    assert ref is not None
    read_i420(reader, ref, HEIGHT, WIDTH)
    first.close(remove_if_unheld=True)
    assert list(tmp_path.glob("*.ring")), "the consumer still holds frame 1: the ring stays"
    second = writer(tmp_path, slots=2)
    nxt = write_bgr(second, frame(1))
    assert nxt is not None and nxt.seq == 2
    assert write_bgr(second, frame(2)) is None
    assert np.array_equal(read_i420(reader, ref, HEIGHT, WIDTH), cv2.cvtColor(frame(0), cv2.COLOR_BGR2YUV_I420))
    reader.release(nxt)
    second.close(remove_if_unheld=True)
    assert not list(tmp_path.glob("*.ring")), "nothing held: the ring is removed"


def test_a_new_resolution_gets_a_new_ring(tmp_path: Path) -> None:
    ring = writer(tmp_path)
    small = write_bgr(ring, frame(0))
    big = write_bgr(ring, np.zeros((HEIGHT * 2, WIDTH * 2, 3), np.uint8))
    assert small is not None and big is not None and small.ring != big.ring
    reader = FrameRingReader(tmp_path, "aggregator")
    assert read_i420(reader, big, HEIGHT * 2, WIDTH * 2).shape == (HEIGHT * 3, WIDTH * 2)
    with pytest.raises(FrameLost) as lost:
        read_i420(reader, big, HEIGHT, WIDTH)
    assert lost.value.reason == "bad_reference"
    with pytest.raises(RingError, match="odd"):
        write_bgr(ring, np.zeros((HEIGHT + 1, WIDTH, 3), np.uint8))


def test_hostile_names_stay_inside_the_ring_directory(tmp_path: Path) -> None:
    ring_dir = tmp_path / "rings"
    ring = writer(ring_dir, sensor="../../etc/passwd\n")
    ref = write_bgr(ring, frame(0))
    assert ref is not None
    assert [p.parent for p in tmp_path.rglob("*.ring")] == [ring_dir]
    (tmp_path / "outside.ring").write_bytes(b"x" * 70000)
    reader = FrameRingReader(ring_dir, "aggregator")
    for name in ("../outside.ring", "/etc/passwd", ".hidden.ring", "rings/../outside.ring"):
        with pytest.raises(FrameLost) as lost:
            read_i420(reader, FrameRef(name, 0, 1), HEIGHT, WIDTH)
        assert lost.value.reason == "bad_reference", name
    with pytest.raises(FrameLost) as missing:
        read_i420(reader, FrameRef("elsewhere.ring", 0, 1), HEIGHT, WIDTH)
    assert missing.value.reason == "ring_missing"


def test_no_room_for_a_ring_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    """A full tmpfs would kill the writer with SIGBUS on first touch; the ring's memory is reserved up
    front instead, so it fails cleanly. A file size limit stands in for the full tmpfs here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        with pytest.raises(RingError, match="lower shm_slots"):
            write_bgr(writer(tmp_path, slots=100), frame(0))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert not list(tmp_path.iterdir()), "no half-made ring is left behind"


def test_an_unusable_ring_directory_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(RingError, match=r"cannot use a frame ring at .*check shm_dir"):
        write_bgr(writer(not_a_dir / "rings"), frame(0))


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"])
def test_a_decoders_yuv_picture_goes_into_the_ring_plane_by_plane(tmp_path: Path, pix_fmt: str) -> None:
    """What the PyAV decoder hands over: rows padded to the plane's line size, sometimes full-range YUV
    (converted to limited range on the way in, as the encoder expects)."""
    width = WIDTH + 2  # 66: PyAV pads its rows, so the copy must skip the padding
    image = cv2.GaussianBlur(np.repeat(np.repeat(frame(5), 2, axis=0), 2, axis=1), (9, 9), 3)[:HEIGHT, :width]
    decoded = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format=pix_fmt)
    assert decoded.planes[0].line_size > width
    ring = writer(tmp_path)
    ref = ring.write(DecodedFrame(video_frame=decoded))
    assert ref is not None
    planar = read_i420(FrameRingReader(tmp_path, "aggregator"), ref, HEIGHT, width)
    assert np.array_equal(planar, decoded.to_ndarray(format="yuv420p"))  # swscale's packing, now unpadded
    back = cv2.cvtColor(planar, cv2.COLOR_YUV2BGR_I420)
    assert float(np.mean(np.abs(back.astype(int) - image.astype(int)))) < 4


def test_a_forged_frame_size_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    ring = writer(tmp_path)
    ref = write_bgr(ring, frame(0))
    assert ref is not None
    allocated: list[tuple[int, int]] = []

    def allocate(height: int, width: int) -> ContiguousPicture:
        allocated.append((height, width))
        return ContiguousPicture(height, width)

    reader = FrameRingReader(tmp_path, "aggregator")
    with pytest.raises(FrameLost) as lost:
        reader.read_into(ref, 100_000, 100_000, allocate)
    assert lost.value.reason == "bad_reference" and allocated == []
    assert reader.read_into(ref, HEIGHT, WIDTH, allocate).array.shape == (HEIGHT * 3 // 2, WIDTH)
    assert allocated == [(HEIGHT, WIDTH)]


def test_a_ring_has_one_writer_at_a_time(tmp_path: Path) -> None:
    """Two camera nodes publishing one sensor name to one topic would overwrite each other's slots: the
    second one gets a clear error (and sends its frames inline); once the first is gone, the ring is free."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np\n"
            "from msightd.media.capture import DecodedFrame\n"
            "from msightd.media.frame_ring import FrameRingWriter\n"
            "ring = FrameRingWriter(sys.argv[1], 'frames', 'cam1', 4, 60.0)\n"
            f"assert ring.write(DecodedFrame(bgr=np.zeros(({HEIGHT}, {WIDTH}, 3), np.uint8))) is not None\n"
            "print('writing', flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "writing\n"
        with pytest.raises(RingError, match=r"another process writes frames to .*cam1.*own sensor_name"):
            write_bgr(writer(tmp_path), frame(1))
    finally:
        holder.communicate("", timeout=30)
    ref = write_bgr(writer(tmp_path), frame(2))
    assert ref is not None and ref.seq == 2, "the ring continues after its writer exited"
