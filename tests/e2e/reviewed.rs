//! Reviewed plans against the lab, on mon1 (the monitoring host: no request goes through
//! it). A plan saved with `plan --out` for a var change (Prometheus's slow alerts wait 2m
//! instead of 1m: mon1's rules file changes, Prometheus reloads) is applied exactly by
//! `apply FILE`; and for each kind of drift between plan and apply (a file edited by hand,
//! a package removed, a unit stopped, a template changed) `apply FILE` refuses before
//! changing anything, naming the host and what changed, and the drift is left as it was.
//!
//! Each test holds the lab lock; its guard converges the lab with the repository's
//! inventory (which reinstalls, restarts and rewrites what the test changed).

use crate::support::*;

const HOST: &str = "mon1";
const RULES: &str = "/etc/prometheus/rules/foobar.yml";

/// The lab's inventory with the var change, the project (the repository's or a copy),
/// and a folder for the saved plan.
struct Reviewed {
    inventory: String,
    root: String,
    dir: tempfile::TempDir,
    _inventory_dir: tempfile::TempDir,
}

impl Reviewed {
    fn new(root: &std::path::Path) -> Reviewed {
        let (inventory, dir) = lab_inventory("reviewed", |t| {
            let from = "prometheus_alert_for_slow: 1m";
            assert!(
                t.contains(from),
                "lab.yml no longer sets {from}: update this test"
            );
            t.replace(from, "prometheus_alert_for_slow: 2m")
        });
        Reviewed {
            inventory: inventory.to_string_lossy().into_owned(),
            root: root.to_string_lossy().into_owned(),
            dir: temp_dir("reviewed-plan"),
            _inventory_dir: dir,
        }
    }

    fn plan_path(&self) -> String {
        self.dir
            .path()
            .join("plan.json")
            .to_string_lossy()
            .into_owned()
    }

    /// `plan --out` of mon1: exit 2, its rules file to change.
    fn save(&self) {
        let out = self.plan_path();
        let run = tool(&[
            "plan",
            &self.inventory,
            "--root",
            &self.root,
            "--limit",
            HOST,
            "--out",
            &out,
        ]);
        assert_eq!(run.code, 2, "plan must find the change:\n{}", run.all());
        assert!(
            run.stdout.contains(&format!("update {RULES}")),
            "{}",
            run.stdout
        );
        assert!(run.stderr.contains("plan saved to"), "{}", run.stderr);
    }

    /// `apply FILE` (no --yes: a saved plan needs none).
    fn apply(&self) -> Run {
        tool(&["apply", &self.plan_path()])
    }

    /// `apply FILE` refuses, naming `what`; mon1's rules file is as it was before.
    fn assert_refused(&self, what: &str, rules_before: &str) {
        let run = self.apply();
        assert_eq!(run.code, 1, "a stale plan must be refused:\n{}", run.all());
        assert!(
            run.stderr.contains("the plan is stale: run plan again"),
            "{}",
            run.all()
        );
        assert!(
            run.stderr.contains(what),
            "must name `{what}`:\n{}",
            run.all()
        );
        assert_eq!(inside(HOST, &format!("sha256sum {RULES}")), rules_before);
        assert!(
            !inside(HOST, &format!("cat {RULES}")).contains("for: 2m"),
            "nothing of the plan was applied"
        );
    }
}

fn rules_sum() -> String {
    inside(HOST, &format!("sha256sum {RULES}"))
}

#[test]
#[ignore = "needs the lab"]
fn a_saved_plan_is_applied_exactly() {
    let _lab = converged_lab();
    let _restore = restore();
    let r = Reviewed::new(&root());
    r.save();
    let run = r.apply();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(inside(HOST, &format!("cat {RULES}")).contains("for: 2m"));
    // Applied once: the same file again is stale (the rules file is what it planned now).
    let again = r.apply();
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(
        again
            .stderr
            .contains(&format!("{HOST}: {RULES} changed on the host")),
        "{}",
        again.all()
    );
}

#[test]
#[ignore = "needs the lab"]
fn a_file_edited_by_hand_makes_the_plan_stale() {
    let _lab = converged_lab();
    let _restore = restore();
    let r = Reviewed::new(&root());
    r.save();
    inside(HOST, &format!("echo '# edited by hand' >> {RULES}"));
    let before = rules_sum();
    r.assert_refused(&format!("{HOST}: {RULES} changed on the host"), &before);
    assert!(inside(HOST, &format!("cat {RULES}")).contains("# edited by hand"));
}

#[test]
#[ignore = "needs the lab"]
fn a_package_removed_makes_the_plan_stale() {
    let _lab = converged_lab();
    let _restore = restore();
    let r = Reviewed::new(&root());
    r.save();
    let before = rules_sum();
    inside(HOST, "dpkg -r --force-depends curl >/dev/null 2>&1");
    r.assert_refused(
        &format!("{HOST}: package curl was installed, now not installed"),
        &before,
    );
    assert_ne!(docker_exec(HOST, "command -v curl").0, 0, "left removed");
}

#[test]
#[ignore = "needs the lab"]
fn a_unit_stopped_makes_the_plan_stale() {
    let _lab = converged_lab();
    let _restore = restore();
    let r = Reviewed::new(&root());
    r.save();
    let before = rules_sum();
    inside(HOST, "systemctl stop prometheus-blackbox-exporter");
    r.assert_refused(
        &format!(
            "{HOST}: unit prometheus-blackbox-exporter was active/enabled, now inactive/enabled"
        ),
        &before,
    );
    assert_eq!(
        inside(
            HOST,
            "systemctl is-active prometheus-blackbox-exporter || true"
        )
        .trim(),
        "inactive",
        "left stopped"
    );
}

#[test]
#[ignore = "needs the lab"]
fn a_template_changed_makes_the_plan_stale() {
    let _lab = converged_lab();
    let _restore = restore();
    let project = project_copy("reviewed-template");
    let r = Reviewed::new(project.path());
    r.save();
    let before = rules_sum();
    let template = project
        .path()
        .join("templates/prometheus/foobar.rules.yml.tera");
    let mut text = std::fs::read_to_string(&template).expect("read template");
    text.push_str("\n# changed after the review\n");
    std::fs::write(&template, text).expect("write template");
    r.assert_refused(
        "template templates/prometheus/foobar.rules.yml.tera changed",
        &before,
    );
}
