"""The ``msight_launch_*`` commands: one node, ad hoc, with MSight's flags.

Every flag is generated from a dataclass field (a node kind's options in :mod:`msightd.nodes.options`, the
common ones from :class:`~msightd.protocol.HostSettings`): its name, default, choices and help are written
once, there. Values are then built by the same :func:`~msightd.config.schema.build_options` as the daemon's
TOML, so both accept the same values with the same messages (keys spelled as flags here).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from msightd import __version__
from msightd.config.schema import ConfigFileError, build_options
from msightd.host import run_node
from msightd.nodes.kinds import NODE_KINDS
from msightd.protocol import HostSettings

#: Which dataclass a parsed flag belongs to, by its argparse ``dest``.
_HOST = "host:"


def flags_of(field: dataclasses.Field[Any]) -> tuple[str, ...]:
    """A field's flags: its ``flags`` metadata, else ``--`` and its name in kebab-case."""
    return tuple(field.metadata.get("flags") or ("--" + field.name.replace("_", "-"),))


def launch_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` that are launch flags (TOML-only ones say ``launch=False``)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.metadata.get("launch", True)]


def _choices(field: dataclasses.Field[Any], annotation: Any) -> tuple[Any, ...] | None:
    if "choices" in field.metadata:
        return tuple(field.metadata["choices"])
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field[Any], annotation: Any, dest: str) -> None:
    """One flag from one field. Defaults stay out of argparse (None = not given) so that only given flags
    reach validation; the help shows the field's default."""
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    help_text = field.metadata["help"]
    launch_default = field.metadata.get("launch_default")  # the command's own default, given as if typed
    shown = launch_default if launch_default is not None else field.default
    if not required and shown not in (None, False):
        help_text += f" (default {shown})"
    if annotation is bool or set(typing.get_args(annotation)) == {bool, type(None)}:
        parser.add_argument(*flags_of(field), dest=dest, action="store_true", default=None, help=help_text)
        return
    value_type = {int: int, float: float}.get(annotation, str)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)  # a union with str takes the text as it is ("500GB", 1000)
        value_type = str if str in members else next((t for t in members if t in (int, float)), str)
    parser.add_argument(
        *flags_of(field),
        dest=dest,
        type=value_type,
        choices=_choices(field, annotation),
        required=required,
        default=launch_default,
        help=help_text,
    )


def build_parser(kind_name: str) -> argparse.ArgumentParser:
    kind = NODE_KINDS[kind_name]
    parser = argparse.ArgumentParser(prog=kind.launch_command, description=kind.description)
    hints = typing.get_type_hints(kind.options_class)
    for field in launch_fields(kind.options_class):
        _add_flag(parser, field, hints[field.name], field.name)
    host_hints = typing.get_type_hints(HostSettings)
    for field in launch_fields(HostSettings):
        _add_flag(parser, field, host_hints[field.name], _HOST + field.name)
    parser.add_argument("--version", action="version", version=f"msightd {__version__}")
    return parser


def _fail(prog: str, problems: Sequence[str]) -> NoReturn:
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    sys.exit(2)


def _as_flags(problem: str, cls: type[Any]) -> str:
    """Validation messages speak of keys (``'buffer_size'``); on the command line they are flags."""
    for field in dataclasses.fields(cls):
        problem = re.sub(rf"'?\b{field.name}\b'?", flags_of(field)[-1], problem)
    return problem.replace("invalid option: key ", "").replace("invalid option: ", "")


def _launch(kind_name: str, argv: Sequence[str] | None) -> NoReturn:
    parser = build_parser(kind_name)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    host_values = {k.removeprefix(_HOST): v for k, v in given.items() if k.startswith(_HOST)}
    node_values = {k: v for k, v in given.items() if not k.startswith(_HOST)}
    kind = NODE_KINDS[kind_name]
    problems: list[str] = []
    options = host = None
    try:
        options = build_options(kind.options_class, node_values, "invalid option")
    except ConfigFileError as exc:
        problems += [_as_flags(p, kind.options_class) for p in exc.problems]
    try:
        host = build_options(HostSettings, host_values, "invalid option")
    except ConfigFileError as exc:
        problems += [_as_flags(p, HostSettings) for p in exc.problems]
    if problems or options is None or host is None:
        _fail(parser.prog, problems)
    sys.exit(run_node(kind_name, options, host))


def launch_rtsp(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("rtsp", argv)


def launch_image_to_video_aggregator(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("image_to_video_aggregator", argv)


def launch_video_local_dumper(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("video_local_dumper", argv)


def launch_aws_video_pusher(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("video_s3_uploader", argv)
