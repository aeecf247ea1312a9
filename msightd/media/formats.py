"""Names and limits of the media formats, without the media stack.

The daemon and ``msightd check`` validate options against these; importing them must not load cv2, av or
numpy (the parent process never carries the codecs: see ``tests/unit/test_import_boundaries.py``). The
modules that implement each format import their names from here, so every name is written once.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Segment codecs: h264 (libx264, plays in browsers), hevc (libx265), mp4v (OpenCV's MPEG-4 Part 2).
CODECS = ("h264", "hevc", "mp4v")
Codec = Literal["h264", "hevc", "mp4v"]
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: How a camera node decodes: OpenCV (BGR pictures) or PyAV (the decoder's own YUV pictures).
Decoder = Literal["opencv", "pyav"]
#: Who reads a camera's packets (frame_encoding packets): msightd's own RTSP client (RTP over TCP, H.264/H.265)
#: or FFmpeg's demuxer (anything FFmpeg reads).
RtspReader = Literal["msightd", "ffmpeg"]
#: Whose clock stamps a frame's capture time: this host's when the frame arrives, or the camera's own, read
#: from its RTCP sender reports (msightd's RTSP reader only). Arrival adds each camera's encoding and network
#: delay, different for every model; the camera's clock (kept by NTP) puts cameras on one timeline.
CaptureClock = Literal["arrival", "camera"]
CAPTURE_CLOCKS: tuple[str, ...] = get_args(CaptureClock)
#: How long a camera's first sender report is waited for (cameras send RTCP every 5 s or so, RFC 3550 6.2);
#: its frames are held meanwhile, so every frame of a connection has the same clock.
SENDER_REPORT_WAIT_S = 10.0
#: How much later than the camera's clock says it was sampled a frame may arrive by this host's clock for
#: the camera's clock to be trusted: a little earlier (two clocks kept by NTP differ by milliseconds, more
#: on different servers) up to seconds later (encoding, network). A camera whose clock was never set is
#: hours or decades off.
CAMERA_CLOCK_OFFSET_RANGE_S = (-1.0, 5.0)
#: A later sender report that moves the camera's clock by more than this (NTP stepping it, a reset) is not
#: followed: the connection keeps the clock it started with.
CAMERA_CLOCK_STEP_LIMIT_S = 1.0
#: How frames travel: MSight's JPEG, raw BGR, a reference into a shared-memory ring, or the camera's own
#: compressed packets, not decoded (passthrough recording).
FrameEncoding = Literal["jpeg", "raw", "shm", "packets"]
#: How passthrough segments are cut (the rule, for --help, the README and msightd.media.gop_segmenter).
PACKET_SEGMENT_RULE = (
    "camera packets (frame_encoding packets) are cut at keyframes: a segment closes at the first keyframe at or "
    "after buffer_size frames (a GOP of 24 with --buffer-size 100 gives 120-frame segments); overlap is rounded "
    "up to whole GOPs"
)

DEFAULT_SHM_DIR = "/dev/shm/msightd"
#: Frame ring header geometry (the layout itself is in msightd.media.frame_ring): a 64 KiB header of
#: uint64 words holding 16 fixed words, 4 per consumer, and one sequence number per slot.
RING_HEADER_BYTES = 64 * 1024
RING_MAX_CONSUMERS = 32
RING_CONSUMERS_AT = 16
RING_SLOT_SEQS_AT = RING_CONSUMERS_AT + 4 * RING_MAX_CONSUMERS
RING_MAX_SLOTS = RING_HEADER_BYTES // 8 - RING_SLOT_SEQS_AT
