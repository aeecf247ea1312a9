from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import pytest

from msightd.upload.keys import (
    SegmentKeys,
    metadata_object,
    msight_keys,
    msight_metadata,
    normalize_prefix,
    segment_keys,
    utc_keys,
)

DETROIT_WINTER = timezone(timedelta(hours=-5))


def dumper_json(sensor: str = "cam_1", first: float = 1764590400.3, last: float = 1764590409.9) -> dict[str, Any]:
    """What msightd's dumper writes (the fields the layouts read)."""
    return {
        "sensor_name": sensor,
        "device_name": "edge-1",
        "video_file": "cam_1_20251201_120000_300000.mp4",  # a plain name: the catalog refuses others
        "video_sha256": "0" * 64,
        "codec": "h264",
        "fps": 10.0,
        "width": 640,
        "height": 480,
        "frame_count": 2,
        "segment_frame_id": 7001,
        "first_capture_timestamp": first,
        "last_capture_timestamp": last,
        "frames": [
            {"frame_id": 7001, "capture_timestamp": first, "capture_time": "..."},
            {"frame_id": 7002, "capture_timestamp": last, "capture_time": "..."},
        ],
        "segment_creation_timestamp": 1764590410.2,
    }


def test_msight_keys_match_msights_format_exactly() -> None:
    """[prefix/]{device}/{sensor}/{YYYY-MM-DD}/{HH}/{int(first)}_{int(last)}.mp4|.json, date and hour from the
    creation time in local time (here a fixed UTC-5 zone: 12:00:10Z is 07 local)."""
    keys = msight_keys("tutorial", "edge-1", dumper_json(), tz=DETROIT_WINTER)
    assert keys == SegmentKeys(
        "tutorial/edge-1/cam_1/2025-12-01/07/1764590400_1764590409.mp4",
        "tutorial/edge-1/cam_1/2025-12-01/07/1764590400_1764590409.json",
    )
    assert msight_keys("", "edge-1", dumper_json(), tz=DETROIT_WINTER).video == (
        "edge-1/cam_1/2025-12-01/07/1764590400_1764590409.mp4"
    )


def test_utc_keys_use_the_first_capture_hour_in_utc_and_the_file_names_on_disk() -> None:
    keys = utc_keys("fleet", "edge-1", dumper_json(), "cam_1_20251201_120000_300000.json")
    assert keys == SegmentKeys(
        "fleet/edge-1/cam_1/2025/12/01/12/cam_1_20251201_120000_300000.mp4",
        "fleet/edge-1/cam_1/2025/12/01/12/cam_1_20251201_120000_300000.json",
    )
    assert segment_keys("utc", "", "edge-1", dumper_json(), "x.json").metadata == "edge-1/cam_1/2025/12/01/12/x.json"


@pytest.mark.parametrize("sensor", ["../../etc", "cam/1", "", "a" * 300, "cam 1\n"])
def test_untrusted_sensor_names_stay_one_path_element(sensor: str) -> None:
    msight = msight_keys("p", "edge-1", dumper_json(sensor), tz=DETROIT_WINTER)
    utc = utc_keys("p", "edge-1", dumper_json(sensor), "x.json")
    for keys, depth in ((msight, 6), (utc, 8)):
        parts = keys.video.split("/")
        assert len(parts) == depth and parts[:2] == ["p", "edge-1"]
        assert not {"", ".", ".."} & set(parts)
        assert all(ch.isprintable() and ch != " " for ch in keys.video)


def test_prefix_is_normalised_or_refused_with_the_reason() -> None:
    assert normalize_prefix("/a/b/") == "a/b"
    assert normalize_prefix("") == ""
    for bad in ("a//b", "a/../b", "./a", "a\\b", "a\nb"):
        with pytest.raises(ValueError, match="prefix"):
            normalize_prefix(bad)


def test_msight_json_is_the_videodata_message_without_video() -> None:
    """MSight's pusher uploads VideoData.to_dict() minus 'video': its fields, in its order, then ours."""
    document = msight_metadata(dumper_json())
    assert list(document)[:9] == [
        "data_type",
        "sensor_name",
        "capture_timestamp",
        "creation_timestamp",
        "frame_id",
        "device_name",
        "detection_results",
        "frame_ids",
        "capture_timestamps",
    ]
    assert document["data_type"] == "msight_core.data.video.VideoData"
    assert document["frame_ids"] == [7001, 7002]
    assert document["capture_timestamps"] == [1764590400.3, 1764590409.9]
    assert document["capture_timestamp"] == 1764590400.3 and document["frame_id"] == 7001
    assert "video" not in document
    assert json.loads(metadata_object("msight", dumper_json(), b"ignored")) == document
    assert metadata_object("utc", dumper_json(), b"as on disk") == b"as on disk"


def test_a_taken_key_gets_a_content_tag_before_the_extension() -> None:
    keys = SegmentKeys("a/1_2.mp4", "a/1_2.json").disambiguated("0123abcd")
    assert keys == SegmentKeys("a/1_2-0123abcd.mp4", "a/1_2-0123abcd.json")
