"""What a run reports: the human table, the ``--repeat`` summary, and the settings and environment in the JSON.

The JSON is the record (``bench/results/latest.json``, compared across commits and machines), so it carries
the settings, the measured commit and the tool versions beside the figures; the table is a summary of it and
is computed only from it, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import REPO_ROOT
from bench.figures import fmt, rounded
from bench.floor import FFMPEG
from bench.pipeline import GRACE_PERIOD_S


def format_table(result: dict[str, Any]) -> str:
    """The human summary: per-node costs, totals, the floor and the headline ratio."""
    settings, pipeline, floor = result["settings"], result["pipeline"], result["floor"]
    clips = ", ".join(f"{Path(c['path']).name} {c['width']}x{c['height']}" for c in result["clips"])
    lines = [
        f"msightd benchmark: {settings['cameras']} camera(s) x {settings['duration_s']:g} s "
        f"(warm-up {settings['warmup_s']:g} s), transport {settings['transport']} "
        f"(broker persistence {settings['broker_persistence']}), "
        f"frames {settings['frame_encoding']}, h264 {settings['preset']} crf {settings['crf']}, "
        f"{settings['buffer_size']}-frame segments",
        f"clips: {clips}; {result['environment']['cpus']} CPUs",
        "",
        f"{'process':<18} {'kind':<11} {'CPU s/frame':>12} {'ms/frame':>9} {'cores':>6} {'RSS MB':>8} "
        f"{'PSS MB':>8} {'frames':>7}",
    ]
    for name, node in pipeline["nodes"].items():
        lines.append(
            f"{name:<18} {node['kind']:<11} {fmt(node['cpu_s_per_frame'], '.5f'):>12} "
            f"{fmt(node['ms_per_frame'], '.2f'):>9} {fmt(node['cores'], '.2f'):>6} {node['rss_max_mb']:>8.1f} "
            f"{node.get('pss_max_mb', 0.0):>8.1f} {node['frames']:>7.0f}"
        )
    total = pipeline["total_cpu_s_per_frame"]
    lines.append(
        f"{'TOTAL pipeline':<30} {fmt(total, '.5f'):>12} {fmt(total * 1000 if total else None, '.2f'):>9} "
        f"{fmt(pipeline['total_cores'], '.2f'):>6}"
    )
    if floor is not None:
        lines.append(
            f"{'FLOOR ffmpeg':<30} {fmt(floor['cpu_s_per_frame'], '.5f'):>12} {fmt(floor['ms_per_frame'], '.2f'):>9} "
            f"{fmt(floor['cores'], '.2f'):>6} {floor['rss_max_mb']:>8.1f} {'':>8} {floor['frames']:>7.0f}"
        )
        lines.append(f"ratio total/floor: {fmt(result['ratio_total_to_floor'], '.2f')}x")
    latency, later = pipeline["latency_s"], pipeline["latency_after_first_s"]
    restarts = sum(node["restarts"] for node in pipeline["nodes"].values())
    lines += [
        "",
        f"frames: published {pipeline['frames_published']}, in segments {pipeline['frames_in_segments']}, "
        f"dropped {pipeline['frames_dropped']}, duplicated {pipeline['frames_duplicated']} "
        f"(by {pipeline['accounting']}); node restarts {restarts}",
        backlog_line(pipeline),
        broker_line(pipeline),
        f"memory: peak PSS of the whole pipeline {pipeline.get('pss_total_mb', 0.0):.0f} MB, "
        f"{fmt(pipeline.get('pss_mb_per_camera'), '.1f')} MB per camera",
        f"capture-to-disk latency: p50 {fmt(latency['p50'], '.2f')} s, p99 {fmt(latency['p99'], '.2f')} s, "
        f"max {fmt(latency['max'], '.2f')} s ({latency['n']} full segments); without each camera's first: "
        f"p99 {fmt(later['p99'], '.2f')} s, max {fmt(later['max'], '.2f')} s; "
        f"mean encode {fmt(pipeline['encode_seconds_mean'], '.2f')} s",
        f"MB per segment: pipeline {fmt(pipeline['mb_per_segment'], '.2f')}"
        + (f", ffmpeg {fmt(floor['mb_per_segment'], '.2f')}" if floor is not None else ""),
    ]
    return "\n".join(lines)


def backlog_line(pipeline: dict[str, Any]) -> str:
    line = (
        f"at stop: {pipeline['backlog_at_stop_frames']} frames published but not yet on disk "
        f"({'OVERLOADED: ' if overloaded(pipeline) else ''}"
        f"keeping up means < {pipeline['backlog_limit_when_keeping_up']})"
    )
    if pipeline["nodes_killed_on_stop"]:
        killed = ", ".join(pipeline["nodes_killed_on_stop"])
        line += f"; SIGKILLed after the {GRACE_PERIOD_S:g} s grace period: {killed}"
    return line


def broker_line(pipeline: dict[str, Any]) -> str:
    held = pipeline["broker_memory"]
    entries = ", ".join(f"{topic} {count}" for topic, count in held["stream_entries"].items())
    aof = held["append_only_file_mb"]
    return (
        f"broker at the end: used_memory {held['used_memory_mb']:.1f} MB, RSS {held['rss_mb']:.1f} MB "
        f"(peak {pipeline['nodes']['broker']['rss_max_mb']:.1f}); entries held: {entries}"
        + (f"; append-only file {aof:.1f} MB" if aof is not None else "")
    )


def overloaded(pipeline: dict[str, Any]) -> bool:
    return bool(pipeline["backlog_at_stop_frames"] >= pipeline["backlog_limit_when_keeping_up"])


def environment() -> dict[str, Any]:
    ffmpeg_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    from msightd import __version__

    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "msightd")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "msightd": __version__,
        "ffmpeg": ffmpeg_version,
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def _git(*args: str) -> str | None:
    """The msightd commit measured, so results can be compared across changes."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None
    return None


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cameras": args.cameras,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "transport": args.transport,
        "frame_encoding": args.frame_encoding,
        "packet_topic": args.packet_topic,
        "record_in_camera": args.record_in_camera,
        "decoder": args.decoder,
        "rtsp_reader": args.rtsp_reader,
        "decode_threads": args.decode_threads,
        "encoder_threads": args.encoder_threads,
        "batch_wait_s": args.batch_wait,
        "broker_persistence": args.broker_persistence,
        "log_level": "debug" if args.frame_ids else "info",
        "codec": "h264",
        "preset": args.preset,
        "crf": args.crf,
        "buffer_size": args.buffer_size,
        "overlap_size": 0,
        "fps": args.fps,
    }


def summarise_pairs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One run: itself. Several: the one with the median ratio (the table shown), plus every pair's
    ratio and totals, so machine noise between runs is visible instead of hidden in one number."""
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda r: (r["ratio_total_to_floor"] is None, r["ratio_total_to_floor"] or 0))
    median = ranked[(len(ranked) - 1) // 2]
    pairs = [
        {
            "ratio_total_to_floor": r["ratio_total_to_floor"],
            "pipeline_ms_per_frame": rounded((r["pipeline"]["total_cpu_s_per_frame"] or 0) * 1000, 2),
            "floor_ms_per_frame": rounded(r["floor"]["cpu_s_per_frame"] * 1000, 2) if r["floor"] else None,
            "frames_dropped": r["pipeline"]["frames_dropped"],
            "latency_p99_s": r["pipeline"]["latency_s"]["p99"],
            "finished_at": r["finished_at"],
        }
        for r in results
    ]
    return {**median, "pairs": pairs}


def format_pairs(result: dict[str, Any]) -> str:
    lines = ["", f"{len(result['pairs'])} pairs (the table above is the median one):"]
    for index, pair in enumerate(result["pairs"], 1):
        lines.append(
            f"  pair {index}: pipeline {fmt(pair['pipeline_ms_per_frame'], '.2f')} ms/frame, floor "
            f"{fmt(pair['floor_ms_per_frame'], '.2f')} ms/frame, ratio {fmt(pair['ratio_total_to_floor'], '.2f')}x, "
            f"dropped {pair['frames_dropped']}, p99 {fmt(pair['latency_p99_s'], '.2f')} s"
        )
    ratios = [p["ratio_total_to_floor"] for p in result["pairs"] if p["ratio_total_to_floor"] is not None]
    if ratios:
        middle = sorted(ratios)[(len(ratios) - 1) // 2]
        lines.append(f"  ratio: min {min(ratios):.2f}x, median {middle:.2f}x, max {max(ratios):.2f}x")
    return "\n".join(lines)
