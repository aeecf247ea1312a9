"""Frame ids: distinct across a daemon's camera nodes, not only probably distinct."""

from __future__ import annotations

from msightd.identity import FrameIdGenerator, WorkerIds, worker_id_for


def test_the_daemon_gives_each_node_its_own_worker_id_and_keeps_it() -> None:
    ids = WorkerIds()
    names = [f"cam{index}_rtsp" for index in range(40)]
    assigned = [ids(name) for name in names]
    assert len(set(assigned)) == 40
    assert ids("cam7_rtsp") == assigned[7]  # a restarted node keeps its id
    assert worker_id_for("cam7_rtsp", assigned[7]) == assigned[7]


def test_two_cameras_in_the_same_millisecond_get_different_frame_ids() -> None:
    ids = WorkerIds()
    first, second = FrameIdGenerator(ids("cam0")), FrameIdGenerator(ids("cam1"))
    pairs = [(first.next_id(), second.next_id()) for _ in range(1000)]
    assert all(a != b for a, b in pairs)
    assert len({i for pair in pairs for i in pair}) == 2000
