//! The saved plan: what it records (and never records), each kind of drift found by the
//! pure comparison on recorded facts, and how a file is told apart, refused or written.

use super::*;
use crate::desired::{DesiredFile, DesiredRelease, DesiredRole, sha256_hex};
use crate::facts::{FileFact, ServiceFact};
use crate::inventory::Host;
use crate::release::{ReleaseFact, Target};
use crate::role::{Notify, NotifyKind, RoleRelease, Service};
use crate::shell::Init;

const SECRET: &str = "s3cret-password-value";
const CONF: &str = "/etc/nginx/nginx.conf";
const PASSWORDS: &str = "/etc/nginx/passwords";

fn secrets() -> Secrets {
    Secrets::from_pairs(&[("pw", SECRET)])
}

fn key() -> Key {
    Key::new("00112233445566778899aabbccddeeff", &secrets()).expect("hex salt")
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

/// web1: nginx (a file, a file holding the secret, a package, a unit, a drift check) and
/// app (a release under /opt/foobar-app).
fn desired(conf: &str) -> DesiredHost {
    let role = |name: &str| DesiredRole {
        name: name.into(),
        packages: vec![],
        service: None,
        files: vec![],
        validate: None,
        handlers: vec![],
        health: vec![],
        drift_check: None,
        certificates: vec![],
        directories: vec![],
        links: vec![],
        absent: vec![],
        release: None,
    };
    let mut nginx = role("nginx");
    nginx.packages = vec!["nginx".into()];
    nginx.service = Some(Service {
        name: "nginx".into(),
        enabled: true,
        reload: true,
        interrupts: None,
    });
    nginx.files = vec![
        file(CONF, conf, false),
        file(PASSWORDS, &format!("admin:{SECRET}\n"), true),
    ];
    nginx.drift_check = Some("true".into());
    let mut app = role("app");
    app.release = Some(DesiredRelease {
        spec: RoleRelease {
            root: "/opt/foobar-app".into(),
            owner: "root".into(),
            group: "root".into(),
            run_as: "root".into(),
            environment_file: None,
            notify: Notify::None,
            health: None,
            at: serde_saphyr::Location::UNKNOWN,
        },
        health: None,
        keep: 5,
        migrate: None,
        target: Target::Source,
        bundle: None,
    });
    DesiredHost {
        host: Host {
            name: "web1".into(),
            address: "172.30.77.21".parse().expect("ip"),
            tier: "web".into(),
            port: 22,
            user: "root".into(),
            vars: Default::default(),
            hostname: None,
            address_at: (0, 0),
            port_set: false,
            user_set: false,
            identity_file: None,
        },
        roles: vec![nginx, app],
    }
}

/// What web1 is: the files with these contents (or absent), nginx installed and running.
fn facts(conf: Option<&str>, passwords: Option<&str>) -> Facts {
    let fact = |c: &str| FileFact {
        sha256: sha256_hex(c.as_bytes()),
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
    };
    Facts {
        init: Init::Systemd,
        files: [
            (CONF.to_string(), conf.map(fact)),
            (PASSWORDS.to_string(), passwords.map(fact)),
        ]
        .into_iter()
        .collect(),
        packages: [("nginx".to_string(), true)].into_iter().collect(),
        services: [(
            "nginx".to_string(),
            ServiceFact {
                active: "active".into(),
                enabled: "enabled".into(),
            },
        )]
        .into_iter()
        .collect(),
        vips_held: None,
        unfinished: Default::default(),
        drifted: Default::default(),
        stale_temps: Default::default(),
        locked_by: None,
        certs: vec![],
        nodes: Default::default(),
        releases: vec![ReleaseFact {
            current: Current::Release("302616ea1227".into()),
            have: Default::default(),
            history: vec![],
        }],
    }
}

/// A plan file of web1 with these facts (its plan as the JSON shows it).
fn plan_file(d: &DesiredHost, f: &Facts) -> PlanFile {
    let plan = crate::plan::plan_host(d, f, &Default::default(), &secrets(), None);
    let mut basis = host_basis(d, f, &key());
    basis.plan = serde_json::to_value(&plan).expect("json");
    PlanFile {
        kind: KIND.into(),
        format_version: FORMAT_VERSION,
        tool_version: TOOL_VERSION.into(),
        created: "2026-01-02T03:04:05Z".into(),
        selection: Selection {
            inventory: "inventories/lab.yml".into(),
            root: None,
            limit: vec![],
            tier: vec![],
            roles: vec![],
            skip_roles: vec![],
            vars: vec![],
        },
        salt: "00112233445566778899aabbccddeeff".into(),
        secrets: key().secrets_digest(),
        inputs: vec![
            Input {
                kind: InputKind::Inventory,
                path: "inventories/lab.yml".into(),
                hash: "aa".into(),
            },
            Input {
                kind: InputKind::Role,
                path: "roles/nginx/role.yml".into(),
                hash: "bb".into(),
            },
            Input {
                kind: InputKind::Template,
                path: "templates/nginx/nginx.conf.tera".into(),
                hash: "cc".into(),
            },
            Input {
                kind: InputKind::Release,
                path: "app".into(),
                hash: "9c81d2e4f5a6".into(),
            },
        ],
        hosts: vec![basis],
    }
}

const OLD: &str = "worker_processes 1;\n";
const NEW: &str = "worker_processes 2;\n";

/// The saved plan: web1 with the old nginx.conf, to be updated.
fn saved() -> PlanFile {
    plan_file(&desired(NEW), &facts(Some(OLD), Some("x")))
}

/// The staleness found when web1's facts are `f` now (the inputs unchanged).
fn drift(f: Facts) -> Vec<String> {
    let now = plan_file(&desired(NEW), &f);
    stale_hosts(&saved(), &now)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn nothing_changed_nothing_is_stale() {
    let (a, b) = (saved(), saved());
    assert!(stale_inputs(&a, &b).is_empty());
    assert!(stale_hosts(&a, &b).is_empty());
}

#[test]
fn a_file_edited_by_hand_is_named_with_its_host() {
    let d = drift(facts(Some("edited by hand\n"), Some("x")));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("web1: /etc/nginx/nginx.conf changed on the host (0644 root:root sha256 "),
        "{d:?}"
    );
}

#[test]
fn a_file_removed_or_its_mode_changed_is_stale() {
    let d = drift(facts(None, Some("x")));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("web1: /etc/nginx/nginx.conf was removed from the host"),
        "{d:?}"
    );
    let mut f = facts(Some(OLD), Some("x"));
    if let Some(Some(c)) = f.files.get_mut(CONF) {
        c.mode = 0o600;
    }
    let d = drift(f);
    assert!(
        d[0].contains("(0644 root:root") && d[0].contains("-> 0600 root:root"),
        "{d:?}"
    );
}

#[test]
fn a_file_holding_a_secret_is_compared_by_keyed_hash_only() {
    let d = drift(facts(Some(OLD), Some("y")));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("web1: /etc/nginx/passwords changed on the host"),
        "{d:?}"
    );
    assert!(d[0].contains("(keyed: the file holds a secret)"), "{d:?}");
}

#[test]
fn a_package_removed_is_stale() {
    let mut f = facts(Some(OLD), Some("x"));
    f.packages.insert("nginx".into(), false);
    assert_eq!(
        drift(f),
        ["web1: package nginx was installed, now not installed"]
    );
}

#[test]
fn a_unit_stopped_is_stale() {
    let mut f = facts(Some(OLD), Some("x"));
    if let Some(s) = f.services.get_mut("nginx") {
        s.active = "inactive".into();
    }
    assert_eq!(
        drift(f),
        ["web1: unit nginx was active/enabled, now inactive/enabled (active/enabled)"]
    );
}

#[test]
fn a_release_switched_meanwhile_is_stale() {
    let mut f = facts(Some(OLD), Some("x"));
    f.releases[0].current = Current::Release("0123456789ab".into());
    assert_eq!(
        drift(f),
        ["web1: the release in /opt/foobar-app/current was 302616ea1227, now 0123456789ab"]
    );
}

#[test]
fn a_drift_check_failing_now_is_stale() {
    let mut f = facts(Some(OLD), Some("x"));
    f.drifted.insert("nginx".into());
    assert_eq!(
        drift(f),
        ["web1: role nginx's drift check fails now (it passed)"]
    );
}

#[test]
fn a_plan_that_differs_for_a_fact_not_recorded_is_stale() {
    let mut f = facts(Some(OLD), Some("x"));
    f.stale_temps
        .insert("/etc/nginx/.nginx.conf.fp-abcdef".into());
    let d = drift(f);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("web1: its plan differs from the saved one at /stale_temps"),
        "{d:?}"
    );
}

#[test]
fn a_rendered_file_that_changed_is_stale() {
    let now = plan_file(
        &desired("worker_processes 3;\n"),
        &facts(Some(OLD), Some("x")),
    );
    let d: Vec<String> = stale_hosts(&saved(), &now)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        [
            "web1: /etc/nginx/nginx.conf: its rendered content differs from the plan's (a var, a template or a secret changed)"
        ]
    );
}

#[test]
fn hosts_planned_now_and_then_must_be_the_same() {
    let mut now = saved();
    now.hosts[0].host = "web2".into();
    let d: Vec<String> = stale_hosts(&saved(), &now)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        [
            "web1: in the plan, but not selected now",
            "web2: selected now, but not in the plan"
        ]
    );
}

#[test]
fn each_input_that_changed_is_named() {
    let mut now = saved();
    now.inputs[0].hash = "changed".into(); // the inventory
    now.inputs[1].hash = "changed".into(); // roles/nginx/role.yml
    now.inputs[2].hash = "changed".into(); // a template
    now.inputs[3].hash = "0123456789ab".into(); // the release
    now.inputs.push(Input {
        kind: InputKind::Static,
        path: "roles/nginx/files/extra".into(),
        hash: "dd".into(),
    });
    let d: Vec<String> = stale_inputs(&saved(), &now)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        [
            "the inventory inventories/lab.yml changed",
            "role file roles/nginx/role.yml changed",
            "template templates/nginx/nginx.conf.tera changed",
            "static file roles/nginx/files/extra is new (the plan did not use it)",
            "the release of tier app changed: 9c81d2e4f5a6 -> 0123456789ab",
        ]
    );
}

#[test]
fn a_secret_changed_is_stale_without_saying_which_or_what() {
    let mut now = saved();
    let other = Secrets::from_pairs(&[("pw", "another-password-value")]);
    now.secrets = Key::new(&now.salt, &other).expect("salt").secrets_digest();
    let d: Vec<String> = stale_inputs(&saved(), &now)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(d.len(), 1);
    assert!(d[0].starts_with("a secret's value changed"), "{d:?}");
}

#[test]
fn the_file_holds_no_secret_nor_its_plain_hash() {
    let p = saved();
    let text = serde_json::to_string(&p).expect("json");
    assert!(!text.contains(SECRET), "{text}");
    let plain = sha256_hex(format!("admin:{SECRET}\n").as_bytes());
    assert!(
        !text.contains(&plain),
        "a sensitive file's plain hash is an oracle"
    );
    assert!(!text.contains(&sha256_hex(b"x")), "nor its live hash");
    let passwords = &p.hosts[0].files[PASSWORDS];
    assert!(passwords.rendered.starts_with(KEYED), "{passwords:?}");
    // An ordinary file's hashes are plain: they say what the file is.
    assert_eq!(p.hosts[0].files[CONF].rendered, sha256_hex(NEW.as_bytes()));
}

#[test]
fn the_key_depends_on_the_salt_and_every_secret() {
    let digest = |salt: &str, s: &Secrets| Key::new(salt, s).expect("hex").secrets_digest();
    let a = digest("00", &secrets());
    assert_eq!(a, digest("00", &secrets()));
    assert_ne!(a, digest("01", &secrets()));
    assert_ne!(
        a,
        digest("00", &Secrets::from_pairs(&[("pw", "other-value-123")]))
    );
    assert_ne!(a, digest("00", &Secrets::from_pairs(&[("pw2", SECRET)])));
    assert!(Key::new("not hex", &secrets()).is_none());
}

#[test]
fn what_the_plan_rests_on_is_recorded_per_host() {
    let b = &saved().hosts[0];
    assert_eq!(b.packages.get("nginx"), Some(&true));
    assert_eq!(
        b.units.get("nginx"),
        Some(&UnitState {
            active: "active".into(),
            enabled: "enabled".into()
        })
    );
    assert_eq!(
        b.releases.get("/opt/foobar-app").map(String::as_str),
        Some("302616ea1227")
    );
    assert_eq!(
        b.files[CONF].live.as_ref().map(|l| l.hash.clone()),
        Some(sha256_hex(OLD.as_bytes()))
    );
    assert_eq!(b.plan["host"], "web1");
}

mod file {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn written_0600_atomically_and_read_back() {
        let d = dir();
        let path = d.path().join("plan.json");
        let p = saved();
        write(&path, &p).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["plan.json"], "no temporary file is left");
        assert_eq!(read(&path).expect("read"), Some(p));
    }

    #[test]
    fn a_link_at_the_path_is_replaced_not_followed() {
        let d = dir();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").expect("w");
        let path = d.path().join("plan.json");
        std::os::unix::fs::symlink(&victim, &path).expect("ln");
        write(&path, &saved()).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("r"), "keep");
        assert!(std::fs::symlink_metadata(&path).expect("stat").is_file());
    }

    #[test]
    fn an_inventory_is_not_a_plan() {
        let d = dir();
        let yaml = d.path().join("inv.yml");
        std::fs::write(&yaml, "domain: example.test\ntiers: {}\n").expect("w");
        assert!(matches!(read(&yaml), Ok(None)));
        let json = d.path().join("inv.json");
        std::fs::write(&json, r#"{"domain": "example.test"}"#).expect("w");
        assert!(matches!(read(&json), Ok(None)));
        assert!(matches!(read(&d.path().join("missing")), Ok(None)));
    }

    /// Writes `doc` mode 0600 and reads it as a plan.
    fn read_doc(doc: &serde_json::Value) -> Result<Option<PlanFile>, PlanFileError> {
        let d = dir();
        let path = d.path().join("plan.json");
        std::fs::write(&path, doc.to_string()).expect("w");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        read(&path)
    }

    #[test]
    fn a_plan_readable_by_others_is_refused() {
        let d = dir();
        let path = d.path().join("plan.json");
        write(&path, &saved()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read(&path).expect_err("0644");
        assert!(matches!(e, PlanFileError::Mode { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn another_tool_version_or_format_or_kind_is_refused() {
        let mut doc = serde_json::to_value(saved()).expect("json");
        doc["tool_version"] = "0.0.1".into();
        let e = read_doc(&doc).expect_err("version");
        assert!(
            e.to_string().contains("made by foobar-provision 0.0.1"),
            "{e}"
        );
        let mut doc = serde_json::to_value(saved()).expect("json");
        doc["format_version"] = 99.into();
        let e = read_doc(&doc).expect_err("format");
        assert!(matches!(e, PlanFileError::FormatVersion { .. }), "{e}");
        let mut doc = serde_json::to_value(saved()).expect("json");
        doc["kind"] = "terraform plan".into();
        let e = read_doc(&doc).expect_err("kind");
        assert!(
            e.to_string()
                .contains("not a plan saved by foobar-provision"),
            "{e}"
        );
        let e = read_doc(&serde_json::json!({"format_version": 1})).expect_err("no kind");
        assert!(e.to_string().contains("it has no `kind`"), "{e}");
        let mut doc = serde_json::to_value(saved()).expect("json");
        doc["hosts"] = "broken".into();
        let e = read_doc(&doc).expect_err("broken");
        assert!(e.to_string().contains("does not read as one"), "{e}");
    }

    #[test]
    fn another_kind_is_named_as_such_whatever_its_mode() {
        let d = dir();
        let path = d.path().join("tfplan.json");
        std::fs::write(&path, r#"{"kind": "terraform plan", "format_version": 1}"#).expect("w");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read(&path).expect_err("not ours");
        assert!(matches!(e, PlanFileError::NotOurs { .. }), "{e}");
    }

    #[test]
    fn a_folder_is_no_place_for_a_plan() {
        let d = dir();
        let e = write(d.path(), &saved()).expect_err("folder");
        assert!(e.contains("a folder"), "{e}");
    }
}
