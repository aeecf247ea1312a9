"""Launch flags come from the option definitions: every flag's default, choices and help are its option's."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

import pytest

from msightd.cli import launch
from msightd.nodes.kinds import NODE_KINDS
from msightd.protocol import HostSettings


def actions(kind: str) -> dict[str, argparse.Action]:
    parser = launch.build_parser(kind)
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "version")}


def owner(kind: str, dest: str) -> tuple[type[Any], str]:
    if dest.startswith("host:"):
        return HostSettings, dest.removeprefix("host:")
    return NODE_KINDS[kind].options_class, dest


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_every_flag_is_its_option(kind: str) -> None:
    """Flag strings, required-ness, choices, default shown in help and help text all come from the field."""
    for dest, action in actions(kind).items():
        cls, name = owner(kind, dest)
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        annotation = typing.get_type_hints(cls)[name]
        assert tuple(action.option_strings) == launch.flags_of(field)
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        assert action.required == required, dest
        # defaults live in the dataclass, so only given flags are validated; a command's own default
        # (launch_default) counts as given
        assert action.default == field.metadata.get("launch_default"), dest
        assert action.help is not None and action.help.startswith(field.metadata["help"])
        shown = field.metadata.get("launch_default", field.default)
        if not required and shown not in (None, False):
            assert f"(default {shown})" in action.help, dest
        expected = field.metadata.get("choices") or (
            typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None
        )
        assert (tuple(action.choices) if action.choices is not None else None) == (
            tuple(expected) if expected is not None else None
        ), dest


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_every_launchable_option_has_a_flag(kind: str) -> None:
    dests = set(actions(kind))
    for field in launch.launch_fields(NODE_KINDS[kind].options_class):
        assert field.name in dests
    hidden = {f.name for f in dataclasses.fields(NODE_KINDS[kind].options_class)} - dests
    for name in hidden:
        field = {f.name: f for f in dataclasses.fields(NODE_KINDS[kind].options_class)}[name]
        assert field.metadata.get("launch") is False, f"{name} has neither a flag nor launch=False"


def test_msight_short_flags_are_kept() -> None:
    def flags(kind: str) -> set[str]:
        return {s for action in actions(kind).values() for s in action.option_strings}

    assert {"-n", "-st", "-pt", "--fps", "--buffer-size", "--overlap-size", "--codec"} <= flags(
        "image_to_video_aggregator"
    )
    assert {"-n", "-u", "-pt", "--sensor-name", "--rtsp-transport", "-r"} <= flags("rtsp")
    assert {"-n", "-st", "--save-dir", "-sd"} <= flags("video_local_dumper")


def test_an_option_that_may_be_text_takes_its_flag_as_text() -> None:
    """``retain_max_size: str | int | None``: "500GB" and "1000000" both reach the option's own parser."""
    parser = launch.build_parser("video_local_dumper")
    base = ["-n", "d", "-st", "segs", "--save-dir", "v"]
    args = parser.parse_args([*base, "--retain-max-size", "500GB", "--min-free-space", "10%", "--retain-days", "1.5"])
    assert (args.retain_max_size, args.min_free_space, args.retain_days) == ("500GB", "10%", 1.5)
    assert parser.parse_args([*base, "--retain-max-size", "1000000"]).retain_max_size == "1000000"
