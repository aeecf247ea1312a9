"""A pipeline run's observations turned into figures: CPU per frame, frames dropped, latency, backlog.

Dropped frames: each camera node reports how many frames it published when it stops; every written
segment's JSON lists its frame ids; dropped = published - distinct ids on disk, duplicated = ids on disk
more than once. ``--frame-ids`` compares ids one by one instead (and names dropped ones), but needs every
frame logged at debug level, which costs the camera nodes ~0.3 ms per frame that a deployment does not pay.

How CPU per frame is counted (utime+stime of the process, its reaped children and its live descendants):

* rtsp nodes, the broker, the daemon and ffmpeg do work per frame, continuously: CPU over the window from the end
  of ``--warmup`` to the stop, divided by the frames published (``/metrics``) or encoded (ffmpeg ``-progress``)
  in the same window;
* the aggregator and the dumper work per *segment* (a 100-frame encode is seconds of CPU in one lump), so a window
  cut mid-encode would be off by up to a segment. They are counted from the moment every node is running (startup
  imports excluded) to their exit, including the shutdown flush, divided by the frames in every segment they
  encoded / wrote.
"""

from __future__ import annotations

from typing import Any

from bench.figures import mean, per_frame, percentile, rounded
from bench.pipeline import PipelineRun
from bench.sampling import Tracked, lifetime_cpu, window_cpu

KIND_ORDER = ("rtsp", "aggregator", "dumper", "broker", "daemon")


def _cores(tracked: Tracked, window_s: float) -> float | None:
    """Average cores used over the window (approximate for the aggregator, whose work comes in lumps)."""
    cpu = window_cpu(tracked, "t0", "t1")
    return cpu / window_s if cpu is not None and window_s > 0 else None


def node_results(run: PipelineRun) -> dict[str, dict[str, Any]]:
    """CPU per frame, cores and peak RSS of each node, the broker and the daemon (see the module docstring)."""
    window_frames = {
        node: run.window.published_t1.get(node, 0.0) - run.window.published_t0.get(node, 0.0) for node in run.kinds
    }
    all_window_frames = sum(window_frames.values())
    encoded = sum(e.get("frames", 0) for e in run.events if e.get("event") == "segment_published")
    written = sum(e.get("frames", 0) for e in run.events if e.get("event") == "segment_written")
    results: dict[str, dict[str, Any]] = {}
    for label, tracked in sorted(run.tracked.items(), key=lambda item: KIND_ORDER.index(run.kinds[item[0]])):
        kind = run.kinds[label]
        if kind in ("aggregator", "dumper"):
            cpu, frames, method = lifetime_cpu(tracked), encoded if kind == "aggregator" else written, "lifetime"
        else:
            frames = window_frames[label] if kind == "rtsp" else all_window_frames
            cpu, method = window_cpu(tracked, "t0", "t1"), "window"
        results[label] = {
            "kind": kind,
            "pid": tracked.pid,
            **per_frame(cpu, frames),
            "method": method,
            "cores": rounded(_cores(tracked, run.window.window_s)),
            "startup_cpu_s": rounded(tracked.marks.get("base")),
            "rss_max_mb": round(tracked.max_rss / 2**20, 1),
            "pss_max_mb": round(tracked.max_pss / 2**20, 1),
            "restarts": run.window.restarts.get(label, 0),
        }
    return results


def total_per_frame(nodes: dict[str, dict[str, Any]]) -> float | None:
    """CPU seconds per camera frame of the whole pipeline: every rtsp node's CPU over all their frames, plus
    each shared process's CPU per frame."""
    rtsp = [n for n in nodes.values() if n["kind"] == "rtsp"]
    shared = [n for n in nodes.values() if n["kind"] != "rtsp"]
    if any(n["cpu_s_per_frame"] is None for n in shared) or any(n["cpu_s"] is None for n in rtsp):
        return None
    rtsp_frames = sum(n["frames"] for n in rtsp)
    if rtsp_frames <= 0:
        return None
    return sum(n["cpu_s"] for n in rtsp) / rtsp_frames + sum(n["cpu_s_per_frame"] for n in shared)


def frame_accounting(run: PipelineRun) -> dict[str, Any]:
    """Frames each camera published against the frames in the written segments: by id with --frame-ids
    (every camera's per-frame log line), else by count (what each camera reports publishing when it
    stops, against the distinct frame ids in the segments)."""
    published: dict[int, str] = {}
    for event in run.events:
        if event.get("event") == "frame_captured" and "frame_id" in event:
            published[int(event["frame_id"])] = str(event.get("node"))
    counted = sum(
        # packets: what --packet-topic records; frames_recorded: what --record-in-camera records
        int(e.get("frames_recorded", e.get("packets_published", e.get("frames_published", 0))))
        for e in run.events
        if e.get("event") == "source_stopped"
    )
    in_segments: list[int] = [int(f["frame_id"]) for s in run.segments for f in s.get("frames", [])]
    unique = set(in_segments)
    dropped = sorted(set(published) - unique)
    total = len(published) if published else counted
    missing = len(dropped) if published else max(0, counted - len(unique))
    return {
        "frames_published": total,
        "frames_published_reported": counted,
        "frames_in_segments": len(unique),
        "frames_dropped": missing,
        "drop_rate": rounded(missing / total, 5) if total else None,
        "frames_duplicated": len(in_segments) - len(unique),
        "frames_unknown": len(unique - set(published)) if published else max(0, len(unique) - counted),
        "accounting": "frame ids" if published else "counts",
        "dropped_frame_ids_sample": dropped[:10],
        "dropped_by_node": _count_by(dropped, published),
    }


def _count_by(ids: list[int], owner: dict[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for frame_id in ids:
        counts[owner[frame_id]] = counts.get(owner[frame_id], 0) + 1
    return counts


def _latency(latencies: list[float]) -> dict[str, Any]:
    return {
        "p50": rounded(percentile(latencies, 50)),
        "p99": rounded(percentile(latencies, 99)),
        "max": rounded(max(latencies) if latencies else None),
        "n": len(latencies),
    }


def segment_results(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    """Capture-to-disk latency (the dumper's own measure) and bytes per full segment. ``latency_s`` counts
    every full segment; ``latency_after_first_s`` leaves out each camera's first one: cameras started
    together finish their first segments together, and that one burst (N segments to write and fsync at
    once) is the start-up's, which steady recording does not see again unless the cameras stay in step."""
    written = [e for e in run.events if e.get("event") == "segment_written" and e.get("frames") == buffer_size]
    seen: set[str] = set()
    later: list[float] = []
    for event in written:
        if event.get("sensor") in seen:
            later.append(float(event["capture_to_disk_seconds"]))
        seen.add(str(event.get("sensor")))
    sizes = [int(s["video_size_bytes"]) for s in run.segments if s.get("frame_count") == buffer_size]
    return {
        "segments_written": len(run.segments),
        "full_segments": len(sizes),
        "latency_s": _latency([float(e["capture_to_disk_seconds"]) for e in written]),
        "latency_after_first_s": _latency(later),
        "mb_per_segment": rounded(sum(sizes) / len(sizes) / 1e6 if sizes else None),
        "encode_seconds_mean": rounded(
            mean([float(e["encode_seconds"]) for e in run.events if e.get("event") == "segment_published"])
        ),
    }


def overload(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    """Was the pipeline keeping up? Frames published but not on disk when SIGTERM came stay under ~one buffer plus
    one encode per camera when it keeps up, and grow with the run when it does not; a node killed after the grace
    period lost whatever it still held."""
    on_disk = sum(
        int(e.get("frames", 0))
        for e in run.events
        if e.get("event") == "segment_written" and _epoch(e.get("timestamp")) < run.window.stopped_at
    )
    cameras = sum(kind == "rtsp" for kind in run.kinds.values())
    published = sum(run.window.published_t1.values())
    return {
        "frames_on_disk_at_stop": on_disk,
        "backlog_at_stop_frames": int(published - on_disk),
        "backlog_limit_when_keeping_up": cameras * buffer_size * 2,
        "nodes_killed_on_stop": [e.get("node_name") for e in run.events if e.get("event") == "node_killed"],
    }


def _epoch(iso: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return float("inf")


def memory_per_camera(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole pipeline's memory (every process's peak PSS, broker and daemon included) per camera."""
    cameras = sum(1 for n in nodes.values() if n["kind"] == "rtsp")
    total = sum(n["pss_max_mb"] for n in nodes.values())
    return {"pss_total_mb": round(total, 1), "pss_mb_per_camera": round(total / cameras, 1) if cameras else None}


def pipeline_results(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    """The ``pipeline`` section of the JSON (and of the table)."""
    nodes = node_results(run)
    return {
        "run_s": round(run.window.run_s, 2),
        "window_s": round(run.window.window_s, 2),
        "nodes": nodes,
        "broker_memory": run.broker,
        "total_cpu_s_per_frame": rounded(total_per_frame(nodes), 6),
        "total_cores": rounded(sum(n["cores"] or 0.0 for n in nodes.values())),
        **memory_per_camera(nodes),
        **frame_accounting(run),
        **segment_results(run, buffer_size),
        **overload(run, buffer_size),
    }
