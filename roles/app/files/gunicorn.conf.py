"""gunicorn settings for the foobar.com app (deployed by foobar-provision, role app).

prometheus_client's multiprocess mode: every worker writes its metrics to files in
PROMETHEUS_MULTIPROC_DIR (the unit's RuntimeDirectory, new at each start); a scrape sums
them. When a worker exits (HUP reload, timeout, crash) its files are marked dead, so its
live gauges stop counting; its counters and histograms keep adding up, as they should.
"""

import os


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
