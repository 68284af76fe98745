"""The app's migration: applies the SQL files of migrations/ that the database has not
seen yet, in name order, each recorded in `schema_migrations`; every run (even one with
nothing to apply) is recorded in `migration_runs` with the release that ran it.

foobar-provision runs it once per deploy, on one app host, before any traffic reaches
the new release (tier `release: {migrate: python3 migrate.py}`), from the release's
folder, as www-data, with the service's environment (EnvironmentFile=/etc/foobar-app/env)
and FOOBAR_RELEASE set to the release id. A failure (exit 1) stops the deploy: the
release serving before keeps serving.

A migration file is plain SQL, statements separated by `;` at the end of a line. Write
them so the release before still works with the new schema (add columns, do not rename
or drop them in the same release): hosts switch one at a time.
"""

import os
import socket
import sys

import pymysql

HERE = os.path.dirname(os.path.realpath(__file__))


def connect():
    return pymysql.connect(
        host=os.environ["FOOBAR_DB_HOST"],
        port=int(os.environ.get("FOOBAR_DB_PORT", "3306")),
        user=os.environ["FOOBAR_DB_USER"],
        password=os.environ["FOOBAR_DB_PASSWORD"],
        database=os.environ["FOOBAR_DB_NAME"],
        connect_timeout=10,
        autocommit=True,
        ssl_ca=os.environ["FOOBAR_DB_SSL_CA"],
        ssl_cert=os.environ["FOOBAR_DB_SSL_CERT"],
        ssl_key=os.environ["FOOBAR_DB_SSL_KEY"],
        ssl_verify_cert=True,
        ssl_verify_identity=True,
    )


def statements(sql):
    out, current = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "".join(current).strip():
        out.append("\n".join(current).strip())
    return out


def main():
    release = os.environ.get("FOOBAR_RELEASE", "unknown")
    folder = os.path.join(HERE, "migrations")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".sql"))
    conn = connect()
    with conn.cursor() as cur:
        # One migration at a time, whoever runs it.
        cur.execute("SELECT GET_LOCK('foobar_migrate', 60)")
        if cur.fetchone()[0] != 1:
            print("another migration holds the lock 'foobar_migrate'", file=sys.stderr)
            return 1
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name VARCHAR(255) NOT NULL PRIMARY KEY,"
            " release_id VARCHAR(64) NOT NULL,"
            " applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))"
        )
        cur.execute(
            "CREATE TABLE IF NOT EXISTS migration_runs ("
            " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
            " release_id VARCHAR(64) NOT NULL,"
            " host VARCHAR(255) NOT NULL,"
            " applied INT NOT NULL,"
            " ran_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))"
        )
        cur.execute("SELECT name FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        applied = 0
        for name in names:
            if name in done:
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                sql = f.read()
            for stmt in statements(sql):
                cur.execute(stmt)
            cur.execute(
                "INSERT INTO schema_migrations (name, release_id) VALUES (%s, %s)",
                (name, release),
            )
            print(f"applied {name}")
            applied += 1
        host = os.environ.get("FOOBAR_HOST_NAME") or socket.gethostname()
        cur.execute(
            "INSERT INTO migration_runs (release_id, host, applied) VALUES (%s, %s, %s)",
            (release, host, applied),
        )
        cur.execute("SELECT RELEASE_LOCK('foobar_migrate')")
    conn.close()
    print(f"release {release}: {applied} migration(s) applied, {len(names)} known")
    return 0


if __name__ == "__main__":
    sys.exit(main())
