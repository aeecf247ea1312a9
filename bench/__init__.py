"""The msightd benchmark (``python -m bench.run_bench``): a script, not a test, and not shipped in the wheel.

One module per job, so each can be read (and changed) without the others:

* ``run_bench`` -- the entry point: arguments, requirements, one run per ``--repeat`` pair, printing and JSON;
* ``sampling`` -- CPU and RSS of processes and their descendants from ``/proc``, sampled from a thread;
* ``processes`` -- starting and killing process groups, waiting with a deadline, the bench's error;
* ``cameras`` -- the clips and the loopback RTSP cameras looping them;
* ``pipeline`` -- broker + daemon + nodes for the run's duration, and what they logged, wrote and held;
* ``results`` -- the pipeline's observations turned into per-node costs, frame accounting and latency;
* ``floor`` -- the ffmpeg floor (transcode, or ``-c copy`` for passthrough) the pipeline is compared with;
* ``figures`` -- rounding and per-frame arithmetic shared by the results, the floor and the report;
* ``report`` -- the human table, the ``--repeat`` summary and the environment recorded in the JSON.

It imports ``msightd`` and ``testbed`` only (never ``tests``).
"""

from pathlib import Path

#: The repository the bench runs from: results go under it, the measured git commit is read from it, and the
#: team's shared footage is looked for beside it
REPO_ROOT = Path(__file__).resolve().parent.parent
