"""The clips the cameras loop and the loopback RTSP cameras serving them.

Each camera is its own GStreamer RTSP server looping an H.264 clip without re-encoding (``testbed/rtsp.py``), so
a camera costs ~1 % CPU and is not measured; real footage by default, because a synthetic pattern compresses
(and so costs) nothing like a roadside scene.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import REPO_ROOT
from bench.processes import BenchError
from testbed.rtsp import RtspServer

#: The team's real roadside footage, when the repository sits beside ``shared/`` (else --clip or a generated clip)
SHARED_CLIPS = tuple(
    REPO_ROOT.parent / "shared" / "data" / name for name in ("mcity_gs_main_stadium1.mp4", "mcity_gs_main_stadium2.mp4")
)


def resolve_clips(requested: list[Path] | None, work_dir: Path) -> list[Path]:
    """The clips the cameras loop: given ones, else the shared mcity footage, else a generated clip."""
    if requested:
        for clip in requested:
            if not clip.is_file():
                raise BenchError(f"--clip {clip} does not exist")
        return [clip.absolute() for clip in requested]
    shared = [clip for clip in SHARED_CLIPS if clip.is_file()]
    if shared:
        return shared
    from msightd.media.sample import write_sample_video

    print("run_bench: ../shared/data clips absent; generating a 1280x960 clip", file=sys.stderr)
    return [write_sample_video(work_dir / "generated_1280x960.mp4", frame_count=110, width=1280, height=960)]


def clip_info(clip: Path) -> dict[str, Any]:
    """What a clip is (size, rate, codec), recorded in the JSON: results only compare on the same footage."""
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return {
            "path": str(clip),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate or 0),
            "frames": stream.frames,
            "codec": stream.codec_context.name,
        }


@contextlib.contextmanager
def cameras(clips: list[Path], count: int) -> Iterator[list[RtspServer]]:
    """One RTSP server per camera (each its own stream, like real cameras), clips alternating."""
    servers: list[RtspServer] = []
    try:
        for index in range(count):
            server = RtspServer(source="file", file=clips[index % len(clips)])
            servers.append(server)
            server.start()
        for server in servers:
            server.wait_until_readable(timeout_s=30)
        yield servers
    finally:
        for server in servers:
            server.stop()


def restart_cameras(servers: list[RtspServer]) -> None:
    """Fresh cameras for the floor: all clients of a test server share one media pipeline, so a client that
    stopped reading (a node hung on stop) can leave it stalled for the next one. Same ports, same URLs."""
    for server in servers:
        server.restart()
    for server in servers:
        server.wait_until_readable(timeout_s=30)
