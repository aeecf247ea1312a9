"""``msightd segments export`` and ``gaps`` on what a real pipeline recorded (as a real ``msightd`` process)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av

from msightd.media.sample import write_sample_video
from testbed.rtsp import RtspServer
from testbed.waiting import wait_for
from tests.integration.pipeline import segments_on_disk
from tests.integration.recorder import segments_cli, start_dumper, start_recorder, stop_all, written
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint


def test_export_holds_exactly_the_frames_of_the_range_across_segments(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """Segments as shipped (H.264 veryfast, so with B-frames); a range starting and ending inside segments."""
    clip = write_sample_video(tmp_path / "camera.mp4", frame_count=80, width=320, height=240, fps=40)
    save_dir = tmp_path / "videos"
    dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir)
    start_recorder(processes, tmp_path, redis_server.url, clip, dumper, preset="veryfast")
    wait_for(lambda: written(dumper) >= 6, 120, "6 segments")
    stop_all(processes)
    frames = [frame for _, meta in segments_on_disk(save_dir) for frame in meta["frames"]]
    stamps = [frame["capture_timestamp"] for frame in frames]
    assert stamps == sorted(stamps) and len(frames) >= 60
    start, end = (stamps[14] + stamps[15]) / 2, (stamps[52] + stamps[53]) / 2  # frames 15..52: 38 frames
    output = tmp_path / "out" / "clip.mp4"
    result = segments_cli(
        "export", "--save-dir", str(save_dir), "--from", repr(start), "--to", repr(end), "-o", str(output), "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with av.open(str(output)) as container:
        decoded = sum(1 for _ in container.decode(container.streams.video[0]))
    assert decoded == 38 == report["frame_count"] and len(report["segments"]) >= 4
    metadata = json.loads(output.with_suffix(".json").read_text())
    assert [frame["frame_id"] for frame in metadata["clip_frames"]] == [frame["frame_id"] for frame in frames[15:53]]


def test_gaps_after_a_camera_outage_match_the_outage(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc], rtsp_camera: RtspServer
) -> None:
    save_dir = tmp_path / "videos"
    dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir)
    _, camera = start_recorder(processes, tmp_path, redis_server.url, rtsp_camera.url, dumper, fps=10)
    wait_for(lambda: written(dumper) >= 2, 60, "segments before the outage")
    stopped_at = time.time()
    rtsp_camera.stop()
    wait_for(lambda: camera.has_event("source_lost"), 30, "the camera to be lost")
    time.sleep(2)
    rtsp_camera.start()
    outage = wait_for(lambda: camera.has_event("source_gap"), 60, "frames after the outage")[0]
    after = written(dumper)
    wait_for(lambda: written(dumper) >= after + 2, 60, "segments after the outage")
    stop_all(processes)
    result = segments_cli("gaps", "--save-dir", str(save_dir), "--sensor", "cam", "--json")
    assert result.returncode == 0, result.stderr
    gaps = json.loads(result.stdout)
    print(f"\ncamera outage: the camera saw {outage['gap_seconds']} s without frames; gaps found {gaps}")
    assert len(gaps) == 1
    assert abs(gaps[0]["duration_s"] - outage["gap_seconds"]) < 0.002, "the same frames bound both"
    assert stopped_at - 1.0 < gaps[0]["start_timestamp"] <= stopped_at + 0.2, "the last frame before the stop"
