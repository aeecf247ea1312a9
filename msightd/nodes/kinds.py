"""The node kinds msightd can run. A new kind is one module, one options class and one line in :data:`NODE_KINDS`.

The registry names each implementation by import path and imports it only in the process that runs the node
(:meth:`NodeKind.load`), so the daemon and ``msightd check`` never load the media stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from msightd.nodes.options import AggregatorOptions, DumperOptions, RtspSourceOptions, UploaderOptions

Payload = Literal["frames", "segments"]


@dataclass(frozen=True)
class NodeKind:
    """A node type: its options class, its implementation, and where it sits in the pipeline.

    ``stage`` orders shutdown (lower stops first: sources before the nodes that drain them) and start-up
    (higher starts first, so consumers are subscribed before producers publish).
    """

    name: str
    options_class: type[Any]
    implementation: str  # "module:Class", imported by the node's own process only
    stage: int
    #: The option naming the topic it publishes / subscribes to, and what travels there.
    publishes: tuple[str, Payload] | None = None
    subscribes: tuple[str, Payload] | None = None
    #: An optional second published topic (an option that may be empty), e.g. a camera's packet_topic.
    also_publishes: tuple[str, Payload] | None = None
    #: The ``msight_launch_*`` command that runs it ad hoc, and that command's description.
    launch_command: str = ""
    description: str = ""

    def load(self) -> type[Any]:
        module_name, _, class_name = self.implementation.partition(":")
        node_class: type[Any] = getattr(importlib.import_module(module_name), class_name)
        return node_class

    def published_topic(self, options: Any) -> str | None:
        return getattr(options, self.publishes[0]) if self.publishes else None

    def published_topics(self, options: Any) -> set[str]:
        ends = (self.publishes, self.also_publishes)
        return {topic for end in ends if end is not None and (topic := getattr(options, end[0]))}

    def subscribed_topic(self, options: Any) -> str | None:
        return getattr(options, self.subscribes[0]) if self.subscribes else None

    def topics(self, options: Any) -> dict[str, Payload]:
        """The node's topics and what they carry."""
        found: dict[str, Payload] = {}
        for end in (self.publishes, self.subscribes, self.also_publishes):
            if end is not None and getattr(options, end[0]):  # an uploader of a save dir has none
                found[getattr(options, end[0])] = end[1]
        overrides = getattr(options, "topic_payloads", None)  # e.g. a camera that records: segment notices
        if overrides is not None:
            found.update(overrides())
        return found


NODE_KINDS: dict[str, NodeKind] = {
    kind.name: kind
    for kind in (
        NodeKind("rtsp", RtspSourceOptions, "msightd.nodes.rtsp:RtspSourceNode", stage=0,
                 publishes=("publish_topic", "frames"), also_publishes=("packet_topic", "frames"),
                 launch_command="msight_launch_rtsp",
                 description="Read an RTSP camera (or a video file) and publish its frames."),
        NodeKind("image_to_video_aggregator", AggregatorOptions,
                 "msightd.nodes.aggregator:ImageToVideoAggregatorNode", stage=1,
                 publishes=("publish_topic", "segments"), subscribes=("subscribe_topic", "frames"),
                 launch_command="msight_launch_image_to_video_aggregator",
                 description="Buffer frames per sensor and publish each buffer as an MP4 segment."),
        NodeKind("video_local_dumper", DumperOptions, "msightd.nodes.dumper:VideoLocalDumperNode", stage=2,
                 subscribes=("subscribe_topic", "segments"), launch_command="msight_launch_video_local_dumper",
                 description="Write received video segments as MP4 + JSON files."),
        NodeKind("video_s3_uploader", UploaderOptions, "msightd.nodes.uploader:VideoS3UploaderNode", stage=2,
                 subscribes=("subscribe_topic", "segments"), launch_command="msight_launch_aws_video_pusher",
                 description="Upload video segments to AWS S3 or any S3-compatible store, durably: received "
                 "segments are spooled on disk first and deleted only once verified in the store. Credentials "
                 "come the boto3 way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, shared files, "
                 "instance roles), never as flags."),
    )
}  # fmt: skip
