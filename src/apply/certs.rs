//! A role's certificates, before its files: the host makes the private key (when it has
//! none) and a CSR, we sign the CSR with the internal CA here, and the certificate goes in
//! place like any file (temporary file, checked against the key, atomic rename). The key
//! never leaves the host: only the CSR comes back, only the certificate goes out.

use super::remote::{Remote, StepError};
use super::scripts::csr_script;
use super::{remove_backups, swap, upload, validate};
use crate::desired::DesiredFile;
use crate::pki::Ca;
use crate::plan::{CertChange, CertWork, FileAction, FileChange, RolePlan};
use crate::report::ErrorKind;
use crate::role::Notify;
use crate::shell::{printable, quote};
use crate::transport::Transport;
use std::time::SystemTime;

/// Puts the role's new certificates in place (and fixes keys' modes and owners). A
/// failure leaves the role's files and services as they were.
pub(super) async fn issue<T: Transport>(
    r: &Remote<'_, T>,
    role: &RolePlan,
) -> Result<(), StepError> {
    if role.certificates.is_empty() {
        return Ok(());
    }
    let mut signed: Vec<FileChange> = Vec::new();
    for c in &role.certificates {
        if r.is_interrupted() {
            return Err(StepError::Interrupted(format!(
                "stopped before the certificate {} (nothing of role {} was changed)",
                c.cert, role.role
            )));
        }
        let what = format!(
            "{} of the certificate {}",
            format!("{:?}", c.action).to_lowercase(),
            c.cert
        );
        r.step(&format!("certificate {}: {}", c.cert, c.reason));
        let out = r
            .must(ErrorKind::Certificate, &what, &csr_script(c), b"")
            .await?;
        if c.action == CertWork::FixKey {
            continue;
        }
        // The request is the output's CSR block (`Ca::sign` finds it, bounded).
        signed.push(signed_file(r.ca, c, &out)?);
    }
    if signed.is_empty() {
        return Ok(());
    }
    let certs = RolePlan {
        role: role.role.clone(),
        serving: false,
        interrupts: None,
        drift: None,
        files: signed,
        certificates: Vec::new(),
        paths: Vec::new(),
        release: None,
        release_error: None,
        actions: Vec::new(),
        validate: None,
        health: Vec::new(),
    };
    let staged = upload(r, &certs).await?;
    validate(r, &certs, &staged).await?;
    swap(r, &staged).await?;
    let dests: Vec<&str> = certs.files.iter().map(|f| f.path.as_str()).collect();
    remove_backups(r, &dests).await
}

/// Signs `csr` for `c`'s names and makes the certificate a file change: root's, 0644,
/// checked on the host against the key it belongs to before it is renamed into place.
fn signed_file(ca: Option<&Ca>, c: &CertChange, csr: &str) -> Result<FileChange, StepError> {
    let fail = |m: String| StepError::failed(ErrorKind::Certificate, m);
    let ca = ca.ok_or_else(|| fail(format!("{}: no internal CA is loaded", c.cert)))?;
    let pem = ca
        .sign(csr, &c.desired.spec, SystemTime::now())
        .map_err(|e| {
            fail(format!(
                "signing the request for {} with {}: {e}",
                c.cert,
                ca.signer_name()
            ))
        })?;
    let check = format!(
        "openssl x509 -in {{tmp}} -noout -checkend 0 >/dev/null || {{ echo 'the certificate is not valid now'; exit 1; }}; \
         [ \"$(openssl x509 -in {{tmp}} -noout -pubkey)\" = \"$(openssl pkey -in {key} -pubout)\" ] || \
         {{ echo 'the certificate does not match the key {shown}'; exit 1; }}",
        key = quote(&c.key),
        shown = printable(&c.key).replace('\'', ""),
    );
    let file = DesiredFile::new(
        c.cert.clone(),
        pem.into_bytes(),
        "root".into(),
        "root".into(),
        0o644,
        // What a new certificate notifies is in the role's actions already.
        Notify::None,
        Some(check),
        false,
    );
    Ok(FileChange::new_content(file, FileAction::Update))
}
