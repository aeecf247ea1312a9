from __future__ import annotations

import dataclasses

import pytest

from msightd.cli import launch
from msightd.nodes import NODE_KINDS

PARSERS = {
    "rtsp": launch._rtsp_parser,
    "image_to_video_aggregator": launch._aggregator_parser,
    "video_local_dumper": launch._dumper_parser,
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_every_flag_is_a_node_option_or_a_host_setting(kind: str) -> None:
    """Flags and config keys are one vocabulary: a flag with no option behind it would be refused at run time."""
    dests = {action.dest for action in PARSERS[kind]()._actions if action.dest not in ("help", "version")}
    options = {f.name for f in dataclasses.fields(NODE_KINDS[kind].config_class)}
    assert dests - set(launch._HOST_FIELDS) <= options


def test_msight_short_flags_are_kept() -> None:
    flags = {s for action in launch._aggregator_parser()._actions for s in action.option_strings}
    assert {"-n", "-st", "-pt", "--fps", "--buffer-size", "--overlap-size", "--codec"} <= flags
    flags = {s for action in launch._rtsp_parser()._actions for s in action.option_strings}
    assert {"-n", "-u", "-pt", "--sensor-name", "--rtsp-transport", "-r"} <= flags
    flags = {s for action in launch._dumper_parser()._actions for s in action.option_strings}
    assert {"-n", "-st", "--save-dir", "-sd"} <= flags
