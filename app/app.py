"""foobar.com application: a small Flask app behind Nginx, run by gunicorn.

The example release: foobar-provision deploys this folder (the lab's tier `app` says
`release: {source: ../app}`) to /opt/foobar-app/releases/<id>/ and switches
/opt/foobar-app/current to it; gunicorn runs it from there. migrate.py (with the SQL files
in migrations/) is its migration, run once per deploy before traffic moves to it.
Configured by the environment (systemd EnvironmentFile=/etc/foobar-app/env):

  FOOBAR_HOST_NAME    this app host's name (shown in every answer)
  FOOBAR_DB_HOST      MariaDB address (the db tier's first host)
  FOOBAR_DB_PORT      default 3306
  FOOBAR_DB_NAME      database
  FOOBAR_DB_USER      account ('user'@'<this host's address>')
  FOOBAR_DB_PASSWORD  its password
  FOOBAR_DB_SSL_CA, FOOBAR_DB_SSL_CERT, FOOBAR_DB_SSL_KEY
                      TLS to MariaDB: the internal CA, this host's certificate and key

While the database is away (restarting), every endpoint that needs it answers 503 with
Retry-After within the connect timeout (5 s), and the next request connects again.

Endpoints (Nginx serves them under /api/ too):
  GET /health      200 when the process answers, with the release it runs (from the
                   REVISION file the tool writes); never touches the database
  GET /health/db   200 when the database answers and the visits table is readable
  GET|POST /visits records a visit, answers the visit count and the last visits
  GET /metrics     Prometheus metrics (requests and latency by endpoint, database errors);
                   answered to direct clients only (the monitoring hosts), never through
                   Nginx, which always sets X-Real-IP

Metrics with gunicorn's several worker processes: prometheus_client's multiprocess mode,
each worker writing its own files in PROMETHEUS_MULTIPROC_DIR (the unit's
RuntimeDirectory, new at each start), summed at each scrape; gunicorn.conf.py marks a
worker that exits as dead.
"""

import os
import socket
import time

import pymysql
import pymysql.cursors
from flask import Flask, Response, abort, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

app = Flask(__name__)
app.json.sort_keys = False

HOST_NAME = os.environ.get("FOOBAR_HOST_NAME") or socket.gethostname()
# What the visitor sees: the line a deploy changes.
MESSAGE = "Welcome to www.foobar.com"


def _release():
    """The release id foobar-provision wrote beside this file (`unknown` run elsewhere)."""
    path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "REVISION")
    try:
        with open(path, encoding="ascii") as f:
            return f.read(64).strip() or "unknown"
    except OSError:
        return "unknown"


RELEASE = _release()
LAST_VISITS = 5

# Label values come from fixed sets (route rules, known methods, status codes): a client
# cannot make new series.
REQUESTS = Counter(
    "foobar_app_requests_total",
    "HTTP requests answered, by endpoint (route), method and status code.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "foobar_app_request_duration_seconds",
    "Time to answer a request, by endpoint (route).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DB_ERRORS = Counter(
    "foobar_app_db_errors_total",
    "Database errors (connect or query), by endpoint (route).",
    ["endpoint"],
)
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _db():
    return pymysql.connect(
        host=os.environ["FOOBAR_DB_HOST"],
        port=int(os.environ.get("FOOBAR_DB_PORT", "3306")),
        user=os.environ["FOOBAR_DB_USER"],
        password=os.environ["FOOBAR_DB_PASSWORD"],
        database=os.environ["FOOBAR_DB_NAME"],
        charset="utf8mb4",
        connect_timeout=5,
        read_timeout=10,
        write_timeout=10,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
        # TLS, the server verified against the internal CA and by its address; our
        # certificate is the account's client certificate (REQUIRE X509).
        ssl_ca=os.environ["FOOBAR_DB_SSL_CA"],
        ssl_cert=os.environ["FOOBAR_DB_SSL_CERT"],
        ssl_key=os.environ["FOOBAR_DB_SSL_KEY"],
        ssl_verify_cert=True,
        ssl_verify_identity=True,
    )


def _clip(value, limit):
    return value[:limit] if value else value


def _client():
    """The client as Nginx saw it (Nginx's realip module trusts only the load balancers)."""
    return request.headers.get("X-Real-IP") or request.remote_addr


# While the database is away (a restart), clients are told when to come back.
RETRY_AFTER_S = "2"


def _endpoint():
    """The route's rule (`/visits`), never the raw path; `unmatched` for a 404."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


@app.before_request
def _metrics_start():
    g.foobar_started = time.perf_counter()


@app.after_request
def _metrics_count(response):
    endpoint = _endpoint()
    started = g.pop("foobar_started", None)
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    return response


@app.get("/metrics")
def metrics():
    if request.headers.get("X-Real-IP") or request.headers.get("X-Forwarded-For"):
        abort(404)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _db_error(e):
    # PyMySQL messages name the account and host, never the password.
    app.logger.error("database error: %s", e)
    resp = jsonify(status="error", host=HOST_NAME, error=f"database: {e}")
    resp.status_code = 503
    resp.headers["Retry-After"] = RETRY_AFTER_S
    return resp


@app.get("/health")
def health():
    return jsonify(status="ok", host=HOST_NAME, release=RELEASE)


@app.get("/health/db")
def health_db():
    try:
        conn = _db()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) AS n FROM visits")
                n = cur.fetchone()["n"]
        finally:
            conn.close()
    except (pymysql.MySQLError, OSError, KeyError) as e:
        DB_ERRORS.labels(_endpoint()).inc()
        return _db_error(e)
    return jsonify(status="ok", host=HOST_NAME, visits=n)


@app.route("/visits", methods=["GET", "POST"])
@app.route("/", methods=["GET", "POST"])
def visits():
    forwarded_for = request.headers.get("X-Forwarded-For", "")
    client = _client()
    try:
        conn = _db()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO visits (app_host, client_ip, forwarded_for, user_agent)"
                    " VALUES (%s, %s, %s, %s)",
                    (
                        _clip(HOST_NAME, 255),
                        _clip(client, 45),
                        _clip(forwarded_for, 1024),
                        _clip(request.headers.get("User-Agent", ""), 512),
                    ),
                )
                visit_id = cur.lastrowid
                cur.execute("SELECT COUNT(*) AS n FROM visits")
                count = cur.fetchone()["n"]
                cur.execute(
                    "SELECT id, created_at, app_host, client_ip FROM visits"
                    " ORDER BY id DESC LIMIT %s",
                    (LAST_VISITS,),
                )
                last = cur.fetchall()
        finally:
            conn.close()
    except (pymysql.MySQLError, OSError, KeyError) as e:
        DB_ERRORS.labels(_endpoint()).inc()
        return _db_error(e)
    for row in last:
        row["created_at"] = row["created_at"].isoformat(timespec="milliseconds")
    return jsonify(
        status="ok",
        host=HOST_NAME,
        release=RELEASE,
        message=MESSAGE,
        visit=visit_id,
        visits=count,
        client=client,
        x_forwarded_for=forwarded_for,
        x_forwarded_proto=request.headers.get("X-Forwarded-Proto", ""),
        last=last,
    )
