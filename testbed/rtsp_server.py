#!/usr/bin/python3
"""Loopback RTSP server for msightd tests and benchmarks (no Docker needed).

Run it with the *system* Python (``/usr/bin/python3``): it needs PyGObject and
the GStreamer RTSP server typelib, which the project venvs do not have.  Debian
packages::

    python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-x
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly

Sources
-------
``--source testsrc`` (default)
    ``videotestsrc is-live=true pattern=ball`` + ``timeoverlay`` at
    ``--width/--height/--fps``, encoded by ``x264enc tune=zerolatency
    speed-preset=ultrafast key-int-max=<fps>`` (one IDR per second, so a client
    can join at any time; every frame differs from the previous one).
    ``sliced-threads=false threads=1``: with zerolatency's default sliced
    threads, IDR frames come out as 2 slices that rtph264pay/ffmpeg turn into 2
    packets, and OpenCV then returns ~1 duplicated frame per second (11 fps
    instead of 10).  Measured server CPU (one core = 100 %): ~6 % at
    640x480@10, ~17 % at 1280x960@10.

``--source file --file clip.mp4 [--file next.mp4 ...]``
    An H.264 or H.265 MP4/MOV streamed forever in a loop *without re-encoding*
    (several files play back to back, e.g. two sizes for a camera that changes
    resolution mid-stream; they must share one codec).  Its
    access units are demuxed once into memory (``qtdemux ! h264parse`` to
    byte-stream AUs with SPS/PPS in front of every IDR; ``h265parse`` and
    ``rtph265pay`` for H.265) and pushed by an
    ``appsrc is-live=true`` with timestamps shifted by ``loop * clip_duration``,
    so PTS/DTS and hence RTP timestamps keep increasing across loop seams;
    ``clocksync`` paces the stream at the clip's native rate.  Measured with
    ``mcity_gs_main_stadium1.mp4`` (1280x960@10, 110 frames, 5.3 MB): ~1 % CPU,
    an OpenCV client reads 10.00 fps over 25 s / two loop seams, max frame gap
    0.11 s.  Alternatives measured and rejected: seeking ``filesrc ! qtdemux``
    back to 0 on EOS restarts the RTP timestamps; decoding + re-encoding with
    x264 (ultrafast) costs ~19 % CPU.  Caveats: the clip must be H.264 and is
    held in memory (keep it to tens of MB); its GOP/B-frames are kept, so a
    client joining mid-GOP may get a few undecodable/garbled frames until the
    clip's next IDR (the mcity clips have one per second).

Pipeline lifetime: the media factory is shared, so all clients of a server read
one pipeline.  It is built when the first client connects and then kept running
until the server exits (see ``_keep_media_prepared``), like a real camera: the
idle CPU cost equals the streaming cost above, and reconnecting clients join the
running stream instead of racing its teardown.

Protocol with the parent (see ``testbed/rtsp.py``): exactly one line
``READY <port>`` on stdout once the server socket is bound and listening
(``--port 0`` lets the OS choose; the real port is reported).  Diagnostics go to
stderr.  SIGTERM/SIGINT stop the server with exit status 0.  Exit status 2 with
a one-line stderr message means GStreamer bits are missing (``--check`` performs
only that check); exit status 1 means a runtime error (bad file, port in use...).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
from typing import Any, NoReturn

APT_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-x "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"
)
# element -> Debian package providing it; checked up front so that a missing
# plugin gives a clear message instead of an opaque pipeline failure per client.
REQUIRED_ELEMENTS = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "timeoverlay": "gstreamer1.0-x",
    "videoconvert": "gstreamer1.0-plugins-base",
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "clocksync": "gstreamer1.0 (core)",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "h264parse": "gstreamer1.0-plugins-bad",
    "h265parse": "gstreamer1.0-plugins-bad",
    "qtdemux": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtph265pay": "gstreamer1.0-plugins-good",
}
#: caps name of the demuxed video -> (parser, RTP payloader)
_CODEC_ELEMENTS = {"video/x-h264": ("h264parse", "rtph264pay"), "video/x-h265": ("h265parse", "rtph265pay")}
EXIT_MISSING_DEPS = 2
EXIT_RUNTIME_ERROR = 1
_WHOLE_BUFFER = 2**64 - 1  # gsize -1: copy_region up to the end


def _fail(message: str, status: int) -> NoReturn:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _load_gstreamer() -> tuple[Any, Any, Any]:
    """Import GLib/Gst/GstRtspServer or exit 2 naming the apt packages to install."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        _fail(
            f"GStreamer RTSP server not available to {sys.executable} ({exc}); install: apt-get install {APT_PACKAGES}",
            EXIT_MISSING_DEPS,
        )
    Gst.init(None)
    missing = sorted(
        f"{name} ({pkg})" for name, pkg in REQUIRED_ELEMENTS.items() if Gst.ElementFactory.find(name) is None
    )
    if missing:
        _fail(
            f"missing GStreamer elements: {', '.join(missing)}; install: apt-get install {APT_PACKAGES}",
            EXIT_MISSING_DEPS,
        )
    return GLib, Gst, GstRtspServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 = let the OS pick (reported in READY)")
    p.add_argument("--mount", default="/live.stream")
    p.add_argument("--source", choices=("testsrc", "file"), default="testsrc")
    p.add_argument("--file", action="append", help="H.264/H.265 MP4 for --source file (repeat to play several in turn)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (testsrc only)")
    p.add_argument(
        "--unsynced-clock",
        action="store_true",
        help="stamp RTCP sender reports with the pipeline's running time (a clock near 1900) instead of the "
        "wall clock, as a camera without NTP",
    )
    p.add_argument("--check", action="store_true", help="only check that GStreamer is usable, exit 0/2")
    p.add_argument("--user", help="require this user (with --password) to play the stream")
    p.add_argument("--password", default="")
    p.add_argument("--auth", choices=("basic", "digest"), default="digest", help="how --user authenticates")
    p.add_argument("--transport", choices=("any", "tcp", "udp"), default="any", help="RTP lower transports offered")
    p.add_argument(
        "--session-timeout",
        type=int,
        help="expire a session after this many seconds without a request from its client and close its "
        "connection, as cameras do (default: GStreamer's 60 s, never enforced on a TCP connection)",
    )
    args = p.parse_args(argv)
    if not args.mount.startswith("/"):
        p.error("--mount must start with '/'")
    if args.source == "file" and not args.file:
        p.error("--source file requires --file PATH")
    if min(args.width, args.height, args.fps) <= 0:
        p.error("--width/--height/--fps must be positive")
    return args


def _testsrc_launch(args: argparse.Namespace) -> str:
    return (
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        '! timeoverlay halignment=left valignment=top font-desc="Sans 24" '
        "! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} sliced-threads=false threads=1 "
        "! video/x-h264,profile=constrained-baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def _pull_all(Gst: Any, launch: str, path: str) -> list[Any]:
    """Every sample an ``appsink name=sink`` gives for ``launch`` run on ``path``, or a clear error."""
    pipeline = Gst.parse_launch(launch)
    pipeline.get_by_name("src").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    samples: list[Any] = []
    try:
        while (sample := sink.emit("try-pull-sample", 10 * Gst.SECOND)) is not None:
            samples.append(sample)
        msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, _dbg = msg.parse_error()
            raise RuntimeError(f"cannot read {path} as an MP4/MOV with H.264/H.265 video: {err.message}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not samples:
        raise RuntimeError(f"no H.264/H.265 video found in {path}")
    return samples


class _Clip:
    """The whole clip (one or more files in turn) as byte-stream access units with their caps,
    demuxed once into memory; the files must share one codec."""

    def __init__(self, Gst: Any, paths: list[str]) -> None:
        self.samples: list[tuple[Any, Any]] = []  # (buffer with clip timestamps, caps)
        self.codec = ""
        none = Gst.CLOCK_TIME_NONE
        offset = shown_until = 0  # shift of the current file; end of the frames shown so far
        for path in paths:
            buffers, caps, lead, span = self._load(Gst, path)
            if self.samples:  # the next file's first frame is shown right after the last one
                offset = shown_until - lead
            for buffer in buffers:
                if buffer.pts != none:
                    buffer.pts += offset
                if buffer.dts != none:
                    buffer.dts += offset
                self.samples.append((buffer, caps))
            shown_until = offset + lead + span
        ts = [b.dts if b.dts != none else b.pts for b, _caps in self.samples]
        self.first_ts: int = min(ts)
        # Loop period = presentation span including the last frame's duration, so the
        # frame spacing across the loop seam equals the clip's frame duration.
        self.duration: int = shown_until - self.samples[0][0].pts
        self.caps: Any = self.samples[0][1]

    def _load(self, Gst: Any, path: str) -> tuple[list[Any], Any, int, int]:
        """(buffers rebased so the first is decoded at 0, caps, pts of the first frame shown, span from
        that frame to the end of the last one shown) of one file; times in ns."""
        first = _pull_all(Gst, "filesrc name=src ! qtdemux ! appsink name=sink sync=false", path)[0]
        codec = first.get_caps().get_structure(0).get_name()
        if codec not in _CODEC_ELEMENTS or self.codec not in ("", codec):
            raise RuntimeError(f"{path}: {codec} video; expected H.264 or H.265, one codec for all files")
        self.codec = codec
        parser = _CODEC_ELEMENTS[codec][0]
        samples = _pull_all(
            Gst,
            f"filesrc name=src ! qtdemux ! {parser} config-interval=-1 "
            f"! {codec},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
            path,
        )
        buffers = [sample.get_buffer().copy_deep() for sample in samples]
        none = Gst.CLOCK_TIME_NONE
        ts = [b.dts if b.dts != none else b.pts for b in buffers]
        pts = sorted(b.pts for b in buffers if b.pts != none)
        if none in ts or len(pts) != len(buffers):
            raise RuntimeError(f"{path}: video samples without timestamps")
        # Frame duration for samples without one (qtdemux normally sets it).
        steps = sorted(b - a for a, b in itertools.pairwise(pts) if b > a)
        default_duration = steps[len(steps) // 2] if steps else Gst.SECOND // 10
        ends = [b.pts + (b.duration if b.duration != none else default_duration) for b in buffers]
        base = min(ts)
        for buffer in buffers:
            buffer.pts -= base
            if buffer.dts != none:
                buffer.dts -= base
        return buffers, samples[0].get_caps(), pts[0] - base, max(ends) - pts[0]


class _LoopFeeder:
    """Feeds one media's appsrc with the clip, looping with ever-increasing timestamps.

    One feeder per media pipeline, created in ``media-configure``; it runs in
    that pipeline's appsrc streaming thread only.  Timestamps are anchored to the
    pipeline's running time when the first buffer is requested.
    """

    def __init__(self, Gst: Any, clip: _Clip) -> None:
        self._Gst = Gst
        self._clip = clip
        self._index = 0
        self._pushed = 0
        self._offset: int | None = None  # running time of clip timestamp `first_ts`, loop 0

    def on_need_data(self, appsrc: Any, _length: int) -> None:
        Gst = self._Gst
        clip = self._clip
        if self._offset is None:
            clock = appsrc.get_clock()
            now = clock.get_time() - appsrc.get_base_time() if clock is not None else 0
            self._offset = now - clip.first_ts
        src, caps = clip.samples[self._index]
        flags = Gst.BufferCopyFlags
        # copy_region shares the memory (no data copy); Gst.Buffer.copy() in PyGI only adds a ref.
        buf = src.copy_region(flags.FLAGS | flags.TIMESTAMPS | flags.META | flags.MEMORY, 0, _WHOLE_BUFFER)
        if src.pts != Gst.CLOCK_TIME_NONE:
            buf.pts = src.pts + self._offset
        if src.dts != Gst.CLOCK_TIME_NONE:
            buf.dts = src.dts + self._offset
        if self._pushed:  # only the very first buffer may be DISCONT; the loop seam is seamless
            buf.unset_flags(Gst.BufferFlags.DISCONT)
        self._pushed += 1
        appsrc.emit("push-sample", Gst.Sample.new(buf, caps, None, None))  # caps change in-stream
        self._index += 1
        if self._index == len(clip.samples):
            self._index = 0
            self._offset += clip.duration


def _file_factory(GstRtspServer: Any, Gst: Any, clip: _Clip) -> Any:
    factory = GstRtspServer.RTSPMediaFactory()
    payloader = _CODEC_ELEMENTS[clip.codec][1]
    factory.set_launch(
        "( appsrc name=src is-live=true format=time min-latency=0 "
        f"! clocksync ! {payloader} name=pay0 pt=96 config-interval=-1 )"
    )

    def on_media_configure(_factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", clip.caps)
        feeder = _LoopFeeder(Gst, clip)
        appsrc.connect("need-data", feeder.on_need_data)

    factory.connect("media-configure", on_media_configure)
    return factory


def _keep_media_prepared(GstRtspServer: Any, pool: Any, media: Any) -> None:
    """Make ``media`` (the shared pipeline) live until the server exits, like a real camera.

    gst-rtsp-server unprepares a shared media when its last client leaves, and 1.22
    races that against a new DESCRIBE: the client gets the dying media from the
    factory cache and "503 Service Unavailable" (measured: ~40 % of immediate
    reconnects, exactly what camera-outage tests do).  A media is only unprepared
    when its prepare count drops to 0, so we take one extra prepare reference the
    first time it is prepared.  That nested prepare() returns at once (the media is
    already prepared) and only stops the spare thread we hand it.
    """
    taken = False

    def on_prepared(prepared_media: Any) -> None:
        nonlocal taken
        if taken:
            return
        taken = True
        ctx = GstRtspServer.RTSPContext()  # only passed to thread-pool hooks; unused by default
        thread = pool.get_thread(GstRtspServer.RTSPThreadType.MEDIA, ctx)
        if thread is None or not prepared_media.prepare(thread):
            print("rtsp_server: warning: could not pin the shared media", file=sys.stderr, flush=True)

    media.connect("prepared", on_prepared)


def _require_credentials(GstRtspServer: Any, server: Any, factory: Any, args: argparse.Namespace) -> None:
    """Only ``--user``/``--password`` may play the stream, by Basic or Digest authentication, as on a camera."""
    from gi.repository import GstRtsp

    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth = GstRtspServer.RTSPAuth()
    if args.auth == "digest":
        auth.add_digest(args.user, args.password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", "media.factory.access", True)
    permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    factory.set_permissions(permissions)


def _enforce_session_timeout(GLib: Any, server: Any, timeout_s: int) -> None:
    """Sessions time out after ``timeout_s`` s without an RTSP request from their client, and their TCP
    connection closes then, as on cameras that enforce the timeout. GStreamer's own server never lets a
    playing session expire: every RTCP round of its own sender counts as the client being alive."""

    def on_new_session(_client: Any, session: Any) -> None:
        session.set_timeout(timeout_s)
        session.set_property("extra-timeout", 0)  # GStreamer's default grace of 5 s on top

    def on_play_request(_client: Any, context: Any) -> None:
        media = context.sessmedia
        for index in range(media.get_media().n_streams()):
            transport = media.get_transport(index)
            if transport is not None:
                transport.set_keepalive(_no_keepalive)

    def on_client_connected(_server: Any, client: Any) -> None:
        client.set_property("post-session-timeout", 0)
        client.connect("new-session", on_new_session)
        client.connect("play-request", on_play_request)

    def cleanup() -> bool:
        server.get_session_pool().cleanup()
        return GLib.SOURCE_CONTINUE

    server.connect("client-connected", on_client_connected)
    GLib.timeout_add(250, cleanup)


def _unsynced_clock(Gst: Any, factory: Any) -> None:
    """Sender reports carry the pipeline's running time as their NTP time: a camera whose clock was never
    set (by default GStreamer, like a synchronised camera, reports its wall clock)."""

    def on_prepared(media: Any) -> None:
        pipeline = media.get_element().get_parent()
        elements = pipeline.iterate_recurse()
        while True:
            result, element = elements.next()
            if result == Gst.IteratorResult.RESYNC:  # the pipeline changed while walked: walk it again
                elements.resync()
                continue
            if result != Gst.IteratorResult.OK:
                return
            if element.get_factory() is not None and element.get_factory().get_name() == "rtpbin":
                Gst.util_set_object_arg(element, "ntp-time-source", "running-time")

    factory.connect("media-configure", lambda _factory, media: media.connect("prepared", on_prepared))


def _no_keepalive(*_: Any) -> None:
    """Media activity is no keepalive on this server (see :func:`_enforce_session_timeout`)."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    GLib, Gst, GstRtspServer = _load_gstreamer()
    if args.check:
        return 0

    if args.source == "file":
        try:
            clip = _Clip(Gst, args.file)
        except RuntimeError as exc:
            _fail(str(exc), EXIT_RUNTIME_ERROR)
        factory = _file_factory(GstRtspServer, Gst, clip)
    else:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(_testsrc_launch(args))
    factory.set_shared(True)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    # With the default single worker thread, a client that connects early (while
    # the first media is still prerolling) can stall every other client ~40 s.
    server.get_thread_pool().set_max_threads(4)
    factory.connect(
        "media-configure",
        lambda _factory, media: _keep_media_prepared(GstRtspServer, server.get_thread_pool(), media),
    )
    if args.transport != "any":
        from gi.repository import GstRtsp

        lower = GstRtsp.RTSPLowerTrans.TCP if args.transport == "tcp" else GstRtsp.RTSPLowerTrans.UDP
        factory.set_protocols(lower)
    if args.user:
        _require_credentials(GstRtspServer, server, factory, args)
    if args.unsynced_clock:
        _unsynced_clock(Gst, factory)
    if args.session_timeout is not None:
        _enforce_session_timeout(GLib, server, args.session_timeout)
    server.get_mount_points().add_factory(args.mount, factory)

    loop = GLib.MainLoop()
    # create_source() + attach() is what server.attach() does, but it reports why
    # binding failed (e.g. "Address already in use") instead of just returning 0.
    try:
        source = server.create_source(None)
    except GLib.Error as exc:
        _fail(f"cannot listen on {args.host}:{args.port}: {exc.message}", EXIT_RUNTIME_ERROR)
    source.attach(None)

    def on_signal(*_: Any) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, on_signal)

    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    source.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
