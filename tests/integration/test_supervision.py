"""What the README promises about supervision, checked on ``msightd run`` from outside: restart policies,
backoff, the grace period, reloads, the control socket, a broker that is down at start.

Nodes are real node kinds in small configs; a node "fails" the way real ones do: it is killed, its clip
ends, or its configuration is refused (exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from msightd.media.sample import write_sample_video
from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.integration.daemon import Daemon, pid_alive, pipeline_toml, running_daemon
from tests.integration.pipeline import segments_on_disk
from tests.support.processes import Proc, command
from tests.support.redis import TcpRedisServer


def config(*nodes: str, grace_period_s: float = 15) -> str:
    # no listening ports: tests run side by side
    head = f"[metrics]\nenabled = false\n[web]\nenabled = false\n[daemon]\ngrace_period_s = {grace_period_s}\n"
    return head + "".join(nodes)


def dumper(name: str, save_dir: Path, **policy: Any) -> str:
    return f'[[nodes]]\nname = "{name}"\nkind = "video_local_dumper"\nsubscribe_topic = "{name}"\n' + (
        f'save_dir = "{save_dir}"\n{toml_lines(policy)}'
    )


def camera(name: str, video: Path, **options: Any) -> str:
    return f'[[nodes]]\nname = "{name}"\nkind = "rtsp"\nurl = "{video}"\npublish_topic = "{name}"\n' + (
        f'sensor_name = "{name}"\n{toml_lines(options)}'
    )


def toml_lines(values: dict[str, Any]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def states(daemon: Daemon) -> dict[str, str]:
    return {name: node["state"] for name, node in daemon.nodes().items()}


def events_of(daemon: Daemon, event: str, node: str) -> list[dict[str, Any]]:
    return [e for e in daemon.proc.has_event(event) if e.get("node_name") == node or e.get("node") == node]


def test_a_node_that_does_not_stop_is_killed_when_the_grace_period_ends(tmp_path: Path, processes: list[Proc]) -> None:
    # a dumper takes ~1 s to drain and exit: "polite" gets the time it needs, "stuck" never exits
    text = config(dumper("stuck", tmp_path / "a"), dumper("polite", tmp_path / "b"), grace_period_s=4)
    with running_daemon(lambda _d, _p: text, tmp_path, processes) as daemon:
        nodes = daemon.nodes()
        os.kill(nodes["stuck"]["pid"], signal.SIGSTOP)  # it cannot act on SIGTERM any more
        daemon.proc.process.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    killed = daemon.proc.has_event("node_killed")
    assert [e["node_name"] for e in killed] == ["stuck"] and "4 s grace period" in killed[0]["msg"]
    stopped = {e["node_name"]: e["exit"] for e in daemon.proc.has_event("node_stopped")}
    assert stopped == {"stuck": "killed by SIGKILL", "polite": "exited with code 0"}
    assert not pid_alive(nodes["stuck"]["pid"]) and not pid_alive(nodes["polite"]["pid"])


def test_restart_policies_on_failure_and_never(sample_video: Path, tmp_path: Path, processes: list[Proc]) -> None:
    clip = write_sample_video(tmp_path / "short.mp4", frame_count=3)
    text = config(
        camera("ends_cleanly", clip, restart="on-failure"),
        dumper("killed_on_failure", tmp_path / "a", restart="on-failure"),
        dumper("killed_never", tmp_path / "b", restart="never"),
    )
    with running_daemon(lambda _d, _p: text, tmp_path, processes) as daemon:
        before = daemon.nodes()
        for name in ("killed_on_failure", "killed_never"):
            os.kill(before[name]["pid"], signal.SIGKILL)
        expected = {"ends_cleanly": "exited", "killed_on_failure": "running", "killed_never": "exited"}
        wait_for(lambda: states(daemon) == expected, 30, "the policies to be applied")
        after = daemon.nodes()
        assert (after["ends_cleanly"]["restarts"], after["ends_cleanly"]["last_exit"]) == (0, "exited with code 0")
        assert after["killed_on_failure"]["restarts"] == 1
        assert after["killed_on_failure"]["pid"] != before["killed_on_failure"]["pid"]
        assert (after["killed_never"]["restarts"], after["killed_never"]["last_exit"]) == (0, "killed by SIGKILL")
        time.sleep(2)  # nothing comes back later either
        assert states(daemon) == expected


def test_restart_delay_doubles_up_to_its_cap(tmp_path: Path, processes: list[Proc]) -> None:
    policy = {"restart_delay": 0.2, "restart_delay_max": 0.8, "start_limit_burst": 10}
    text = config(dumper("victim", tmp_path / "v", **policy))
    with running_daemon(lambda _d, _p: text, tmp_path, processes) as daemon:
        for kills in range(1, 6):  # kill each start at once: consecutive failures, never a recovery
            starts = wait_for(lambda k=kills: events_of(daemon, "node_starting", "victim")[k - 1 :], 30, "a start")
            os.kill(starts[0]["pid"], signal.SIGKILL)
            wait_for(lambda k=kills: len(events_of(daemon, "node_died", "victim")) >= k, 30, "the death to be seen")
        delays = [e["restart_in_s"] for e in events_of(daemon, "node_died", "victim")]
    assert delays == [0.2, 0.4, 0.8, 0.8, 0.8]


def test_refused_config_fails_at_once_and_a_reload_retries_it_and_starts_a_new_node(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    late_clip = tmp_path / "late.mp4"  # does not exist yet: the camera node exits 2
    text = config(camera("late", late_clip, loop=True), dumper("steady", tmp_path / "s"))
    with running_daemon(lambda _d, _p: text, tmp_path, processes) as daemon:
        wait_for(lambda: daemon.nodes()["late"]["state"] == "failed", 30, "the refused node to be marked failed")
        late = daemon.nodes()["late"]
        assert late["restarts"] == 0 and "refused its configuration" in late["last_exit"]
        assert len(events_of(daemon, "node_starting", "late")) == 1, "exit 2 is never restarted"
        steady = daemon.nodes()["steady"]["pid"]

        shutil.copy(sample_video, late_clip)
        daemon.config_path.write_text(text + dumper("added", tmp_path / "n"))
        daemon.proc.process.send_signal(signal.SIGHUP)
        reloaded = wait_for(lambda: daemon.proc.has_event("reloaded"), 30, "the reload")
        assert (reloaded[0]["added"], reloaded[0]["restarted_failed"]) == (["added"], ["late"])
        wait_for(
            lambda: (
                {name: n["state"] for name, n in daemon.nodes().items()}
                == {"late": "running", "steady": "running", "added": "running"}
            ),
            30,
            "the retried and the new node to run",
        )
        assert daemon.nodes()["steady"]["pid"] == steady, "an unchanged node keeps running"


def test_control_socket_is_private_and_a_second_daemon_is_refused(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    text = config(dumper("d", tmp_path / "d"))
    with running_daemon(lambda _d, _p: text, tmp_path, processes) as daemon:
        socket_path = daemon.runtime_dir / "control.sock"
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        pid = daemon.nodes()["d"]["pid"]
        second = subprocess.run(
            [command("msightd"), "run", "-c", str(daemon.config_path), "--runtime-dir", str(daemon.runtime_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "another msightd already runs with runtime directory" in second.stderr, second.stderr
        assert socket_path.exists() and daemon.nodes()["d"]["pid"] == pid, "the first daemon is untouched"


def test_a_broker_down_at_start_is_reported_once_per_node_and_nodes_keep_going(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    consumers = ("image_aggregator", "video_dumper")
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p, redis_url=url), tmp_path, processes) as daemon:
        time.sleep(4)  # ~40 frames wait in the camera node; consumers retry with backoff
        broker = TcpRedisServer(port=port)
        broker.start()
        try:
            wait_for(lambda: len(segments_on_disk(tmp_path / "videos")) >= 2, 60, "segments once the broker is up")
            nodes = daemon.nodes()
            daemon.proc.process.send_signal(signal.SIGTERM)  # stopped while the broker is up
            assert daemon.proc.wait(60) == 0
        finally:
            broker.kill()
    assert {name: (n["state"], n["restarts"]) for name, n in nodes.items()} == dict.fromkeys(nodes, ("running", 0))
    for name in ("rtsp_node", *consumers):
        assert len(events_of(daemon, "broker_unreachable", name)) == 1, name
    assert len(events_of(daemon, "publish_failed", "rtsp_node")) == 1
    for name in consumers:
        assert len(events_of(daemon, "bus_disconnected", name)) == 1, name
        assert len(events_of(daemon, "bus_reconnected", name)) == 1, name
