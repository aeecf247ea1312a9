"""``msightd demo``'s pipeline: the seed tutorial's three nodes on a synthetic camera, with the shipped
settings of ``etc/msightd.toml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msightd.config.model import WebConfig


def demo_document(
    video: Path, save_dir: Path, metrics_port: int, shm_dir: Path, web_port: int = WebConfig().port
) -> dict[str, Any]:
    """The seed tutorial's pipeline on a synthetic camera, as a config document."""
    return {
        "metrics": {"port": metrics_port},
        "web": {"port": web_port},
        "logging": {"summary_interval_s": 10.0},
        "nodes": [
            {
                "name": "rtsp_node",
                "kind": "rtsp",
                "url": str(video),
                "loop": True,
                "publish_topic": "rtsp_images",
                "sensor_name": "test_camera",
                # as etc/msightd.toml: frames stay in shared memory, decoded straight to YUV
                "frame_encoding": "shm",
                "decoder": "pyav",
                "shm_dir": str(shm_dir),
            },
            {
                "name": "image_aggregator",
                "kind": "image_to_video_aggregator",
                "subscribe_topic": "rtsp_images",
                "publish_topic": "aggregated_video",
                "fps": 10.0,
                "buffer_size": 100,
                "overlap_size": 0,
                "shm_dir": str(shm_dir),
            },
            {
                "name": "video_dumper",
                "kind": "video_local_dumper",
                "subscribe_topic": "aggregated_video",
                "save_dir": str(save_dir),
            },
        ],
    }
