"""gunicorn settings for the foobar.com app (deployed by foobar-provision, role app).

prometheus_client's multiprocess mode: every worker writes its metrics to files in
PROMETHEUS_MULTIPROC_DIR (the unit's RuntimeDirectory, new at each start); a scrape sums
them. When a worker exits (HUP reload, timeout, crash) its files are marked dead, so its
live gauges stop counting; its counters and histograms keep adding up, as they should.
"""

import os

# Imported once, as the master reads this file: child_exit runs inside the master's SIGCHLD
# handler, and an import there can be interrupted by the next worker's SIGCHLD and re-entered
# half done. Seen on the lab during a HUP: "ImportError: cannot import name 'Gauge' from
# partially initialized module", the master died and systemd restarted the app, so the
# requests it held failed.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from prometheus_client import multiprocess
else:
    multiprocess = None


def child_exit(server, worker):
    if multiprocess is not None:
        multiprocess.mark_process_dead(worker.pid)
