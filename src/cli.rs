//! Command-line interface.

use crate::progress::{Color, Format};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Keep the foobar.com stack exactly as its repository describes, over SSH, no agent.
///
/// Exit codes: 0 success (plan: nothing to change; apply: converged), 2 plan found
/// changes, 1 any failure (bad input, unreachable host, failed validation or health check).
#[derive(Parser, Debug)]
#[command(name = "foobar-provision", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colours and spinners: `auto` on a terminal unless NO_COLOR is set, `always`, `never`.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub color: Color,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Offline: check that the inventory, roles and templates are valid and render for
    /// every host. Secrets are not needed (placeholders are rendered).
    Check(Common),
    /// Offline: write each host's rendered files under OUT/HOST/PATH.
    ///
    /// OUT must be missing or empty, unless --replace. Files are written as new files
    /// (then renamed into place) with their mode: 0600 for sensitive files and for every
    /// file under --reveal-secrets, else 0644. Symlinks inside OUT are never followed.
    Render {
        #[command(flatten)]
        common: Common,
        /// Folder to write into (created if missing; must be empty unless --replace).
        #[arg(long)]
        out: PathBuf,
        /// Write real secret values instead of <secret:NAME> placeholders (every file is
        /// then written with mode 0600).
        #[arg(long)]
        reveal_secrets: bool,
        /// Replace an earlier render in OUT: the selected hosts' folders are deleted and
        /// written anew, other hosts' folders are kept. Refused when OUT holds anything
        /// but folders named after the inventory's hosts (it is then not a render).
        #[arg(long)]
        replace: bool,
    },
    /// Dry run: connect, gather facts and show every change (diffs, packages, service
    /// actions) without touching anything. Exit 2 when there are changes.
    ///
    /// --out FILE saves the plan for review: `apply FILE` later applies exactly it, or
    /// refuses if anything it was based on changed. --format markdown prints a summary
    /// table and each host's changes, ready to post as a pull-request comment.
    Plan(PlanArgs),
    /// Converge the selected hosts: tiers in the inventory's order. In the tier with
    /// `vip: true` one host at a time, the VIP holder last; in the others, hosts whose
    /// change reloads or restarts a serving service go in batches (`rolling:`, default one
    /// at a time, each batch's health checks passing first), drained from the load
    /// balancers around a restart where the tier says `drain:`. A second apply changes
    /// nothing.
    ///
    /// It shows the plan first and, on a terminal, asks `Apply N changes on M hosts? [y/N]`
    /// (nothing to change: no question). Without a terminal it refuses unless --yes is
    /// given. INVENTORY may instead be a plan saved by `plan --out FILE`: that plan is
    /// applied as reviewed, without a question, after checking that nothing it was based
    /// on changed (inputs, files, packages, units, releases); otherwise it refuses, naming
    /// what changed, before changing anything: run plan again.
    Apply(ApplyArgs),
    /// Switch the app back to its previous release: on every selected host whose tier
    /// deploys releases (`release:`), `current` goes back to the release before it, rolled
    /// like a deploy (one host at a time by default, each health-checked; a failed check
    /// switches that host back and stops). Nothing is uploaded and no migration runs;
    /// nothing else of the roles changes. The next `apply` deploys the inventory's source
    /// again: pin the release (`release: {pin: ID}`) to stay on it.
    Rollback(Rollback),
    /// The database's backups (roles db_backup and backup_store): run one now, list them,
    /// restore one onto a db host (checked against its sha256 and its row counts).
    #[command(subcommand)]
    Db(DbCommand),
    /// Record the host keys of the selected hosts in the inventory's known_hosts file,
    /// after printing each fingerprint. Refuses changed or revoked keys.
    ///
    /// A new key is verified before it is recorded: against --fingerprint (a different
    /// key is refused), or else, when stdin is a terminal, by showing its fingerprint and
    /// asking `Trust this key? [y/N]`. Without a terminal and without --fingerprint the key
    /// is still recorded (for scripts), but the output says it was NOT verified: compare the printed
    /// fingerprint with the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`
    /// on its console). The key types known_hosts already holds for a host are asked for
    /// first.
    Trust {
        #[command(flatten)]
        common: Common,
        /// The fingerprint the host's key must have, as `ssh-keygen -lf` prints it on the
        /// host (`SHA256:...`). A key with another one is refused; nothing is asked.
        #[arg(long, value_name = "SHA256:...")]
        fingerprint: Option<String>,
    },
    /// List the inventory's hosts: one line `NAME ADDRESS TIER` per host.
    Hosts(Common),
    /// The stack's health as its monitoring sees it, and which tier to reprovision.
    ///
    /// Connects over SSH (the inventory's settings, strict host keys) to the first host whose
    /// tier has the `prometheus` role and asks Prometheus there, on 127.0.0.1:9090, for its
    /// scrape targets, its alerts and which load balancer holds the VIP (foobar_vip_held).
    /// Prints per tier and host: up or down and which exporter is down, the VIP holder,
    /// firing (and pending) alerts with how long; for each unhealthy tier the command that
    /// reprovisions it, e.g. `foobar-provision apply inventories/lab.yml --tier web`.
    /// --limit and --tier narrow the report to those hosts and tiers.
    ///
    /// Exit 0 when every target is up and no alert fires; 1 when an alert fires, a target is
    /// down, a host is not scraped, Prometheus cannot be asked, or no tier has the
    /// `prometheus` role (the message says what to add). --format json prints one document
    /// (format_version, healthy, tiers with hosts, targets and alerts, vip_holders, alerts).
    Status(Common),
    /// Print a shell completion script: `foobar-provision completions bash > \
    /// /etc/bash_completion.d/foobar-provision` (zsh: into a folder of $fpath as
    /// `_foobar-provision`; fish: ~/.config/fish/completions/foobar-provision.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of foobar-provision, made from this help; with --out,
    /// write it and one page per subcommand into a folder instead (`man -l
    /// foobar-provision.1` reads one).
    Man {
        /// Folder to write foobar-provision.1 and foobar-provision-COMMAND.1 into (created
        /// if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The inventory file (YAML).
    pub inventory: PathBuf,
    /// Only these hosts (comma-separated): names, `*` patterns (`web*`), and `!`
    /// exclusions (`!web2`, `!db*`; only exclusions: every other host).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub limit: Vec<String>,
    /// Only hosts of these tiers (comma-separated: db, app, web, lb, ...).
    #[arg(long, value_delimiter = ',')]
    pub tier: Vec<String>,
    /// Output format. `markdown` (plan only): a summary table and each changed host's
    /// plan in a collapsible block, for a pull-request comment.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Project folder holding roles/ and templates/ (default: found from the inventory's
    /// folder upwards).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Only these roles of the selected hosts (comma-separated; check, render, plan,
    /// apply). The other roles are neither read nor changed: their files, packages and
    /// services stay as they are, their handlers and health checks do not run. A host
    /// with none of them is left out.
    #[arg(long = "role", value_delimiter = ',', value_name = "ROLES")]
    pub roles: Vec<String>,
    /// Leave these roles out (comma-separated), as if --role named every other one.
    #[arg(long = "skip-role", value_delimiter = ',', value_name = "ROLES")]
    pub skip_roles: Vec<String>,
    /// Set a var above every other (role defaults < inventory < tier < host < --var), for
    /// every host; repeatable. VALUE is JSON when it is a number, true, false, null, a
    /// list, an object or a quoted string, else the text as given. KEY is an identifier.
    /// The plan's header shows them.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub var: Vec<String>,
}

/// `db` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum DbCommand {
    /// Run a backup now on the db host (its foobar-backup.service, as the timer would),
    /// wait for it, and say what it holds and where it went.
    Backup(DbHost),
    /// The backups the backup store holds, newest first: name, when, size, tables, rows.
    List(DbHost),
    /// Restore a backup onto the db host: read from the store, checked against its
    /// manifest's size and sha256 (a damaged backup is refused before anything changes),
    /// loaded into MariaDB, then every table's row count compared with the backup's.
    /// Refuses a database that holds rows unless --force.
    Restore(DbRestore),
    /// Make a replica the primary when the primary is gone. First checks that the primary
    /// is gone (not reachable over SSH, or its MariaDB not answering; --force skips this
    /// when you have fenced it yourself), then on --host: applies everything it received
    /// from the primary, stops replicating, becomes writable. Then sets `db_primary: HOST`
    /// in the inventory's `vars:` (the file says what is now true: commit it) and applies
    /// every host but the old primary, so the app tier writes to the new one (a config
    /// change rolled and health-checked as any other). Ends by saying what to do with the
    /// old primary when it comes back.
    Promote(DbPromote),
    /// Replace a db host's data with a copy of the primary's and make it a replica: for a
    /// former primary that came back after `db promote`, or a replica whose replication
    /// broke. Its own rows are discarded (back them up first if they matter). Refuses the
    /// primary itself.
    Reseed(DbReseed),
}

#[derive(Args, Debug, Clone)]
pub struct DbPromote {
    #[command(flatten)]
    pub common: Common,
    /// The replica to promote.
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// Promote even though the primary still answers: only when you have made sure it
    /// takes no more writes (stopped, cut off), or the site ends up with two primaries.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DbReseed {
    #[command(flatten)]
    pub common: Common,
    /// The db host whose data is replaced (not the primary).
    #[arg(long, value_name = "NAME")]
    pub host: String,
}

#[derive(Args, Debug, Clone)]
pub struct DbHost {
    #[command(flatten)]
    pub common: Common,
    /// The db host (default: the first host of a tier with the db_backup role for
    /// `backup`, with the mysql role for `restore`).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DbRestore {
    #[command(flatten)]
    pub db: DbHost,
    /// The backup's name, as `db list` and `db backup` show it.
    #[arg(long, value_name = "NAME")]
    pub from: String,
    /// Overwrite a database that holds rows (its tables that the backup has are replaced).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Rollback {
    #[command(flatten)]
    pub live: Live,
    /// Go to this release (an id `plan` showed, still on the hosts) instead of the
    /// previous one.
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    /// Only show what the rollback would switch (exit 2 when it would change something).
    #[arg(long)]
    pub plan: bool,
    /// Switch without asking. On a terminal the rollback shows its plan and asks
    /// `Apply N changes on M hosts? [y/N]`; without a terminal it refuses unless --yes.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub live: Live,
    /// Save the plan to FILE (JSON, mode 0600, written atomically) for `apply FILE`: the
    /// tool's version, a hash of every input (inventory, templates, role.yml and static
    /// files, release ids), each host's facts that the plan rests on (live file hashes,
    /// packages, units, releases) and the planned changes. No secret is in it: diffs are
    /// masked, contents are never stored. Not written when a host could not be planned.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub live: Live,
    /// Apply without asking. Needed when stdin is not a terminal (CI, scripts), unless
    /// INVENTORY is a plan saved by `plan --out` (already reviewed).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Live {
    #[command(flatten)]
    pub common: Common,
    /// Hosts worked at the same time within a tier.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub forks: u16,
    /// Go on with the next tiers even when a host failed (the run still exits 1).
    #[arg(long)]
    pub keep_going: bool,
    /// Append every command run on a host, its stdin and what came back to FILE, one JSON
    /// object per line (mode 0600; the inventory's secrets masked; each stream cut at 64 KiB).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write a JUnit XML report to FILE: a test suite per host, a test case for the host
    /// (connect, facts, plan) and one per role; a failure carries its error (masked), a
    /// role not started is skipped. For CI test reports.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// After the recap, how long each host's roles and steps took (the slowest steps
    /// first). The JSON recap always has them (`timings`).
    #[arg(long)]
    pub timings: bool,
}
