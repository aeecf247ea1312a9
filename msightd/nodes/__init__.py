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

    def published_topic(self, options: Any) -> str | None:
        return getattr(options, self.publishes) if self.publishes else None

    def subscribed_topic(self, options: Any) -> str | None:
        return getattr(options, self.subscribes) if self.subscribes else None


NODE_KINDS: dict[str, NodeKind] = {
    kind.name: kind
    for kind in (
        NodeKind("rtsp", RtspSourceConfig, RtspSourceNode, 0, "publish_topic", None),
        NodeKind(
            "image_to_video_aggregator",
            AggregatorConfig,
            ImageToVideoAggregatorNode,
            1,
            "publish_topic",
            "subscribe_topic",
        ),
        NodeKind("video_local_dumper", DumperConfig, VideoLocalDumperNode, 2, None, "subscribe_topic"),
    )
}
