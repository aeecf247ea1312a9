"""Every node kind's options: the one source of their names, defaults, choices and help.

The daemon's ``[[nodes]]`` tables, the launch commands' flags (generated from the ``flags`` and ``help``
metadata here, see :mod:`msightd.cli.launch`) and the child's re-check all build these dataclasses through
:func:`msightd.config.schema.build_options`. This module imports no media library: the daemon validates
options without loading cv2, av or numpy.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from msightd.media.formats import (
    CODECS,
    DEFAULT_SHM_DIR,
    PACKET_SEGMENT_RULE,
    RING_MAX_SLOTS,
    SENDER_REPORT_WAIT_S,
    X264_PRESETS,
    CaptureClock,
    Codec,
    Decoder,
    FrameEncoding,
    RtspReader,
)
from msightd.storage.retention import RetentionPolicy
from msightd.upload.keys import KEY_LAYOUTS, normalize_prefix
from msightd.upload.limits import DEFAULT_MULTIPART_THRESHOLD, MAX_CONCURRENCY, MIN_BANDWIDTH, MIN_PART_BYTES

#: Frames waiting per sensor between an aggregator's receiving loop and its encoder thread (5 s at 10 fps).
SENSOR_QUEUE_FRAMES = 50
#: A liveness timeout long enough for a node's slowest legitimate step (opening a camera, flushing a
#: segment to a slow disk) and short enough that a frozen recorder is replaced within a minute.
DEFAULT_LIVENESS_TIMEOUT_S = 30.0
#: Nodes beat at most once a second; a shorter timeout would call a healthy node hung.
MIN_LIVENESS_TIMEOUT_S = 3.0


class ConfigError(ValueError):
    """A node option is invalid; the message names the option and what is allowed."""


def option(
    default: Any = dataclasses.MISSING, help: str = "", flags: tuple[str, ...] = (), kw_only: bool = False, **extra: Any
) -> Any:
    """A dataclass field with its launch flag(s) and help; no ``flags`` means the kebab-case of its name.
    ``extra`` may hold ``choices`` (for a ``str`` option whose allowed values are not a Literal),
    ``launch=False`` (a TOML-only option) or ``launch_default`` (the launch command's default where it differs
    from the daemon's, e.g. MSight's key layout for ``msight_launch_aws_video_pusher``)."""
    return dataclasses.field(default=default, kw_only=kw_only, metadata={"help": help, "flags": flags, **extra})


def check_segment_size(buffer_size: int, overlap_size: int) -> None:
    if buffer_size < 1:
        raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
    if not 0 <= overlap_size < buffer_size:
        raise ConfigError(f"overlap_size must be >= 0 and smaller than buffer_size ({buffer_size}), got {overlap_size}")


@dataclass(frozen=True)
class NodeOptions:
    """What every node has: its name (logs, metrics, consumer groups) and how long its main loop may stay
    silent before the daemon calls it hung (``liveness_timeout_s``, 0 disables)."""

    name: str = option(help="node name (appears in logs and metrics)", flags=("-n", "--name"))
    liveness_timeout_s: float = option(
        DEFAULT_LIVENESS_TIMEOUT_S,
        "seconds the node's main loop may stay silent before the daemon kills and restarts it (0: never)",
        kw_only=True,
        launch=False,
    )

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("name must not be empty")
        if self.liveness_timeout_s != 0 and self.liveness_timeout_s < MIN_LIVENESS_TIMEOUT_S:
            raise ConfigError(
                f"liveness_timeout_s must be 0 (off) or >= {MIN_LIVENESS_TIMEOUT_S:g} seconds, "
                f"got {self.liveness_timeout_s}"
            )


@dataclass(frozen=True)
class RtspSourceOptions(NodeOptions):
    """``msight_launch_rtsp``: read an RTSP camera (or a local video file) and publish its frames."""

    url: str = option(help="rtsp:// URL of the camera, or a local video file path", flags=("-u", "--url"))
    publish_topic: str = option(help="topic to publish frames to", flags=("-pt", "--publish-topic"))
    sensor_name: str = option(help="name of this camera in messages")
    rtsp_transport: Literal["tcp", "udp"] = option("tcp", "RTSP over TCP or UDP")
    #: FFmpeg's RTSP demuxer makes ~100 system calls per 1280x960 frame, half a passthrough recorder's CPU;
    #: msightd's own client receives a frame in two or three (README, Performance).
    rtsp_reader: RtspReader = option(
        "msightd",
        "who reads the camera's packets with frame_encoding packets: msightd's own RTSP client (RTP over TCP, "
        "H.264/H.265, a fraction of FFmpeg's CPU) or ffmpeg; a camera msightd's client cannot read (UDP only, "
        "redirects, rtsps, other codecs) goes to ffmpeg by itself, as does rtsp_transport udp",
    )
    capture_clock: CaptureClock = option(
        "arrival",
        "whose clock stamps capture times: arrival (this host's, when a frame arrives) or camera (the camera's "
        "own, from its RTCP sender reports: cameras with different delays on one timeline; needs frame_encoding "
        "packets read by msightd's RTSP client, and the camera's clock set by NTP)",
    )
    resize_ratio: float = option(1.0, "scale frames by this factor", flags=("-r", "--resize-ratio"))
    jpeg_quality: int = option(90, "JPEG quality 1-100")
    frame_encoding: FrameEncoding = option(
        "jpeg",
        "jpeg (MSight's), raw BGR through the broker, shm: pixels in a shared-memory ring, only a reference "
        "on the bus (msightd consumers on this host), or packets: the camera's own H.264/H.265, not decoded "
        "(passthrough recording: the aggregator stores it as it is)",
    )
    packet_topic: str = option(
        "",
        "also publish the camera's own packets (not decoded) to this topic, for passthrough recording, while "
        "decoded frames go to the publish topic: perception and recording from one camera connection",
    )
    shm_dir: str = option(DEFAULT_SHM_DIR, "directory of frame rings")
    #: More than a consumer holds unacknowledged (an aggregator: buffer_size + SENSOR_QUEUE_FRAMES), or frames
    #: go inline as JPEG.
    shm_slots: int = option(160, "frames per ring (more than the consumer's buffer size + 50)")
    shm_consumer_timeout_s: float = option(120.0, "seconds a silent ring consumer keeps its frames", launch=False)
    loop: bool = option(False, "replay a video file forever")
    open_timeout_s: float = option(5.0, "seconds to open the camera", flags=("--open-timeout",))
    read_timeout_s: float = option(
        2.0, "seconds a read may take before the camera counts as lost", flags=("--read-timeout",)
    )
    reconnect_delay_s: float = option(0.25, "first reconnect delay, seconds", launch=False)
    reconnect_delay_max_s: float = option(1.0, "longest reconnect delay, seconds", launch=False)
    backlog_frames: int = option(300, "frames kept in memory while the broker is down")
    #: One decoding thread is the cheapest per frame (no hand-offs); raise it for 4K at high frame rates.
    decode_threads: int = option(1, "decoding threads (0: one per core)")
    #: PyAV follows a camera that changes resolution (OpenCV rescales every later frame to the first size) and
    #: hands its YUV pictures to a frame ring without conversions; MSight decodes with PyAV too.
    decoder: Decoder = option(
        "pyav", "pyav (the decoder's YUV pictures, follows size changes) or opencv (BGR, keeps the first size)"
    )
    #: Recording here skips the broker and the aggregator: the cheapest passthrough recording (see the
    #: README's Performance section), and it keeps recording while the broker is down.
    record_dir: str = option(
        "",
        "passthrough recording in this node: cut the camera's own packets into segments and write them into this "
        "directory (a dumper's save_dir) instead of publishing the packets; the topic that would carry them "
        "carries one notice per stored segment instead, for that dumper to catalogue (retention and uploads "
        "follow)",
    )
    buffer_size: int = option(100, f"with record_dir: frames per segment; {PACKET_SEGMENT_RULE}")
    overlap_size: int = option(0, "with record_dir: frames shared by consecutive segments (< buffer size)")

    def validate(self) -> None:
        super().validate()
        if not 0 < self.resize_ratio <= 4:
            raise ConfigError(f"resize_ratio must be in (0, 4], got {self.resize_ratio}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.decode_threads < 0:
            raise ConfigError(f"decode_threads must be >= 0 (0 = one per core), got {self.decode_threads}")
        if self.backlog_frames < 0:
            raise ConfigError(f"backlog_frames must be >= 0, got {self.backlog_frames}")
        if not self.sensor_name:
            raise ConfigError("sensor_name must not be empty")
        if not 2 <= self.shm_slots <= RING_MAX_SLOTS:
            raise ConfigError(f"shm_slots must be 2..{RING_MAX_SLOTS}, got {self.shm_slots}")
        if self.shm_consumer_timeout_s <= 0:
            raise ConfigError(f"shm_consumer_timeout_s must be > 0, got {self.shm_consumer_timeout_s}")
        if self.packet_topic and (self.frame_encoding == "packets" or self.packet_topic == self.publish_topic):
            raise ConfigError(
                "packet_topic is for a camera node that also decodes frames: it needs a frame_encoding other than "
                f"'packets' and a topic other than publish_topic ({self.publish_topic!r}), got {self.packet_topic!r}"
            )
        if self.record_dir and self.frame_encoding != "packets" and not self.packet_topic:
            raise ConfigError(
                "record_dir records the camera's own packets: it needs frame_encoding 'packets' or a packet_topic "
                "(then that topic carries the notices of stored segments)"
            )
        check_segment_size(self.buffer_size, self.overlap_size)
        if self.frame_encoding == "packets" and self.resize_ratio != 1.0:
            raise ConfigError(
                f"resize_ratio must be 1.0 with frame_encoding 'packets' (nothing is decoded), got {self.resize_ratio}"
            )
        if self.capture_clock == "camera" and not self.reads_rtsp_itself:
            raise ConfigError(
                "capture_clock 'camera' reads the camera's RTCP sender reports, which only msightd's RTSP client "
                "does: it needs an rtsp:// camera with frame_encoding 'packets', rtsp_transport 'tcp' and "
                f"rtsp_reader 'msightd' (got frame_encoding {self.frame_encoding!r}, rtsp_transport "
                f"{self.rtsp_transport!r}, rtsp_reader {self.rtsp_reader!r})"
            )
        blocking_s = max(self.open_timeout_s, self.read_timeout_s)
        if self.capture_clock == "camera":
            # the wait for the first sender report, and a receive on either side of it
            blocking_s = max(blocking_s, SENDER_REPORT_WAIT_S + 2 * self.read_timeout_s)
        if self.liveness_timeout_s and self.liveness_timeout_s <= blocking_s + 1:
            raise ConfigError(
                f"liveness_timeout_s ({self.liveness_timeout_s:g}) must exceed open_timeout_s and read_timeout_s "
                f"by more than 1 s: opening or reading the camera blocks the node for up to {blocking_s:g} s"
            )

    @property
    def reads_rtsp_itself(self) -> bool:
        """Whether the camera's packets are read with msightd's own RTSP client (else FFmpeg's)."""
        return (
            self.rtsp_reader == "msightd"
            and self.frame_encoding == "packets"
            and self.rtsp_transport == "tcp"
            and not self.is_file
        )

    @property
    def packet_destination(self) -> str:
        """The topic the camera's packets go to (or, with record_dir, the notices of stored segments)."""
        return self.packet_topic or (self.publish_topic if self.frame_encoding == "packets" else "")

    def topic_payloads(self) -> dict[str, str]:
        """Topics whose payload is not the kind's default: with record_dir, segment notices."""
        return {self.packet_destination: "segments"} if self.record_dir else {}

    @property
    def is_file(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def file_path(self) -> str:
        return self.url.removeprefix("file://")


@dataclass(frozen=True)
class AggregatorOptions(NodeOptions):
    """``msight_launch_image_to_video_aggregator``: buffer frames per sensor, publish each buffer as an MP4."""

    subscribe_topic: str = option(help="frame topic", flags=("-st", "--subscribe-topic"))
    publish_topic: str = option(help="segment topic", flags=("-pt", "--publish-topic"))
    fps: float = option(10.0, "frame rate of the MP4")
    buffer_size: int = option(100, f"frames per segment; {PACKET_SEGMENT_RULE}")
    overlap_size: int = option(0, "frames shared by consecutive segments (< buffer size)")
    codec: Codec = option("h264", "h264 (plays in browsers), hevc or mp4v")
    crf: int = option(23, "h264/hevc quality, 0-51, lower is better")
    preset: str = option("veryfast", "h264/hevc speed preset", choices=X264_PRESETS)
    #: One thread per sensor is the cheapest per frame and keeps segment ends short when many cameras
    #: finish together; 0 lets the codec decide (one 4K or high-frame-rate camera).
    encoder_threads: int = option(1, "codec threads per sensor (0: the codec decides)")
    shm_dir: str = option(DEFAULT_SHM_DIR, "directory of frame rings")
    #: Reading a few frames per round trip instead of one saves CPU per frame; a segment reaches disk up to
    #: this much later.
    batch_wait_s: float = option(
        0.25, "seconds frames gather in a stream before each read (0: read each as it comes)", flags=("--batch-wait",)
    )

    def validate(self) -> None:
        super().validate()
        check_segment_size(self.buffer_size, self.overlap_size)
        if not 0 < self.fps <= 240:
            raise ConfigError(f"fps must be in (0, 240], got {self.fps}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if self.encoder_threads < 0:
            raise ConfigError(f"encoder_threads must be >= 0 (0 = automatic), got {self.encoder_threads}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be 0..51, got {self.crf}")
        if not 0 <= self.batch_wait_s <= 5:
            raise ConfigError(f"batch_wait_s must be 0..5 seconds, got {self.batch_wait_s}")

    @property
    def segment_interval_s(self) -> float:
        """Seconds between two segments of one sensor at the configured frame rate."""
        return (self.buffer_size - self.overlap_size) / self.fps


@dataclass(frozen=True)
class DumperOptions(NodeOptions):
    """``msight_launch_video_local_dumper``: write received segments as MP4 + JSON files."""

    subscribe_topic: str = option(help="segment topic", flags=("-st", "--subscribe-topic"))
    save_dir: str = option(help="directory to write files into", flags=("-sd", "--save-dir"))
    max_pending_segments: int = option(100, "segments kept in memory while they cannot be written", launch=False)
    retain_days: float | None = option(None, "delete segments whose last frame is older than this many days")
    retain_max_size: str | int | None = option(
        None, 'keep the save dir\'s segments under this total: "500GB", "20GiB" or bytes'
    )
    min_free_space: str | int | None = option(
        None, 'delete the oldest segments to keep this free on the save dir\'s filesystem: "10%%", "20GB" or bytes'
    )
    require_mount: bool = option(
        False, "write only while save_dir is on a mounted filesystem (never into an empty mount point)"
    )

    def validate(self) -> None:
        super().validate()
        if not self.save_dir:
            raise ConfigError("save_dir must not be empty")
        if self.max_pending_segments < 1:
            raise ConfigError(f"max_pending_segments must be >= 1, got {self.max_pending_segments}")
        try:
            self.retention_policy()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def retention_policy(self) -> RetentionPolicy:
        """The retention limits, parsed (``ValueError`` naming the option if one is unusable)."""
        return RetentionPolicy.parse(self.retain_days, self.retain_max_size, self.min_free_space)


@dataclass(frozen=True)
class UploaderOptions(NodeOptions):
    """``msight_launch_aws_video_pusher`` (MSight's flags) and the ``video_s3_uploader`` kind: segments into
    an S3-compatible store, either from a dumper's ``save_dir`` or received on ``subscribe_topic`` and
    spooled in ``spool_dir``. Credentials: boto3's lookup, or the two TOML-only keys (never flags: a command
    line is readable by every user of the machine)."""

    bucket_name: str = option(help="bucket to upload into")
    subscribe_topic: str | None = option(
        None, "segment topic to receive and upload (segments wait in --spool-dir)", flags=("-st", "--subscribe-topic")
    )
    save_dir: str | None = option(None, "instead of a topic: upload what a dumper writes into this directory")
    spool_dir: str | None = option(
        None, "where received segments wait, durably (default $STATE_DIRECTORY/spool/NAME or ~/.local/state/...)"
    )
    prefix: str = option("", "key prefix inside the bucket")
    key_layout: Literal["utc", "msight"] = option(
        "utc",
        "msight: <device>/<sensor>/<YYYY-MM-DD>/<HH>/<first>_<last>.mp4 (MSight's, local time); "
        "utc: <device>/<sensor>/<YYYY>/<MM>/<DD>/<HH>/<file name on disk>",
        launch_default="msight",
    )
    endpoint_url: str | None = option(None, "any S3-compatible store, e.g. http://seaweedfs:8333 (default: AWS)")
    aws_region: str = option("us-east-1", "region of the bucket")
    use_dualstack_endpoint: bool = option(False, "use AWS's IPv4+IPv6 endpoint")
    aws_access_key_id: str | None = dataclasses.field(
        default=None, repr=False, metadata={"help": "access key (else boto3's lookup)", "launch": False}
    )
    aws_secret_access_key: str | None = dataclasses.field(
        default=None, repr=False, metadata={"help": "secret key (else boto3's lookup)", "launch": False}
    )
    #: None: False with save_dir (the dumper's files stay for retention), True with a spool (always emptied).
    delete_after_upload: bool | None = option(None, "with --save-dir: delete each pair once verified in the store")
    max_bandwidth: int | None = option(None, "bytes per second over all uploads (default: no limit)")
    concurrency: int = option(2, "uploads at once")
    multipart_threshold: int = option(DEFAULT_MULTIPART_THRESHOLD, "bytes above which a file goes in parts")
    multipart_part_size: int = option(DEFAULT_MULTIPART_THRESHOLD, f"bytes per part (>= {MIN_PART_BYTES})")
    wait_s: float = option(0.0, "seconds to wait before starting", flags=("-w", "--wait"))
    max_pending_segments: int = option(
        100, "received segments kept in memory while they cannot be spooled", launch=False
    )

    def validate(self) -> None:
        super().validate()
        if not self.bucket_name or "/" in self.bucket_name:
            raise ConfigError(f"bucket_name must be a bucket name (no '/'), got {self.bucket_name!r}")
        if (self.save_dir is None) == (self.subscribe_topic is None):
            raise ConfigError(
                "set exactly one of save_dir (upload what a dumper writes there) or subscribe_topic (receive "
                "segments and spool them in spool_dir)"
            )
        if self.save_dir is not None and not self.save_dir:
            raise ConfigError("save_dir must not be empty")
        if self.spool_dir is not None and self.subscribe_topic is None:
            raise ConfigError("spool_dir is only used with subscribe_topic; with save_dir, uploads come from there")
        if self.subscribe_topic is not None and self.delete_after_upload is False:
            raise ConfigError("delete_after_upload cannot be false with subscribe_topic: the spool is always emptied")
        if self.key_layout not in KEY_LAYOUTS:
            raise ConfigError(f"key_layout must be one of {', '.join(KEY_LAYOUTS)}, got {self.key_layout!r}")
        try:
            normalize_prefix(self.prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint_url must start with http:// or https://, got {self.endpoint_url!r}")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ConfigError("set both aws_access_key_id and aws_secret_access_key, or neither (boto3's lookup)")
        self._validate_transfer()

    def _validate_transfer(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency must be 1-{MAX_CONCURRENCY}, got {self.concurrency}")
        if self.max_bandwidth is not None and self.max_bandwidth < MIN_BANDWIDTH:
            raise ConfigError(
                f"max_bandwidth is in bytes per second and must be >= {MIN_BANDWIDTH}, got {self.max_bandwidth}"
            )
        if self.multipart_threshold < 1:
            raise ConfigError(f"multipart_threshold must be >= 1 byte, got {self.multipart_threshold}")
        if self.multipart_part_size < MIN_PART_BYTES:
            raise ConfigError(
                f"multipart_part_size must be >= {MIN_PART_BYTES} (S3's minimum part), got {self.multipart_part_size}"
            )
        if self.wait_s < 0 or self.max_pending_segments < 1:
            raise ConfigError("wait must be >= 0 seconds and max_pending_segments >= 1")

    @property
    def spooling(self) -> bool:
        return self.subscribe_topic is not None

    def directory(self) -> Path:
        """The directory uploads come from: the save dir, or the spool. The spool's default survives
        reboots (unlike /tmp): ``$STATE_DIRECTORY/spool/<name>`` under systemd (``StateDirectory=msightd``,
        /var/lib/msightd), else ``$XDG_STATE_HOME/msightd/spool/<name>`` (``~/.local/state/...``)."""
        if self.save_dir is not None:
            return Path(self.save_dir).expanduser().absolute()
        if self.spool_dir is not None:
            return Path(self.spool_dir).expanduser().absolute()
        systemd_state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if systemd_state:
            return Path(systemd_state) / "spool" / self.name
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "msightd" / "spool" / self.name
