"""Noticing a camera whose packets bring no keyframe, so that passthrough recording does not stay silent.

A passthrough segment can only start on a keyframe (an IDR picture; an IRAP picture in H.265), and after
each (re)connection the camera node drops packets until one arrives. Cameras send one every GOP, a second
or a few; a camera set to intra refresh or a "smart" codec (H.264+, Zipstream's dynamic GOP) sends one
rarely or only when a client first connects, and then nothing is recorded while frames keep arriving. Only
a ``before_keyframe`` counter would say so: :class:`KeyframeWait` turns a long wait into one warning line
that names the camera setting to change, and a line when the keyframe finally comes.

FFmpeg's parser marks every H.264 frame that carries a recovery point as a keyframe. Both readers here take
only those whose recovery is exact at once (open-GOP I-frames, :func:`msightd.media.nal.starts_random_access`):
with intra refresh, FFmpeg's own decoder shows one picture of a segment that starts on such a frame
(measured with x264's intra refresh: 1 of 40), so recording from there would keep files nobody can watch.
Waiting for a true keyframe, and saying so, is the honest choice.
"""

from __future__ import annotations

import time

import structlog

#: How long a camera may send frames without a keyframe before the node warns (GOPs are seconds long).
NO_KEYFRAME_WARNING_S = 10.0

NO_KEYFRAME_HINT = (
    "passthrough segments start on a keyframe (IDR) and this camera sends none: set its I-frame interval "
    "(GOP) to a few seconds and turn off intra refresh and smart codecs (H.264+, dynamic GOP), or record "
    "decoded frames (frame_encoding = 'shm')"
)


class KeyframeWait:
    """The wait for a keyframe since the source was (re)opened. One owner, not thread-safe."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger, warn_after_s: float = NO_KEYFRAME_WARNING_S) -> None:
        self._log = log
        self._warn_after_s = warn_after_s
        self._since: float | None = None
        self._skipped = 0
        self._warned = False

    def restart(self) -> None:
        """The source was (re)opened: a new wait starts with its first frame."""
        self._since, self._skipped, self._warned = None, 0, False

    def skipped(self) -> None:
        """A frame was dropped because no keyframe has come yet."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self._skipped += 1
        if not self._warned and now - self._since >= self._warn_after_s:
            self._warned = True
            self._log.warning(
                "no_keyframe",
                waited_s=round(now - self._since, 1),
                frames_skipped=self._skipped,
                hint=NO_KEYFRAME_HINT,
            )

    def arrived(self) -> None:
        """The first keyframe came: recording starts here."""
        if self._warned and self._since is not None:
            self._log.info(
                "keyframe_arrived", waited_s=round(time.monotonic() - self._since, 1), frames_skipped=self._skipped
            )
        self.restart()
