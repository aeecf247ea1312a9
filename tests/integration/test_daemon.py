"""``msightd run`` with real child processes, a real embedded redis-server and files decoded back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from msightd.media.sample import write_sample_video
from testbed.ports import free_port, free_ports
from testbed.waiting import wait_for
from tests.integration.daemon import pid_alive, pipeline_toml, running_daemon, short_tempdir
from tests.integration.pipeline import segments_on_disk
from tests.support.processes import Proc, command
from tests.support.video import probe_video


def test_sigterm_stops_everything_in_order_and_writes_the_partial_segment(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    config = lambda save_dir, port: pipeline_toml(sample_video, save_dir, port, buffer_size=1000)  # noqa: E731
    with running_daemon(config, tmp_path, processes) as daemon:
        runtime_dir = daemon.runtime_dir
        socket = runtime_dir / "redis.sock"
        assert socket.exists(), "embedded redis-server listens on a unix socket in the runtime dir"
        children = daemon.child_pids()
        assert len(children) == 4  # three nodes and the embedded redis-server
        wait_for(
            lambda: any(e.get("frames_published", 0) >= 15 for e in daemon.proc.has_event("node_summary")),
            60,
            "frames to flow",
        )
        daemon.proc.process.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0
        # the 1000-frame buffer never filled: the only segment is the partial one flushed on stop
        segments = segments_on_disk(tmp_path / "videos")
        assert len(segments) == 1
        video, meta = segments[0]
        assert 15 <= meta["frame_count"] < 1000 and probe_video(video).frame_count == meta["frame_count"]
        assert not any(pid_alive(pid) for pid in children)
        assert not socket.exists() and not (runtime_dir / "control.sock").exists()
        stopped = [e["node_name"] for e in daemon.proc.has_event("node_stopped")]
        assert stopped == ["rtsp_node", "image_aggregator", "video_dumper"], "sources stop first"


def test_killed_node_is_restarted_and_segments_keep_coming(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p), tmp_path, processes) as daemon:
        save_dir = tmp_path / "videos"
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 1, 60, "a first segment")
        old = daemon.nodes()["image_aggregator"]
        os.kill(old["pid"], signal.SIGKILL)
        wait_for(
            lambda: (n := daemon.nodes()["image_aggregator"])["state"] == "running" and n["pid"] != old["pid"],
            60,
            "the aggregator to be restarted",
        )
        node = daemon.nodes()["image_aggregator"]
        assert node["restarts"] == 1 and node["last_exit"] == "killed by SIGKILL"
        count = len(segments_on_disk(save_dir))
        wait_for(lambda: len(segments_on_disk(save_dir)) >= count + 2, 60, "segments after the restart")


def test_node_that_keeps_exiting_hits_the_start_limit_while_others_run(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    short_clip = write_sample_video(tmp_path / "short.mp4", frame_count=3)
    flaky = f"""
[[nodes]]
name = "flaky"
kind = "rtsp"
url = "{short_clip}"
publish_topic = "other_images"
sensor_name = "flaky"
restart_delay = 0.1
start_limit_burst = 3
start_limit_interval = 120
"""
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p, extra=flaky), tmp_path, processes) as daemon:
        wait_for(lambda: daemon.nodes()["flaky"]["state"] == "failed", 90, "the flaky node to be marked failed")
        flaky_node = daemon.nodes()["flaky"]
        assert flaky_node["pid"] is None and "start limit" in flaky_node["last_exit"]
        assert daemon.proc.has_event("node_failed")
        count = len(segments_on_disk(tmp_path / "videos"))
        wait_for(lambda: len(segments_on_disk(tmp_path / "videos")) >= count + 2, 60, "the others to keep producing")
        assert {n["state"] for name, n in daemon.nodes().items() if name != "flaky"} == {"running"}
        # unhealthy for cron/monit/Nagios: exit 1, and the problem named
        shown = daemon.status_command()
        assert shown.returncode == 1, shown.stdout
        assert "unhealthy: flaky: failed: node is failed: start limit hit" in shown.stdout
        problems = daemon.status()["health"]["problems"]
        assert [(p["node"], p["problem"]) for p in problems] == [("flaky", "failed")]


def test_sighup_restarts_only_the_changed_node(sample_video: Path, tmp_path: Path, processes: list[Proc]) -> None:
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p), tmp_path, processes) as daemon:
        before = {name: node["pid"] for name, node in daemon.nodes().items()}
        daemon.config_path.write_text(daemon.config_path.read_text().replace("buffer_size = 10", "buffer_size = 12"))
        daemon.proc.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.proc.has_event("reloaded"), 60, "the reload")
        wait_for(lambda: daemon.nodes()["image_aggregator"]["state"] == "running", 60, "the changed node to run")
        after = {name: node["pid"] for name, node in daemon.nodes().items()}
        assert after["image_aggregator"] != before["image_aggregator"]
        assert after["rtsp_node"] == before["rtsp_node"] and after["video_dumper"] == before["video_dumper"]
        wait_for(
            lambda: any(m["frame_count"] == 12 for _, m in segments_on_disk(tmp_path / "videos")),
            60,
            "a segment with the new buffer size",
        )

        daemon.config_path.write_text("this is not toml [")
        daemon.proc.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.proc.has_event("reload_refused"), 30, "the bad file to be refused")
        assert {name: node["pid"] for name, node in daemon.nodes().items()} == after


def test_killing_the_daemon_leaves_no_child_behind(sample_video: Path, tmp_path: Path, processes: list[Proc]) -> None:
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p), tmp_path, processes) as daemon:
        children = daemon.child_pids()
        assert len(children) == 4
        daemon.proc.process.kill()
        daemon.proc.wait(10)
        wait_for(lambda: not any(pid_alive(pid) for pid in children), 15, "every child to exit after the daemon died")


def test_status_lists_every_node(sample_video: Path, tmp_path: Path, processes: list[Proc]) -> None:
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p), tmp_path, processes) as daemon:
        result = subprocess.run(
            [command("msightd"), "status", "--runtime-dir", str(daemon.runtime_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0
        lines = result.stdout.splitlines()
        assert lines[1].split()[:4] == ["NODE", "KIND", "STATE", "PID"]
        rows = {line.split()[0]: line.split() for line in lines[2:]}
        assert set(rows) == {"rtsp_node", "image_aggregator", "video_dumper"}
        assert all(row[2] == "running" and row[3].isdigit() for row in rows.values())


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [command("msightd"), "status", "--runtime-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 3 and "no daemon answers" in result.stderr


def test_bad_config_is_refused_with_exit_2(tmp_path: Path) -> None:
    cases = {
        "not toml [": "not valid TOML",
        '[[nodes]]\nname = "a"\nkind = "nope"\n': "key 'kind' must be one of",
        '[[nodes]]\nname = "a"\nkind = "video_local_dumper"\nsubscribe_topic = "s"\nsave_dir = 5\n': "key 'save_dir'",
        '[[nodes]]\nname = "a"\nkind = "image_to_video_aggregator"\nsubscribe_topic = "s"\npublish_topic = "t"\n'
        "buffer_size = 5\noverlap_size = 9\n": "overlap_size must be",
    }
    runtime_dir = short_tempdir()
    for text, expected in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        for verb in (["run", "--runtime-dir", str(runtime_dir)], ["check"]):
            result = subprocess.run(
                [command("msightd"), verb[0], "-c", str(path), *verb[1:]], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 2, (verb, text, result.stderr)
            assert expected in result.stderr and str(path) in result.stderr, result.stderr
    assert not (runtime_dir / "redis.sock").exists()


def test_missing_redis_server_binary_fails_with_the_install_hint(sample_video: Path, tmp_path: Path) -> None:
    path = tmp_path / "msightd.toml"
    path.write_text(pipeline_toml(sample_video, tmp_path / "videos", 1))
    bin_dir = Path(command("msightd")).parent
    result = subprocess.run(
        [command("msightd"), "run", "-c", str(path), "--runtime-dir", str(short_tempdir())],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert result.returncode == 2
    assert "apt install redis-server" in result.stderr


def test_systemd_notify_ready_and_watchdog(sample_video: Path, tmp_path: Path) -> None:
    """Type=notify: READY=1 once every node is up, WATCHDOG=1 from the loop, STOPPING=1 on stop."""
    notify_path = short_tempdir() / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(60)
    config = tmp_path / "msightd.toml"
    config.write_text(pipeline_toml(sample_video, tmp_path / "videos", free_port()))
    daemon = subprocess.Popen(
        [command("msightd"), "run", "-c", str(config), "--runtime-dir", str(short_tempdir()), "--log-format", "json"],
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        messages: list[str] = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(listener.recv(4096).decode())
        assert "STATUS=3/3 nodes running" in messages[-1]
        while not any(m == "WATCHDOG=1" for m in messages):
            messages.append(listener.recv(4096).decode())
        daemon.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(4096).decode())
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        listener.close()


def test_embedded_redis_that_dies_comes_back_with_what_it_held(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    """Segments wait in the broker (the dumper is frozen) when redis-server is SIGKILLed: the daemon starts
    it again from its append-only file, and every segment the aggregator published reaches the disk."""
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p), tmp_path, processes) as daemon:
        save_dir = tmp_path / "videos"
        wait_for(lambda: segments_on_disk(save_dir), 60, "a first segment")
        dumper = daemon.nodes()["video_dumper"]["pid"]
        os.kill(dumper, signal.SIGSTOP)
        try:
            waiting = len(daemon.proc.has_event("segment_published")) + 2
            wait_for(lambda: len(daemon.proc.has_event("segment_published")) >= waiting, 60, "segments to wait")
            names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in daemon.child_pids()}
            (broker_pid,) = [pid for pid, name in names.items() if name.startswith("redis-server")]
            os.kill(broker_pid, signal.SIGKILL)
            wait_for(lambda: daemon.proc.has_event("embedded_redis_restarted"), 30, "the broker to be restarted")
        finally:
            os.kill(dumper, signal.SIGCONT)
        count = len(segments_on_disk(save_dir))
        wait_for(lambda: len(segments_on_disk(save_dir)) >= count + 2, 90, "segments after the broker restart")
        assert {n["state"] for n in daemon.nodes().values()} == {"running"}
        daemon.proc.process.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0
        published = {e["first_frame_id"] for e in daemon.proc.has_event("segment_published")}
        written = {meta["segment_frame_id"] for _, meta in segments_on_disk(save_dir)}
        assert published <= written, f"{len(published - written)} published segments never reached the disk"
        assert not daemon.proc.has_event("bus_group_recreated"), "the broker came back with its streams"


def test_demo_runs_the_seed_pipeline_with_nothing_set_up(tmp_path: Path, processes: list[Proc]) -> None:
    """The README's one command for the main job: ``msightd demo`` brings its own Redis and camera, and
    runs the shipped settings (frames through shared memory, decoded straight to YUV)."""
    save_dir = tmp_path / "received_videos"
    metrics_port, web_port = free_ports(2)
    demo = Proc(
        [
            command("msightd"),
            "demo",
            "--duration", "16",
            "--save-dir", str(save_dir),
            "--runtime-dir", str(short_tempdir()),
            "--metrics-port", str(metrics_port),
            "--web-port", str(web_port),
        ],
        tmp_path / "demo.log",
    )  # fmt: skip
    processes.append(demo)
    assert demo.wait(120) == 0, demo.text()[-3000:]
    segments = segments_on_disk(save_dir)
    assert segments and segments[0][1]["frame_count"] == 100, demo.text()[-3000:]
    for video, meta in segments:
        info = probe_video(video)
        assert (info.frame_count, info.width, info.height, info.codec) == (meta["frame_count"], 1280, 720, "h264")
    assert f"msightd demo: {len(segments)} segments in {save_dir}" in demo.text()
    assert demo.has_event("frame_ring_opened"), "the demo's frames go through shared memory"
    assert not demo.has_event("frame_ring_unusable") and not demo.has_event("frame_sent_inline")
