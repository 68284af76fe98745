//! Plans and outcomes for the renderers' tests (Markdown, JUnit, the JSON schema): every
//! kind of change a plan can hold, a secret left in a diff and hostile text in errors, so
//! that the golden files show masking and escaping.

use super::{ErrorKind, Failure, HostEnd, Interruption, Outcome};
use crate::desired::{DesiredCert, DesiredFile, DesiredRelease};
use crate::pki::{CertSpec, San};
use crate::plan::{
    Action, CertChange, CertWork, DrainStep, FileAction, FileChange, HostPlan, PathAction,
    PathChange, PathWant, ReleaseChange, RolePlan,
};
use crate::release::{Summary, Target, Why};
use crate::role::{Notify, NotifyKind, RoleRelease};
use crate::secrets::Secrets;
use crate::shell::Init;
use std::time::Duration;

/// The secret of the fixtures; it appears raw in web1's diff and in db1's error.
pub const SECRET: &str = "hunter2-canary-value";

pub fn secrets() -> Secrets {
    Secrets::from_pairs(&[("db_password", SECRET)])
}

fn role(name: &str) -> RolePlan {
    RolePlan {
        role: name.into(),
        serving: false,
        interrupts: None,
        drift: None,
        files: vec![],
        certificates: vec![],
        paths: vec![],
        release: None,
        release_error: None,
        actions: vec![],
        validate: None,
        health: vec![],
    }
}

fn host(name: &str, tier: &str, address: &str, roles: Vec<RolePlan>) -> HostPlan {
    HostPlan {
        host: name.into(),
        tier: tier.into(),
        address: address.into(),
        init: Init::Systemd,
        packages_to_install: vec![],
        packages_ready: false,
        stale_temps: vec![],
        roles,
        drain: None,
    }
}

fn file(dest: &str, content: &str, sensitive: bool) -> DesiredFile {
    DesiredFile::new(
        dest.into(),
        content.as_bytes().to_vec(),
        "root".into(),
        "root".into(),
        0o644,
        Notify::Service(NotifyKind::Reload),
        None,
        sensitive,
    )
}

/// web1: packages, a stale temp, a drain, a certificate, a folder, an updated file with a
/// diff (a secret in it, and a line of backticks), a sensitive file, a link, a reload.
fn web1() -> HostPlan {
    let mut nginx = role("nginx");
    nginx.serving = true;
    let mut site = FileChange::new_content(
        file("/etc/nginx/sites-enabled/site.conf", "listen 443;\n", false),
        FileAction::Update,
    );
    site.old_mode = Some("0600".into());
    site.old_owner = Some("www-data:root".into());
    site.restart_because = Some("listen".into());
    site.diff = Some(format!(
        "--- /etc/nginx/sites-enabled/site.conf\n+++ /etc/nginx/sites-enabled/site.conf\n\
         @@ -1,3 +1,3 @@\n-listen 80;\n+listen 443;\n # password {SECRET}\n # ```\n"
    ));
    let secret = FileChange::new_content(
        file("/etc/nginx/secret.conf", "x", true),
        FileAction::Create,
    );
    nginx.files = vec![site, secret];
    nginx.certificates = vec![CertChange {
        cert: "/etc/ssl/foobar/web1.pem".into(),
        key: "/etc/ssl/foobar/web1.key".into(),
        action: CertWork::Issue,
        reason: "no certificate yet".into(),
        new_key: true,
        names: vec!["web1".into(), "172.30.77.21".into()],
        old_key_meta: Some("0644 root:root".into()),
        notify: Notify::Service(NotifyKind::Reload),
        desired: DesiredCert {
            cert: "/etc/ssl/foobar/web1.pem".into(),
            key: "/etc/ssl/foobar/web1.key".into(),
            owner: "root".into(),
            group: "root".into(),
            spec: CertSpec {
                common_name: "web1".into(),
                sans: vec![San::Dns("web1".into())],
                validity_days: 90,
            },
            notify: Notify::Service(NotifyKind::Reload),
        },
    }];
    nginx.paths = vec![
        PathChange {
            path: "/var/www/foobar".into(),
            want: PathWant::Directory {
                mode: "0755".into(),
                owner: "root".into(),
                group: "root".into(),
            },
            action: PathAction::Metadata,
            found: None,
            old_mode: Some("0700".into()),
            old_owner: Some("www-data:root".into()),
            old_target: None,
            reason: None,
            notify: Notify::None,
        },
        PathChange {
            path: "/etc/nginx/sites-enabled/foobar.conf".into(),
            want: PathWant::Link {
                target: "/etc/nginx/sites-available/foobar.conf".into(),
            },
            action: PathAction::Relink,
            found: None,
            old_mode: None,
            old_owner: None,
            old_target: Some("/tmp/elsewhere".into()),
            reason: None,
            notify: Notify::Service(NotifyKind::Reload),
        },
        PathChange {
            path: "/etc/nginx/sites-enabled/default".into(),
            want: PathWant::Absent,
            action: PathAction::Remove,
            found: Some("link".into()),
            old_mode: None,
            old_owner: None,
            old_target: Some("../sites-available/default".into()),
            reason: None,
            notify: Notify::Service(NotifyKind::Reload),
        },
    ];
    nginx.actions = vec![
        Action::Restart {
            service: "nginx".into(),
        },
        Action::Run {
            handler: "flush".into(),
            command: format!("flush --password {SECRET}"),
        },
    ];
    nginx.interrupts = Some("the site <for 1 s> & more".into());
    nginx.drift = Some("nft list table inet foobar".into());
    let mut p = host("web1", "web", "172.30.77.21", vec![role("firewall"), nginx]);
    p.packages_to_install = vec!["nginx".into()];
    p.stale_temps = vec!["/etc/nginx/.nginx.conf.fp-abc123".into()];
    p.drain = Some(DrainStep {
        backend: "web".into(),
        via: vec!["lb1".into(), "lb2".into()],
        timeout_s: 10.0,
    });
    p
}

/// app1: a release switched in, with a summary, a migration and old releases removed.
fn app1() -> HostPlan {
    let mut app = role("app");
    app.release = Some(ReleaseChange {
        root: "/opt/foobar-app".into(),
        from: Some("302616ea1227".into()),
        to: "9c81d2e4f5a6".into(),
        why: Why::Deploy,
        switch: true,
        upload: true,
        files: 12,
        bytes: 34_567,
        source: "../app".into(),
        summary: Some(Summary {
            added: vec!["migrations/002_note.sql".into()],
            changed: vec!["app.py".into()],
            removed: vec![],
        }),
        migrate: Some("python3 migrate.py".into()),
        prune: vec!["0123456789ab".into()],
        notify: Notify::Handler("hup".into()),
        desired: DesiredRelease {
            spec: RoleRelease {
                root: "/opt/foobar-app".into(),
                owner: "root".into(),
                group: "root".into(),
                run_as: "foobar".into(),
                environment_file: None,
                notify: Notify::Handler("hup".into()),
                health: None,
                at: serde_saphyr::Location::UNKNOWN,
            },
            health: None,
            keep: 5,
            migrate: Some("python3 migrate.py".into()),
            target: Target::Source,
            bundle: None,
        },
    });
    app.actions = vec![
        Action::DaemonReload,
        Action::Reload {
            service: "foobar-app".into(),
        },
        Action::Start {
            service: "foobar-app".into(),
        },
        Action::Enable {
            service: "foobar-app".into(),
        },
    ];
    host("app1", "app", "172.30.77.31", vec![role("firewall"), app])
}

/// The plans of the fixture's hosts that could be planned, in rollout order.
pub fn plans() -> Vec<HostPlan> {
    vec![
        app1(),
        web1(),
        host(
            "lb1",
            "lb",
            "172.30.77.11",
            vec![role("firewall"), role("haproxy")],
        ),
    ]
}

/// The hosts' outcomes in a plan: changes, converged, unreachable (a hostile message with
/// the secret in it), not started.
pub fn plan_outcomes() -> Vec<(&'static str, &'static str, Option<Outcome>)> {
    vec![
        ("app1", "app", Some(Outcome::Changed(5))),
        ("web1", "web", Some(Outcome::Changed(10))),
        ("lb1", "lb", Some(Outcome::Ok)),
        (
            "db1",
            "db",
            Some(Outcome::unreachable(
                ErrorKind::Connect,
                format!(
                    "connect to 172.30.77.41:22: refused | <b>&amp;</b> \u{1b}[31m {SECRET}\nsecond line"
                ),
            )),
        ),
    ]
}

/// The hosts' outcomes after an apply: web1 failed in role nginx, app1 applied, lb1 not
/// started, db1 interrupted.
pub fn apply_outcomes() -> Vec<(&'static str, &'static str, Option<Outcome>)> {
    vec![
        ("app1", "app", Some(Outcome::Changed(5))),
        (
            "web1",
            "web",
            Some(Outcome::Failed(
                Failure::new(
                    ErrorKind::Validation,
                    "validation of /etc/nginx/sites-enabled/site.conf failed (exit 1):\n    nginx: [emerg] \"<listen>\" & \"quotes\" 'here'",
                )
                .in_role(Some("nginx")),
            )),
        ),
        ("lb1", "lb", None),
        (
            "db1",
            "db",
            Some(Outcome::Interrupted(Interruption {
                applied: vec!["firewall".into()],
                not_applied: vec!["mysql".into()],
                note: "stopped before role mysql (nothing of it was changed)".into(),
            })),
        ),
    ]
}

/// The timings every fixture host reports: a role and two steps (one outside any role).
pub fn timings() -> &'static crate::timings::HostTimings {
    static T: std::sync::OnceLock<crate::timings::HostTimings> = std::sync::OnceLock::new();
    T.get_or_init(|| crate::timings::HostTimings {
        roles: vec![crate::timings::RoleTime {
            role: "nginx".into(),
            seconds: 0.5,
        }],
        steps: vec![
            crate::timings::StepTime {
                role: None,
                step: "gathering facts".into(),
                seconds: 0.25,
            },
            crate::timings::StepTime {
                role: Some("nginx".into()),
                step: "validating".into(),
                seconds: 0.5,
            },
        ],
    })
}

/// [`HostEnd`]s of `outcomes`, each 1.5 s and one round trip, with [`timings`].
pub fn ends<'a>(outcomes: &'a [(&'static str, &'static str, Option<Outcome>)]) -> Vec<HostEnd<'a>> {
    outcomes
        .iter()
        .map(|(host, tier, o)| HostEnd {
            host,
            tier,
            outcome: o.as_ref(),
            elapsed: Duration::from_millis(1500),
            round_trips: 1,
            timings: Some(timings()),
        })
        .collect()
}

/// Compares `actual` with the golden file `tests/data/golden/NAME`; with
/// `UPDATE_GOLDEN=1` in the environment, writes it instead.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir golden");
        }
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the test with UPDATE_GOLDEN=1 to write it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it; review with git diff):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
