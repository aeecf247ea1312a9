"""Checks across nodes of one config file: problems that refuse the file, warnings that travel with it."""

from __future__ import annotations

from pathlib import Path

from msightd.config.model import NodeSpec
from msightd.nodes.kinds import NODE_KINDS
from msightd.nodes.options import SENSOR_QUEUE_FRAMES


def topic_warnings(nodes: list[NodeSpec], where: str) -> list[str]:
    """Subscribed topics that no node in the file publishes (fine if an outside producer does)."""
    published = {topic for n in nodes for topic in NODE_KINDS[n.kind].published_topics(n.options)}
    warnings = []
    for node in nodes:
        topic = NODE_KINDS[node.kind].subscribed_topic(node.options)
        if topic is not None and topic not in published:
            warnings.append(
                f"{where}: node {node.name!r}: subscribe_topic {topic!r} is published by no node in this file "
                "(fine only if another program publishes it)"
            )
        buffer_size = getattr(node.options, "buffer_size", 0)
        for name, settings in node.topics:
            if settings.transport == "stream" and name == topic and settings.maxlen < 2 * buffer_size:
                warnings.append(
                    f"{where}: topic {name!r}: maxlen {settings.maxlen} is under twice node {node.name!r}'s "
                    f"buffer_size ({buffer_size}); unacknowledged frames may be trimmed before they are encoded"
                )
    return warnings + _frame_ring_warnings(nodes, where) + _recording_camera_warnings(nodes, where)


def shared_sensor_problems(nodes: list[NodeSpec], where: str) -> list[str]:
    """Two sources publishing one sensor name to one topic: consumers would merge both cameras into one
    sensor's segments, and with shared-memory frames both would write the same ring."""
    owners: dict[tuple[str, str], str] = {}
    problems = []
    for node in nodes:
        sensor = getattr(node.options, "sensor_name", None)
        if not isinstance(sensor, str):
            continue
        key = (node.options.publish_topic, sensor)
        if key in owners:
            problems.append(
                f"{where}: node {node.name!r}: sensor_name {sensor!r} is already published to {key[0]!r} by node "
                f"{owners[key]!r}; give every camera its own sensor_name"
            )
        owners.setdefault(key, node.name)
    return problems


def _frame_ring_warnings(nodes: list[NodeSpec], where: str) -> list[str]:
    """Shared-memory producers whose ring is smaller than what a consumer of their topic holds (frames
    would go as JPEG all the time), or whose consumers look in another directory (every frame lost)."""
    warnings = []
    for producer in nodes:
        options = producer.options
        if getattr(options, "frame_encoding", None) != "shm":
            continue
        for consumer in nodes:
            if NODE_KINDS[consumer.kind].subscribed_topic(consumer.options) != options.publish_topic:
                continue
            held = getattr(consumer.options, "buffer_size", 0) + SENSOR_QUEUE_FRAMES
            if options.shm_slots <= held:
                warnings.append(
                    f"{where}: node {producer.name!r}: shm_slots {options.shm_slots} is not above what node "
                    f"{consumer.name!r} holds ({held} frames); most frames would go as JPEG"
                )
            if getattr(consumer.options, "shm_dir", options.shm_dir) != options.shm_dir:
                warnings.append(
                    f"{where}: node {producer.name!r} writes frames to {options.shm_dir} but node "
                    f"{consumer.name!r} reads them from {consumer.options.shm_dir}; give both the same shm_dir"
                )
    return warnings


def _recording_camera_warnings(nodes: list[NodeSpec], where: str) -> list[str]:
    """Camera nodes that record themselves (``record_dir``) whose notices no dumper of that directory
    reads (the segments are on disk but not catalogued: no retention, exports or uploads for them), or that
    another kind of node reads expecting packets or segments."""
    warnings = []
    for camera in nodes:
        record_dir = getattr(camera.options, "record_dir", "")
        if not record_dir:
            continue
        topic = camera.options.packet_destination
        readers = [n for n in nodes if NODE_KINDS[n.kind].subscribed_topic(n.options) == topic]
        if not any(_same_dir(getattr(n.options, "save_dir", ""), record_dir) for n in readers):
            warnings.append(
                f"{where}: node {camera.name!r} records into {record_dir} and announces its segments on {topic!r}, "
                "but no video_local_dumper with that save_dir subscribes to it: they would not be catalogued "
                "(no retention, exports or uploads)"
            )
        for reader in readers:
            if reader.kind != "video_local_dumper" or not _same_dir(reader.options.save_dir, record_dir):
                warnings.append(
                    f"{where}: node {reader.name!r} subscribes to {topic!r}, which carries only the notices of "
                    f"segments node {camera.name!r} stores in {record_dir}; only the dumper of that directory "
                    "can use them"
                )
    return warnings


def _same_dir(first: str, second: str) -> bool:
    return bool(first) and Path(first).expanduser().absolute() == Path(second).expanduser().absolute()
