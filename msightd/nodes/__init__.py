"""The node types msightd can run. A new node type is one module plus one line in :data:`NODE_KINDS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msightd.nodes.aggregator import AggregatorConfig, ImageToVideoAggregatorNode
from msightd.nodes.dumper import DumperConfig, VideoLocalDumperNode
from msightd.nodes.rtsp import RtspSourceConfig, RtspSourceNode


@dataclass(frozen=True)
class NodeKind:
    """A node type: its config class, its implementation, and where it sits in the pipeline.

    ``stage`` orders shutdown (lower stops first: sources before the nodes that drain them) and start-up
    (higher starts first, so consumers are subscribed before producers publish).
    """

    name: str
    config_class: type[Any]
    node_class: type[Any]
    stage: int
    publishes: str | None
    subscribes: str | None
    #: What travels on the published / subscribed topic: "frames" or "segments" (sets stream defaults).
    publishes_payload: str | None = None
    subscribes_payload: str | None = None

    def published_topic(self, options: Any) -> str | None:
        return getattr(options, self.publishes) if self.publishes else None

    def subscribed_topic(self, options: Any) -> str | None:
        return getattr(options, self.subscribes) if self.subscribes else None

    def topics(self, options: Any) -> dict[str, str]:
        """The node's topics and what they carry (``frames`` / ``segments``)."""
        found = {}
        if self.publishes:
            found[getattr(options, self.publishes)] = self.publishes_payload or "frames"
        if self.subscribes:
            found[getattr(options, self.subscribes)] = self.subscribes_payload or "frames"
        return found


NODE_KINDS: dict[str, NodeKind] = {
    kind.name: kind
    for kind in (
        NodeKind("rtsp", RtspSourceConfig, RtspSourceNode, stage=0, publishes="publish_topic", subscribes=None,
                 publishes_payload="frames"),
        NodeKind("image_to_video_aggregator", AggregatorConfig, ImageToVideoAggregatorNode, stage=1,
                 publishes="publish_topic", subscribes="subscribe_topic",
                 publishes_payload="segments", subscribes_payload="frames"),
        NodeKind("video_local_dumper", DumperConfig, VideoLocalDumperNode, stage=2, publishes=None,
                 subscribes="subscribe_topic", subscribes_payload="segments"),
    )
}  # fmt: skip
