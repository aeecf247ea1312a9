"""Entry point of a node process started by the daemon: ``python -m msightd.cli.child '<json>'``.

The JSON carries the node's kind, its options (the validated config, as a dict) and host settings.
It is rebuilt through the same :func:`build_options` as everything else: a child trusts nothing.
"""

from __future__ import annotations

import json
import logging
import sys

from msightd.config import ConfigFileError, build_options
from msightd.nodes import NODE_KINDS
from msightd.nodes.host import HostOptions, run_node


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        payload = json.loads(args[0])
        kind = NODE_KINDS[payload["kind"]]
        options = build_options(kind.config_class, payload["options"], f"node {payload['options'].get('name')!r}")
    except (IndexError, KeyError, ValueError, ConfigFileError) as exc:
        print(f"msightd child: invalid node description: {exc}", file=sys.stderr)
        return 2
    host = HostOptions(**payload["host"], frame_log_level=logging.DEBUG)
    return run_node(kind.name, options, host)


if __name__ == "__main__":
    sys.exit(main())
