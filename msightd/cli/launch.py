"""The ``msight_launch_*`` commands: one node, ad hoc, with MSight's flags.

Flags are parsed into a dict keyed by the node config's field names and built by the same
:func:`msightd.config.build_options` as the daemon's TOML, so both accept the same values.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from msightd import __version__
from msightd.bus import TRANSPORTS
from msightd.bus.router import DEFAULT_STREAM_MAXLEN
from msightd.config import ConfigFileError, build_options, option_names
from msightd.logs import LOG_FORMATS, LOG_LEVELS
from msightd.nodes import NODE_KINDS
from msightd.nodes.host import HostOptions, run_node
from msightd.video import CODECS, X264_PRESETS

_HOST_FIELDS = ("redis_url", "log_level", "log_format", "metrics_port", "transport", "stream_maxlen")


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--name", required=True, help="node name (appears in logs and metrics)")
    parser.add_argument(
        "--redis-url",
        help="broker URL (redis://, rediss://, unix://); default: $MSIGHT_REDIS_URL, then MSight's "
        "MSIGHT_REDIS_MESSAGE_BROKER_* variables, then redis://localhost:6379/0",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="console (MSight's line shape) on a terminal, JSON lines otherwise",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="pubsub",
        help="pubsub (MSight's, default) or stream (Redis Streams: durable, acknowledged)",
    )
    parser.add_argument(
        "--stream-maxlen",
        type=int,
        default=DEFAULT_STREAM_MAXLEN,
        help=f"entries a stream topic keeps (default {DEFAULT_STREAM_MAXLEN})",
    )
    parser.add_argument("--version", action="version", version=f"msightd {__version__}")


def _rtsp_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msight_launch_rtsp", description="Read an RTSP camera (or a video file) and publish its frames."
    )
    _common_flags(parser)
    parser.add_argument("-u", "--url", required=True, help="rtsp:// URL of the camera, or a local video file path")
    parser.add_argument(
        "-pt", "--publish-topic", dest="publish_topic", required=True, help="topic to publish frames to"
    )
    parser.add_argument("--sensor-name", dest="sensor_name", required=True, help="name of this camera in messages")
    parser.add_argument("--rtsp-transport", dest="rtsp_transport", choices=("tcp", "udp"))
    parser.add_argument("-r", "--resize-ratio", dest="resize_ratio", type=float, help="scale frames (default 1.0)")
    parser.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, help="JPEG quality 1-100 (default 90)")
    parser.add_argument(
        "--frame-encoding",
        dest="frame_encoding",
        choices=("jpeg", "raw", "shm"),
        help="jpeg (MSight's, default), raw BGR through the broker, or shm: pixels in a shared-memory ring, "
        "only a reference on the bus (fastest; msightd consumers on this host)",
    )
    parser.add_argument("--shm-dir", dest="shm_dir", help="directory of frame rings (default /dev/shm/msightd)")
    parser.add_argument(
        "--shm-slots", dest="shm_slots", type=int, help="frames per ring (default 160; > buffer size + 50)"
    )
    parser.add_argument(
        "--decode-threads", dest="decode_threads", type=int, help="decoding threads (default 1; 0: one per core)"
    )
    parser.add_argument(
        "--decoder",
        choices=("opencv", "pyav"),
        help="opencv (default: BGR pictures) or pyav (YUV pictures: cheaper with --frame-encoding shm)",
    )
    parser.add_argument("--loop", action="store_true", default=None, help="replay a video file forever")
    parser.add_argument("--open-timeout", dest="open_timeout_s", type=float, help="seconds (default 5)")
    parser.add_argument("--read-timeout", dest="read_timeout_s", type=float, help="seconds (default 2)")
    parser.add_argument(
        "--backlog-frames",
        dest="backlog_frames",
        type=int,
        help="frames kept in memory while the broker is down (default 300)",
    )
    return parser


def _aggregator_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msight_launch_image_to_video_aggregator",
        description="Buffer frames per sensor and publish each buffer as an MP4 segment.",
    )
    _common_flags(parser)
    parser.add_argument("-st", "--subscribe-topic", dest="subscribe_topic", required=True, help="frame topic")
    parser.add_argument("-pt", "--publish-topic", dest="publish_topic", required=True, help="segment topic")
    parser.add_argument("--fps", type=float, help="frame rate of the MP4 (default 10)")
    parser.add_argument("--buffer-size", dest="buffer_size", type=int, help="frames per segment (default 100)")
    parser.add_argument(
        "--overlap-size",
        dest="overlap_size",
        type=int,
        help="frames shared by consecutive segments (default 0, < buffer size)",
    )
    parser.add_argument("--codec", choices=CODECS, help="h264 (default, plays in browsers), hevc or mp4v")
    parser.add_argument("--crf", type=int, help="h264/hevc quality, 0-51, lower is better (default 23)")
    parser.add_argument("--preset", choices=X264_PRESETS, help="h264/hevc speed preset (default veryfast)")
    parser.add_argument(
        "--encoder-threads",
        dest="encoder_threads",
        type=int,
        help="codec threads per sensor (default 1; 0: the codec decides)",
    )
    parser.add_argument("--shm-dir", dest="shm_dir", help="directory of frame rings (default /dev/shm/msightd)")
    parser.add_argument(
        "--batch-wait",
        dest="batch_wait_s",
        type=float,
        help="seconds frames gather in a stream before each read (default 0.25; 0: read each as it comes)",
    )
    return parser


def _dumper_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msight_launch_video_local_dumper", description="Write received video segments as MP4 + JSON files."
    )
    _common_flags(parser)
    parser.add_argument("-st", "--subscribe-topic", dest="subscribe_topic", required=True, help="segment topic")
    parser.add_argument("-sd", "--save-dir", dest="save_dir", required=True, help="directory to write files into")
    return parser


def _fail(prog: str, problems: Sequence[str]) -> NoReturn:
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    sys.exit(2)


def _launch(kind: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> NoReturn:
    args = vars(parser.parse_args(argv))
    if args["stream_maxlen"] < 1:
        _fail(parser.prog, [f"--stream-maxlen must be >= 1, got {args['stream_maxlen']}"])
    host = HostOptions(
        redis_url=args["redis_url"],
        log_level=args["log_level"],
        log_format=args["log_format"],
        metrics_port=args["metrics_port"],
        transport=args["transport"],
        stream_maxlen=args["stream_maxlen"],
        frame_log_level=logging.INFO,
    )
    node_options: dict[str, Any] = {k: v for k, v in args.items() if k not in _HOST_FIELDS and v is not None}
    config_class = NODE_KINDS[kind].config_class
    try:
        options = build_options(config_class, node_options, "invalid option")
    except ConfigFileError as exc:
        _fail(parser.prog, [_as_flags(p, option_names(config_class)) for p in exc.problems])
    sys.exit(run_node(kind, options, host))


def _as_flags(problem: str, field_names: Sequence[str]) -> str:
    """Config messages speak of keys (``buffer_size``); on the command line they are flags."""
    for name in field_names:
        flag = "--" + name.removesuffix("_s").replace("_", "-")
        problem = re.sub(rf"'?\b{name}\b'?", flag, problem)
    return problem.replace("invalid option: key ", "").replace("invalid option: ", "")


def launch_rtsp(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("rtsp", _rtsp_parser(), argv)


def launch_image_to_video_aggregator(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("image_to_video_aggregator", _aggregator_parser(), argv)


def launch_video_local_dumper(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("video_local_dumper", _dumper_parser(), argv)
