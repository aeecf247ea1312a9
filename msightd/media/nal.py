"""Just enough H.264 / H.265 bitstream reading to record a camera without decoding it.

A recorder that copies the camera's access units needs three facts the demuxer does not keep up to date
once the stream runs: which parameter sets (VPS/SPS/PPS) are in force, whether they changed, and the
picture size they declare (a camera that switches 1280x960 -> 640x480 says so only in a new in-band
SPS). This module splits Annex B byte streams into NAL units and reads the picture size from an SPS;
nothing here decodes a picture. Pure functions on bytes, no state.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Codec names as FFmpeg spells them (and as they travel on the wire).
H264 = "h264"
HEVC = "hevc"
CODECS = (H264, HEVC)
START_CODE = b"\x00\x00\x00\x01"

_H264_SPS, _H264_PPS = 7, 8
H264_IDR = 5
H264_SEI = 6
_SEI_RECOVERY_POINT = 6  # payload type (H.264 D.1.8)
#: BLA, IDR, CRA (and their reserved neighbours): H.265 pictures a decoder can start at.
HEVC_IRAP = range(16, 22)
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34
#: H.264 profiles whose SPS carries chroma format, bit depths and scaling lists (spec 7.3.2.1.1).
_H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class BitstreamError(ValueError):
    """A NAL unit too short or inconsistent to read (a corrupt or truncated camera packet)."""


def split_annexb(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B buffer (start codes of 3 or 4 bytes removed), in order.

    A zero byte just before a 3-byte start code belongs to the 4-byte start code, as FFmpeg reads it;
    ``bytes.find`` keeps this cheap even for a 200 KB keyframe.
    """
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        begin = start + 3
        following = data.find(b"\x00\x00\x01", begin)
        end = len(data) if following == -1 else following - (data[following - 1] == 0)
        if end > begin:
            yield data[begin:end]
        start = following


def nal_type(codec: str, nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F if codec == HEVC else nal[0] & 0x1F


def is_parameter_set(codec: str, kind: int) -> bool:
    return kind in (_HEVC_VPS, _HEVC_SPS, _HEVC_PPS) if codec == HEVC else kind in (_H264_SPS, _H264_PPS)


def is_sps(codec: str, kind: int) -> bool:
    return kind == (_HEVC_SPS if codec == HEVC else _H264_SPS)


def is_slice(codec: str, kind: int) -> bool:
    return kind < 32 if codec == HEVC else 1 <= kind <= 5


def _leading_nal_units(codec: str, access_unit: bytes) -> Iterator[tuple[int, int, int]]:
    """``(type, begin, end)`` of each NAL unit of an access unit up to its first slice, which ends the walk
    (its ``end`` is not looked for: -1).

    Reads each NAL unit's type before looking for its end: an ordinary frame costs a NAL header or two, not
    a search through its 50 KB of slice data (which cost ~30 us a frame).
    """
    start = access_unit.find(b"\x00\x00\x01")
    while start != -1:
        begin = start + 3
        if begin < len(access_unit) and not access_unit.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"), begin):
            kind = nal_type(codec, access_unit[begin : begin + 1])
            if is_slice(codec, kind):
                yield kind, begin, -1
                return
            following = access_unit.find(b"\x00\x00\x01", begin)
            yield kind, begin, len(access_unit) if following == -1 else following - (access_unit[following - 1] == 0)
        else:  # an empty NAL unit: the next start code follows at once
            following = access_unit.find(b"\x00\x00\x01", begin)
        start = following


def parameter_sets(codec: str, access_unit: bytes) -> list[bytes]:
    """The VPS/SPS/PPS NAL units in front of an access unit's first slice (where encoders put them)."""
    return [
        access_unit[begin:end]
        for kind, begin, end in _leading_nal_units(codec, access_unit)
        if end > begin and is_parameter_set(codec, kind)
    ]


def is_random_access(codec: str, kind: int) -> bool:
    """Whether a slice of this type starts a picture a decoder can begin with (an IDR; an IRAP in H.265)."""
    return kind in HEVC_IRAP if codec == HEVC else kind == H264_IDR


def starts_random_access(codec: str, access_unit: bytes) -> bool:
    """Whether a recording can start at this access unit: its first slice is an IDR (an IRAP in H.265), or,
    in H.264, an SEI before it says the picture is exact at once (:func:`is_exact_recovery_point`: an
    open-GOP I-frame). FFmpeg's parser also flags pictures whose recovery takes more frames (intra refresh)
    as keyframes; a segment that starts on one shows almost nothing (see :mod:`msightd.nodes.keyframe_wait`)."""
    exact_recovery = False
    for kind, begin, end in _leading_nal_units(codec, access_unit):
        if end == -1:
            return is_random_access(codec, kind) or (
                exact_recovery and _is_intra_slice(access_unit[begin : begin + 16])
            )
        if codec == H264 and kind == H264_SEI and not exact_recovery:
            exact_recovery = is_exact_recovery_point(access_unit[begin:end])
    return False


def is_exact_recovery_point(sei: bytes) -> bool:
    """Whether an H.264 SEI NAL unit holds a recovery point with ``recovery_frame_cnt`` 0 (spec D.2.8): the
    picture and every one after it in output order decode exactly from here, as after an IDR. Encoders put
    it before an open-GOP I-frame; intra refresh gives a count of a whole refresh period instead. An SEI too
    short or malformed to read is no recovery point."""
    rbsp = _rbsp(sei)
    at = 1  # after the NAL header
    try:
        while at < len(rbsp) and rbsp[at] != 0x80:  # 0x80: the RBSP's trailing bits
            payload_type, at = _sei_number(rbsp, at)
            payload_size, at = _sei_number(rbsp, at)
            if at + payload_size > len(rbsp):
                return False  # a truncated message
            if payload_type == _SEI_RECOVERY_POINT:
                return _Bits(rbsp[at : at + payload_size], 0).ue() == 0
            at += payload_size
    except BitstreamError:
        return False
    return False


def _is_intra_slice(slice_start: bytes) -> bool:
    """Whether an H.264 slice (its first bytes) is an I or SI slice: a recovery point on a P slice (a broken
    camera) is no place to start."""
    try:
        bits = _Bits(_rbsp(slice_start), 8)
        bits.ue()  # first_mb_in_slice
        return bits.ue() % 5 in (2, 4)  # slice_type: I, SI (and their "all slices" forms 7, 9)
    except BitstreamError:
        return False


def _sei_number(rbsp: bytes, at: int) -> tuple[int, int]:
    """An SEI payload type or size (0xFF bytes adding 255 each, then the last byte) and where the next field
    starts."""
    value = 0
    while at < len(rbsp):
        byte = rbsp[at]
        value, at = value + byte, at + 1
        if byte != 0xFF:
            return value, at
    raise BitstreamError("SEI message ends early")


def join_annexb(nals: list[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


class _Bits:
    """MSB-first bit reader over an RBSP (emulation-prevention bytes already removed)."""

    def __init__(self, rbsp: bytes, first_bit: int) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._length = len(rbsp) * 8
        self._position = first_bit

    def u(self, count: int) -> int:
        if count == 0:
            return 0
        end = self._position + count
        if end > self._length:
            raise BitstreamError("parameter set ends early")
        value = (self._value >> (self._length - end)) & ((1 << count) - 1)
        self._position = end
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


def _rbsp(nal: bytes) -> bytes:
    """Drop the emulation-prevention byte of every 00 00 03 sequence."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in nal else nal


def sps_picture_size(codec: str, sps: bytes) -> tuple[int, int]:
    """(width, height) of the pictures an SPS NAL unit declares, after its cropping window.

    :raises BitstreamError: for a truncated or nonsensical SPS.
    """
    try:
        return _hevc_size(_Bits(_rbsp(sps), 16)) if codec == HEVC else _h264_size(_Bits(_rbsp(sps), 8))
    except BitstreamError:
        raise
    except (ValueError, IndexError) as exc:
        raise BitstreamError(f"unreadable SPS: {exc}") from exc


def _h264_size(bits: _Bits) -> tuple[int, int]:
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_planes = 0
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            separate_planes = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    if chroma_format_idc == 0 or separate_planes:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        unit_x = 1 if chroma_format_idc == 3 else 2
        unit_y = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - unit_y * (crop[2] + crop[3])
    return _checked(width, height)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def _hevc_size(bits: _Bits) -> tuple[int, int]:
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(bits, sub_layers)
    bits.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = bits.ue()
    separate_planes = bits.u(1) if chroma_format_idc == 3 else 0
    width, height = bits.ue(), bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        plain = chroma_format_idc in (0, 3) or separate_planes
        sub_width = 1 if plain else 2
        sub_height = 2 if chroma_format_idc == 1 and not separate_planes else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    return _checked(width, height)


def _skip_profile_tier_level(bits: _Bits, sub_layers: int) -> None:
    bits.u(88)  # general profile space/tier/idc, compatibility flags, constraint flags
    bits.u(8)  # general_level_idc
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers > 0:
        bits.u(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile_present, level_present in present:
        bits.u(88 if profile_present else 0)
        bits.u(8 if level_present else 0)


def _checked(width: int, height: int) -> tuple[int, int]:
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise BitstreamError(f"SPS declares an impossible picture size {width}x{height}")
    return width, height
