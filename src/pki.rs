//! The tool's internal certificate authority.
//!
//! The CA's private key stays on the operator's machine. Every host generates its own
//! private key and sends a certificate signing request (CSR); [`Ca::sign`] turns it into a
//! certificate whose names come from the inventory, never from the request. [`decide`]
//! says whether a host's certificate must be issued, renewed or reissued.
//!
//! Everything here is pure: inputs are PEM text passed by the caller and the current
//! time is a parameter. The only outside source is the random serial number of a
//! certificate being signed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo as RcgenSpki,
};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The largest certificate, CSR or public key PEM accepted (they come from hosts).
const MAX_PEM: usize = 64 * 1024;
/// The largest CA bundle or CA key PEM accepted.
const MAX_BUNDLE: usize = 1024 * 1024;
/// The longest subject or issuer kept from a certificate read from a host.
const MAX_TEXT: usize = 256;
/// The longest common name (X.509's ub-common-name).
const MAX_CN: usize = 64;
/// The smallest RSA key a host may ask a certificate for.
const MIN_RSA_BITS: usize = 2048;
/// How far back a new certificate's validity starts, for hosts whose clock is a little late.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Seconds in a day.
const DAY: u64 = 86_400;
/// Bytes of a certificate's random serial number.
const SERIAL_LEN: usize = 16;

/// What went wrong in the certificate authority, with what to do about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    /// An input is larger than accepted.
    #[error("the {what} is {len} bytes, more than the {max} accepted: give a single PEM file")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// An input is not PEM, or a PEM block is broken.
    #[error("the {what} is not valid PEM ({detail}): give the file as PEM text")]
    Pem { what: &'static str, detail: String },
    /// No PEM block of the expected kind.
    #[error("the {what} has no \"{label}\" PEM block: give the right file")]
    NoBlock {
        what: &'static str,
        label: &'static str,
    },
    /// A CA bundle holds something other than certificates.
    #[error(
        "the CA bundle holds a \"{label}\" PEM block: it must hold only CERTIFICATE blocks \
         (keep the CA key in its own file)"
    )]
    NotACertificate { label: String },
    /// The DER inside a PEM block does not parse.
    #[error("the {what} cannot be decoded ({detail}): give a well-formed {what}")]
    Der { what: &'static str, detail: String },
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("\"{value}\" is not a DNS name or an IP address: {reason}")]
    BadSan { value: String, reason: &'static str },
    /// The CA key cannot be read.
    #[error(
        "the CA key cannot be read ({detail}): give an unencrypted PEM key \
         (\"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")"
    )]
    CaKey { detail: String },
    /// The CA key belongs to none of the bundle's certificates.
    #[error(
        "the CA key matches none of the {count} certificates of the CA bundle: \
         give the key of one of them, or add its certificate to the bundle"
    )]
    KeyMatchesNone { count: usize },
    /// A certificate of the bundle is not a CA.
    #[error(
        "certificate {index} of the CA bundle ({subject}) is not a CA (no basicConstraints \
         CA:TRUE): only CA certificates belong in the bundle"
    )]
    NotCa { index: usize, subject: String },
    /// The CA certificate that signs has expired.
    #[error(
        "the CA certificate {name} expired {when}: make a new CA certificate \
         (it may keep the same key) and put it in the bundle"
    )]
    CaExpired { name: String, when: String },
    /// A CSR's signature does not verify: the requester did not prove it holds the key.
    #[error(
        "the CSR's signature does not verify ({detail}): the host must sign its request \
         with its own private key; make a new CSR on the host"
    )]
    CsrSignature { detail: String },
    /// A CSR's RSA key is too small.
    #[error(
        "the CSR's RSA key has {bits} bits, fewer than {MIN_RSA_BITS}: make a stronger key \
         on the host"
    )]
    WeakKey { bits: usize },
    /// A CSR's key is of a kind that cannot be certified.
    #[error("the CSR's public key cannot be certified ({detail}): use an EC P-256 or RSA key")]
    UnsupportedKey { detail: String },
    /// The wanted certificate is not valid.
    #[error("cannot sign a certificate for \"{common_name}\": {detail}")]
    Spec { common_name: String, detail: String },
    /// A time cannot be represented in a certificate.
    #[error("{0}")]
    Time(String),
    /// Signing failed.
    #[error("signing the certificate failed ({0})")]
    Sign(String),
}

/// A subject alternative name of a certificate: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Ord, PartialOrd, Hash)]
pub enum San {
    /// A DNS name, e.g. `web1` or `web1.example.org`.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl San {
    /// Reads a name: an IP address if it parses as one, else a DNS name (1 to 253
    /// characters, dot-separated labels of 1 to 63 letters, digits or '-', not starting or
    /// ending with '-', the last one not all digits; no wildcard).
    pub fn parse(s: &str) -> Result<San, PkiError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        match dns_problem(s) {
            None => Ok(San::Dns(s.to_string())),
            Some(reason) => Err(PkiError::BadSan {
                value: clean(s),
                reason,
            }),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// What is wrong with `s` as a DNS name, if anything.
fn dns_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > 253 {
        return Some("a DNS name has at most 253 characters");
    }
    if s.starts_with("*.") {
        return Some("wildcard names are not issued");
    }
    for label in s.split('.') {
        if let Some(reason) = label_problem(label) {
            return Some(reason);
        }
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("its last label is all digits (a mistyped IP address?)");
    }
    None
}

/// What is wrong with one label of a DNS name, if anything.
fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        return Some("it has an empty label (two dots, or a dot at an end)");
    }
    if label.len() > 63 {
        return Some("a label has at most 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Some("only letters, digits, '-' and '.' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("a label cannot start or end with '-'");
    }
    None
}

/// The certificate a host should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The subject's common name (CN).
    pub common_name: String,
    /// The subject alternative names; at least one.
    pub sans: Vec<San>,
    /// How many days a new certificate is valid; at least 1.
    pub validity_days: u32,
}

/// The certificate authority: its trusted certificates and the key that signs.
pub struct Ca {
    /// DER of the certificate whose key signs.
    signer: Vec<u8>,
    /// DER of the bundle's other certificates, in bundle order.
    others: Vec<Vec<u8>>,
    signer_name: String,
    signer_not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("signer", &self.signer_name)
            .field("trusted", &(self.others.len() + 1))
            .field("key", &"[not shown]")
            .finish()
    }
}

impl Ca {
    /// Loads the CA. `bundle_pem`: one or more CERTIFICATE blocks, every one trusted and
    /// every one a CA (basicConstraints CA:TRUE). `key_pem`: the signing key, unencrypted
    /// PKCS#8 "PRIVATE KEY", SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY" (EC P-256,
    /// P-384 or RSA). The signer is the bundle's certificate whose public key matches the
    /// key; when several do (a CA certificate renewed with the same key), the one that
    /// expires last, the first of those on a tie. Whether the signer has expired is checked
    /// by [`Ca::sign`], which knows the time.
    pub fn load(bundle_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let mut certs = bundle_certs(bundle_pem)?;
        check_size("CA key", key_pem, MAX_BUNDLE)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::CaKey {
            detail: e.to_string(),
        })?;
        let index = signer_index(&certs, &key)?;
        let signer = certs.remove(index);
        let x509 = parse_der_cert(&signer, "CA certificate")?;
        let signer_name = clean(&x509.subject().to_string());
        let signer_not_after = asn1_to_system(x509.validity().not_after.timestamp())?;
        let issuer = Issuer::from_ca_cert_der(&signer.as_slice().into(), key).map_err(|e| {
            PkiError::Der {
                what: "CA certificate",
                detail: e.to_string(),
            }
        })?;
        Ok(Ca {
            signer,
            others: certs,
            signer_name,
            signer_not_after,
            issuer,
        })
    }

    /// The trusted certificates as PEM, the signer first then the others in bundle order,
    /// each block encoded the same way every time (64-column base64, LF line ends). The
    /// hosts get the bundle as the operator wrote it (role pki); tests read what was
    /// understood of it here.
    #[cfg(test)]
    pub fn trust_pem(&self) -> String {
        std::iter::once(&self.signer)
            .chain(&self.others)
            .map(|der| pem_encode("CERTIFICATE", der))
            .collect()
    }

    /// The signer's subject, e.g. "CN=foobar internal CA".
    pub fn signer_name(&self) -> String {
        self.signer_name.clone()
    }

    /// Signs a host's CSR and returns the certificate's PEM (the leaf only).
    ///
    /// The CSR's signature must verify (proof that the host holds the key) and its RSA key,
    /// if RSA, must have at least 2048 bits. The CSR's own subject and extensions are
    /// ignored: the certificate gets `want.common_name` as its only subject attribute,
    /// `want.sans` (duplicates dropped), a random positive 16-byte serial, a validity from
    /// `now` - 5 minutes to `now` + `want.validity_days`, key usage digitalSignature and
    /// keyEncipherment, extended key usage serverAuth and clientAuth, basicConstraints
    /// CA:FALSE and the signer's authority key identifier. Refuses an invalid `want`
    /// (no SANs, 0 days, an empty, over-long or unprintable CN) and an expired signer.
    pub fn sign(
        &self,
        csr_pem: &str,
        want: &CertSpec,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        check_spec(want)?;
        if now > self.signer_not_after {
            return Err(PkiError::CaExpired {
                name: self.signer_name.clone(),
                when: format_utc(self.signer_not_after),
            });
        }
        let spki = verified_csr_key(csr_pem)?;
        let public_key = RcgenSpki::from_der(&spki).map_err(|e| PkiError::UnsupportedKey {
            detail: e.to_string(),
        })?;
        let params = leaf_params(want, now)?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| PkiError::Sign(e.to_string()))?;
        Ok(cert.pem())
    }

    /// Whether `cert`'s signature verifies with the signer's public key (the current CA).
    pub fn issued(&self, cert: &SeenCert) -> bool {
        let (Ok(signer), Ok(seen)) = (
            parse_der_cert(&self.signer, "CA certificate"),
            parse_der_cert(&cert.der, "certificate"),
        ) else {
            return false;
        };
        seen.verify_signature(Some(signer.public_key())).is_ok()
    }
}

/// The DER of every certificate of a CA bundle, each checked to be a CA.
fn bundle_certs(bundle_pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem_blocks(bundle_pem, "CA bundle", MAX_BUNDLE)?;
    if blocks.is_empty() {
        return Err(PkiError::NoBlock {
            what: "CA bundle",
            label: "CERTIFICATE",
        });
    }
    let mut certs = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.into_iter().enumerate() {
        if block.label != "CERTIFICATE" {
            return Err(PkiError::NotACertificate {
                label: clean(&block.label),
            });
        }
        let x509 = parse_der_cert(&block.contents, "CA certificate")?;
        if !x509.is_ca() {
            return Err(PkiError::NotCa {
                index: i + 1,
                subject: clean(&x509.subject().to_string()),
            });
        }
        certs.push(block.contents);
    }
    Ok(certs)
}

/// Which certificate of the bundle holds the public half of `key`: of those that do, the
/// one that expires last (the first on a tie).
fn signer_index(certs: &[Vec<u8>], key: &KeyPair) -> Result<usize, PkiError> {
    let mut best: Option<(usize, i64)> = None;
    for (i, der) in certs.iter().enumerate() {
        let x509 = parse_der_cert(der, "CA certificate")?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            continue;
        }
        let not_after = x509.validity().not_after.timestamp();
        if best.is_none_or(|(_, latest)| not_after > latest) {
            best = Some((i, not_after));
        }
    }
    best.map(|(i, _)| i)
        .ok_or(PkiError::KeyMatchesNone { count: certs.len() })
}

/// Refuses a wanted certificate that cannot or should not be signed.
fn check_spec(want: &CertSpec) -> Result<(), PkiError> {
    let refuse = |detail: &str| {
        Err(PkiError::Spec {
            common_name: clean(&want.common_name),
            detail: detail.to_string(),
        })
    };
    let cn_chars = want.common_name.chars().count();
    if cn_chars == 0 || cn_chars > MAX_CN {
        return refuse("the common name must have 1 to 64 characters");
    }
    if want.common_name.chars().any(char::is_control) {
        return refuse("the common name has control characters");
    }
    if want.sans.is_empty() {
        return refuse("no subject alternative names: give at least one DNS name or IP");
    }
    if want.validity_days == 0 {
        return refuse("the validity must be at least 1 day");
    }
    for san in &want.sans {
        if let San::Dns(name) = san
            && let Some(reason) = dns_problem(name)
        {
            return refuse(&format!("\"{}\" is not a DNS name: {reason}", clean(name)));
        }
    }
    Ok(())
}

/// The DER SubjectPublicKeyInfo of a CSR whose signature verifies and whose key is strong
/// enough.
fn verified_csr_key(csr_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = first_block(
        csr_pem,
        "CSR",
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
    )?;
    let csr = match X509CertificationRequest::from_der(&der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(trailing("CSR")),
        Err(e) => return Err(der_error("CSR", e)),
    };
    let spki = &csr.certification_request_info.subject_pki;
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(PkiError::WeakKey {
            bits: rsa.key_size(),
        });
    }
    csr.verify_signature().map_err(|e| PkiError::CsrSignature {
        detail: e.to_string(),
    })?;
    Ok(spki.raw.to_vec())
}

/// The parameters of a host certificate for `want`, valid from `now` - 5 minutes.
fn leaf_params(want: &CertSpec, now: SystemTime) -> Result<CertificateParams, PkiError> {
    let start = unix_secs(now)?;
    let days = i64::from(want.validity_days) * DAY as i64;
    let mut params = CertificateParams::default();
    params.not_before = offset_time(start - BACKDATE.as_secs() as i64)?;
    params.not_after = offset_time(start + days)?;
    params.serial_number = Some(random_serial()?);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, want.common_name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = san_types(&want.sans)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// rcgen's names for `sans`, in order, duplicates dropped.
fn san_types(sans: &[San]) -> Result<Vec<SanType>, PkiError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(sans.len());
    for san in sans {
        if !seen.insert(san) {
            continue;
        }
        out.push(match san {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|e: rcgen::Error| PkiError::Sign(e.to_string()))?,
            ),
        });
    }
    Ok(out)
}

/// A random positive serial number of exactly 16 bytes.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| PkiError::Sign(format!("no random serial number: {e}")))?;
    Ok(positive_serial(bytes))
}

/// `bytes` made a positive serial number (top bit clear) without a leading zero byte, so
/// that it keeps all its bytes.
fn positive_serial(mut bytes: [u8; SERIAL_LEN]) -> SerialNumber {
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

/// A certificate as read from a host: untrusted input, made printable and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCert {
    /// The subject, e.g. "CN=web1" (printable, at most 256 characters).
    pub subject: String,
    /// The subject's first common name, "" if none (printable, at most 256 characters).
    pub common_name: String,
    /// The issuer, e.g. "CN=foobar internal CA" (printable, at most 256 characters).
    pub issuer: String,
    /// The serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// The DNS and IP subject alternative names, in certificate order.
    pub sans: Vec<San>,
    /// The end of the validity.
    pub not_after: SystemTime,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The whole certificate's DER, for [`Ca::issued`].
    der: Vec<u8>,
}

/// Parses the first CERTIFICATE block of `pem` (at most 64 KiB accepted). Subject,
/// common name and issuer are made printable and bounded to 256 characters; SANs other
/// than DNS names and IP addresses are ignored.
pub fn parse_cert(pem: &str) -> Result<SeenCert, PkiError> {
    let der = first_block(pem, "certificate", &["CERTIFICATE"])?;
    let x509 = parse_der_cert(&der, "certificate")?;
    let common_name = x509
        .subject()
        .iter_common_name()
        .next()
        .map(|cn| cn.as_str().map(clean).unwrap_or_default())
        .unwrap_or_default();
    let sans = match x509.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(seen_san)
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(der_error("certificate", e)),
    };
    Ok(SeenCert {
        subject: clean(&x509.subject().to_string()),
        common_name,
        issuer: clean(&x509.issuer().to_string()),
        serial_hex: hex::encode(x509.raw_serial()),
        sans,
        not_after: asn1_to_system(x509.validity().not_after.timestamp())?,
        spki_der: x509.public_key().raw.to_vec(),
        der: der.clone(),
    })
}

/// A DNS or IP name of a certificate read from a host; None for other kinds.
fn seen_san(name: &GeneralName<'_>) -> Option<San> {
    match name {
        GeneralName::DNSName(dns) => Some(San::Dns(clean(dns))),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| San::Ip(b.into())),
            16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| San::Ip(b.into())),
            _ => None,
        },
        _ => None,
    }
}

/// The DER SubjectPublicKeyInfo of a public key given as PEM "PUBLIC KEY" (what
/// `openssl pkey -pubout` prints), to compare a host's key with its certificate's.
pub fn parse_public_key(pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = first_block(pem, "public key", &["PUBLIC KEY"])?;
    match SubjectPublicKeyInfo::from_der(&der) {
        Ok(([], _)) => Ok(der),
        Ok(_) => Err(trailing("public key")),
        Err(e) => Err(der_error("public key", e)),
    }
}

/// What a host's certificate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertAction {
    /// A first certificate (no certificate, or no key: then a new key too).
    Issue,
    /// The same names, because the certificate expires soon or has expired.
    Renew,
    /// A new certificate now, because the current one is wrong.
    Reissue,
}

/// What a host's certificate needs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertDecision {
    /// What to do.
    pub action: CertAction,
    /// Why, for the plan.
    pub reason: String,
    /// Whether the host must first generate a new private key.
    pub new_key: bool,
}

/// Decides what a host's certificate needs, None when it is converged.
///
/// `seen`: the certificate found on the host (None if missing or unreadable);
/// `key_spki`: the DER SubjectPublicKeyInfo of the host's key (None if there is no key);
/// `window`: renew when the certificate expires within it. The rules, first match wins:
/// no key -> Issue with a new key; no certificate -> Issue; the certificate's key is not
/// the host's -> Reissue; not issued by the current CA -> Reissue; other names ->
/// Reissue; another common name -> Reissue; expires within the window -> Renew.
pub fn decide(
    seen: Option<&SeenCert>,
    key_spki: Option<&[u8]>,
    want: &CertSpec,
    ca: &Ca,
    now: SystemTime,
    window: Duration,
) -> Option<CertDecision> {
    let Some(key_spki) = key_spki else {
        return Some(decision(
            CertAction::Issue,
            "no private key on the host",
            true,
        ));
    };
    let Some(cert) = seen else {
        return Some(decision(CertAction::Issue, "no certificate", false));
    };
    if cert.spki_der != key_spki {
        let reason = "the certificate does not match the private key";
        return Some(decision(CertAction::Reissue, reason, false));
    }
    if !ca.issued(cert) {
        let reason = format!(
            "issued by {}, not by the current CA {}",
            cert.issuer, ca.signer_name
        );
        return Some(decision(CertAction::Reissue, &reason, false));
    }
    if let Some(reason) = names_change(&cert.sans, &want.sans) {
        return Some(decision(CertAction::Reissue, &reason, false));
    }
    if cert.common_name != want.common_name {
        let reason = format!(
            "common name changed: {} -> {}",
            cert.common_name, want.common_name
        );
        return Some(decision(CertAction::Reissue, &reason, false));
    }
    renewal(cert.not_after, now, window).map(|reason| decision(CertAction::Renew, &reason, false))
}

fn decision(action: CertAction, reason: &str, new_key: bool) -> CertDecision {
    CertDecision {
        action,
        reason: reason.to_string(),
        new_key,
    }
}

/// "names changed: +added -removed" (each sorted) if the sets of names differ.
fn names_change(seen: &[San], want: &[San]) -> Option<String> {
    let seen: BTreeSet<&San> = seen.iter().collect();
    let want: BTreeSet<&San> = want.iter().collect();
    if seen == want {
        return None;
    }
    let added = want.difference(&seen).map(|s| format!("+{s}"));
    let removed = seen.difference(&want).map(|s| format!("-{s}"));
    let changes: Vec<String> = added.chain(removed).collect();
    Some(format!("names changed: {}", changes.join(" ")))
}

/// Why a certificate ending at `not_after` must be renewed at `now`, if it must.
fn renewal(not_after: SystemTime, now: SystemTime, window: Duration) -> Option<String> {
    if not_after <= now {
        return Some(format!("expired {}", format_utc(not_after)));
    }
    // A window too long to add to `now` reaches past any certificate.
    let within = now
        .checked_add(window)
        .is_none_or(|limit| not_after <= limit);
    within.then(|| {
        format!(
            "expires {}, within the {} renewal window",
            format_utc(not_after),
            window_text(window)
        )
    })
}

/// "30-day", or "12-hour" / "90-second" for windows that are not whole days.
fn window_text(window: Duration) -> String {
    let secs = window.as_secs();
    if secs.is_multiple_of(DAY) {
        format!("{}-day", secs / DAY)
    } else if secs.is_multiple_of(3600) {
        format!("{}-hour", secs / 3600)
    } else {
        format!("{secs}-second")
    }
}

/// `s` made printable on one line (control characters shown as ^X) and bounded to
/// MAX_TEXT characters (the last one '…' when cut).
fn clean(s: &str) -> String {
    let one_line = s.replace('\n', "^J").replace('\t', "^I");
    let printable = crate::shell::printable(&one_line);
    if printable.chars().count() <= MAX_TEXT {
        return printable;
    }
    let mut cut: String = printable.chars().take(MAX_TEXT - 1).collect();
    cut.push('…');
    cut
}

/// Refuses an input larger than `max` bytes.
fn check_size(what: &'static str, input: &str, max: usize) -> Result<(), PkiError> {
    if input.len() > max {
        return Err(PkiError::TooLarge {
            what,
            len: input.len(),
            max,
        });
    }
    Ok(())
}

/// Every PEM block of `input`.
fn pem_blocks(input: &str, what: &'static str, max: usize) -> Result<Vec<Pem>, PkiError> {
    check_size(what, input, max)?;
    Pem::iter_from_buffer(input.as_bytes())
        .collect::<Result<Vec<Pem>, _>>()
        .map_err(|e| PkiError::Pem {
            what,
            detail: e.to_string(),
        })
}

/// The contents of the first PEM block of `input` labelled with one of `labels` (the
/// first is the one named in errors).
fn first_block(
    input: &str,
    what: &'static str,
    labels: &[&'static str],
) -> Result<Vec<u8>, PkiError> {
    pem_blocks(input, what, MAX_PEM)?
        .into_iter()
        .find(|block| labels.contains(&block.label.as_str()))
        .map(|block| block.contents)
        .ok_or(PkiError::NoBlock {
            what,
            label: labels.first().copied().unwrap_or_default(),
        })
}

/// A DER certificate, refused if it does not parse or has bytes after it.
fn parse_der_cert<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok(([], x509)) => Ok(x509),
        Ok(_) => Err(trailing(what)),
        Err(e) => Err(der_error(what, e)),
    }
}

fn der_error(what: &'static str, e: impl fmt::Display) -> PkiError {
    PkiError::Der {
        what,
        detail: e.to_string(),
    }
}

fn trailing(what: &'static str) -> PkiError {
    der_error(what, "unexpected bytes after its end")
}

/// `der` as a PEM block: 64-column base64, LF line ends.
#[cfg(test)]
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Seconds since 1970 of `t`; an earlier time is refused.
fn unix_secs(t: SystemTime) -> Result<i64, PkiError> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| PkiError::Time("the clock is before 1970: set the system time".into()))
}

/// The certificate time of `secs` since 1970.
fn offset_time(secs: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| {
        PkiError::Time(format!(
            "{secs} seconds since 1970 cannot be written in a certificate: \
             choose a shorter validity"
        ))
    })
}

/// A certificate's time (seconds since 1970, maybe negative) as a SystemTime.
fn asn1_to_system(secs: i64) -> Result<SystemTime, PkiError> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    t.ok_or_else(|| PkiError::Time(format!("the certificate time {secs} is out of range")))
}

/// `t` as "YYYY-MM-DD HH:MM UTC".
fn format_utc(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute()
        ),
        Err(_) => format!("{secs} seconds since 1970"),
    }
}

/// A throwaway CA and host CSRs for unit tests (here and in other modules).
#[cfg(test)]
pub(crate) mod testing {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    use time::OffsetDateTime;

    /// A self-signed EC P-256 CA named `cn`, valid 2000 to 2999: (certificate PEM, PKCS#8
    /// key PEM).
    pub(crate) fn test_ca(cn: &str) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = ca_cert(
            cn,
            &key,
            32_503_680_000,
            IsCa::Ca(BasicConstraints::Unconstrained),
        );
        (cert, key.serialize_pem())
    }

    /// A certificate for `key` named `cn`, self-signed, valid from 2000 to `not_after`
    /// (seconds since 1970), with the given basicConstraints.
    pub(crate) fn ca_cert(cn: &str, key: &KeyPair, not_after: i64, is_ca: IsCa) -> String {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = is_ca;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::from_unix_timestamp(946_684_800).unwrap();
        params.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.self_signed(key).unwrap().pem()
    }

    /// A new EC P-256 host key's CSR asking for `cn`: (CSR PEM, public key PEM).
    pub(crate) fn test_csr(cn: &str) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).unwrap();
        (csr.pem().unwrap(), key.public_key_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ca_cert, test_ca, test_csr};
    use super::*;
    use proptest::prelude::*;
    use rcgen::{BasicConstraints, PKCS_ECDSA_P256_SHA256};
    use x509_parser::extensions::ParsedExtension;

    const RSA_CA: &str = include_str!("../tests/data/pki/ca-rsa.crt");
    const RSA_CA_KEY: &str = include_str!("../tests/data/pki/ca-rsa.key");
    const RSA_CA_KEY_PKCS1: &str = include_str!("../tests/data/pki/ca-rsa.pkcs1.key");
    const EC_CA: &str = include_str!("../tests/data/pki/ca-ec.crt");
    const EC_CA_KEY_SEC1: &str = include_str!("../tests/data/pki/ca-ec.sec1.key");
    const OPENSSL_CSR: &str = include_str!("../tests/data/pki/host-ec.csr");
    const OPENSSL_PUB: &str = include_str!("../tests/data/pki/host-ec.pub");
    const OPENSSL_RSA_CSR: &str = include_str!("../tests/data/pki/host-rsa.csr");
    const OPENSSL_WEAK_CSR: &str = include_str!("../tests/data/pki/host-rsa1024.csr");

    /// 2027-01-15 08:00:00 UTC.
    const NOW_SECS: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn now() -> SystemTime {
        at(NOW_SECS)
    }

    fn dns(name: &str) -> San {
        San::Dns(name.to_string())
    }

    fn ip(addr: &str) -> San {
        San::Ip(addr.parse().unwrap())
    }

    fn spec(cn: &str, sans: &[San], days: u32) -> CertSpec {
        CertSpec {
            common_name: cn.to_string(),
            sans: sans.to_vec(),
            validity_days: days,
        }
    }

    fn web1() -> CertSpec {
        spec("web1", &[dns("web1"), ip("172.30.77.21")], 90)
    }

    fn new_ca(cn: &str) -> Ca {
        let (cert, key) = test_ca(cn);
        Ca::load(&cert, &key).unwrap()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        pem_blocks(pem, "test", MAX_BUNDLE)
            .unwrap()
            .remove(0)
            .contents
    }

    /// A host with a certificate signed now by `ca` for `want`: (certificate, key SPKI).
    fn host(ca: &Ca, want: &CertSpec, signed_at: SystemTime) -> (SeenCert, Vec<u8>) {
        let (csr, public) = test_csr("host");
        let pem = ca.sign(&csr, want, signed_at).unwrap();
        (
            parse_cert(&pem).unwrap(),
            parse_public_key(&public).unwrap(),
        )
    }

    /// Checks everything `sign` promises about `pem`, signed by `ca_pem`'s key at NOW for
    /// `want` and the key `spki`.
    fn check_leaf(pem: &str, ca_pem: &str, want: &CertSpec, spki: &[u8]) {
        let (der, ca_der) = (der_of(pem), der_of(ca_pem));
        let (x, ca) = (
            parse_der_cert(&der, "leaf").unwrap(),
            parse_der_cert(&ca_der, "ca").unwrap(),
        );
        assert!(x.verify_signature(Some(ca.public_key())).is_ok());
        assert_eq!(x.subject().to_string(), format!("CN={}", want.common_name));
        assert_eq!(x.subject().iter().count(), 1, "only the CN in the subject");
        assert_eq!(x.issuer().to_string(), ca.subject().to_string());
        assert_eq!(x.public_key().raw, spki);
        assert_eq!(parse_cert(pem).unwrap().sans, want.sans);
        assert_eq!(x.raw_serial().len(), SERIAL_LEN);
        assert_eq!(x.raw_serial()[0] & 0x80, 0, "positive serial");
        let start = NOW_SECS as i64;
        assert_eq!(x.validity().not_before.timestamp(), start - 300);
        let days = i64::from(want.validity_days) * 86_400;
        assert_eq!(x.validity().not_after.timestamp(), start + days);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign() && !ku.crl_sign());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.any && !eku.code_signing);
        assert!(!x.basic_constraints().unwrap().unwrap().value.ca);
        assert_eq!(authority_key_id(&x), subject_key_id(&ca));
    }

    fn authority_key_id(x: &X509Certificate<'_>) -> Vec<u8> {
        x.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("an authority key identifier")
    }

    fn subject_key_id(x: &X509Certificate<'_>) -> Vec<u8> {
        x.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .expect("a subject key identifier")
    }

    // ---- San ----

    #[test]
    fn san_parses_ips_before_names_and_displays_them() {
        assert_eq!(San::parse("172.30.77.21").unwrap(), ip("172.30.77.21"));
        assert_eq!(San::parse("fd00::1").unwrap(), ip("fd00::1"));
        assert_eq!(San::parse("web1").unwrap(), dns("web1"));
        assert_eq!(
            San::parse("Web-1.example.org").unwrap(),
            dns("Web-1.example.org")
        );
        assert_eq!(San::parse("a.1b").unwrap(), dns("a.1b"));
        assert_eq!(dns("web1").to_string(), "DNS:web1");
        assert_eq!(ip("172.30.77.21").to_string(), "IP:172.30.77.21");
        assert_eq!(ip("fd00::1").to_string(), "IP:fd00::1");
        assert!(dns("zzz") < ip("0.0.0.0"), "names sort before addresses");
    }

    #[test]
    fn san_length_limits_are_exact() {
        let label63 = "a".repeat(63);
        assert_eq!(San::parse(&label63).unwrap(), dns(&label63));
        assert!(San::parse(&"a".repeat(64)).is_err());
        // 4 labels of 62 + 3 dots = 251, plus ".b" = 253.
        let name253 = format!("{}.b", vec!["a".repeat(62); 4].join("."));
        assert_eq!(name253.len(), 253);
        assert_eq!(San::parse(&name253).unwrap(), dns(&name253));
        let name254 = format!("{}.bc", vec!["a".repeat(62); 4].join("."));
        assert_eq!(name254.len(), 254);
        let err = San::parse(&name254).unwrap_err();
        assert!(err.to_string().contains("at most 253"), "{err}");
    }

    #[test]
    fn san_refuses_what_is_not_a_dns_name_and_names_it() {
        for bad in [
            "",
            "-web",
            "web-",
            "a.-b",
            "a..b",
            ".web",
            "web.",
            "*.example.org",
            "web_1",
            "web 1",
            "wéb",
            "1.2.3",
            "10.0.0.256",
            "a.b.123",
        ] {
            let err = San::parse(bad).unwrap_err();
            assert!(matches!(err, PkiError::BadSan { .. }), "{bad:?}: {err:?}");
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
        }
        let err = San::parse("bad\nname\u{1b}").unwrap_err();
        assert!(err.to_string().starts_with("\"bad^Jname^[\""), "{err}");
        let err = San::parse("*.x").unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
    }

    #[test]
    fn dns_problem_reasons_are_specific() {
        assert_eq!(dns_problem(""), Some("it is empty"));
        assert_eq!(
            dns_problem("a-"),
            Some("a label cannot start or end with '-'")
        );
        assert_eq!(
            dns_problem("-a"),
            Some("a label cannot start or end with '-'")
        );
        assert_eq!(
            dns_problem("a$"),
            Some("only letters, digits, '-' and '.' are allowed")
        );
        assert!(dns_problem("a..b").unwrap().contains("empty label"));
        assert!(dns_problem("9.99").unwrap().contains("all digits"));
        assert_eq!(dns_problem("a-b.c9"), None);
        assert_eq!(dns_problem("9a"), None);
    }

    // ---- Ca::load ----

    #[test]
    fn loads_an_rcgen_ca_and_hides_its_key() {
        let (cert, key) = test_ca("foobar internal CA");
        let ca = Ca::load(&cert, &key).unwrap();
        assert_eq!(ca.signer_name(), "CN=foobar internal CA");
        assert_eq!(ca.trust_pem(), cert, "rcgen's PEM is already canonical");
        let debug = format!("{ca:?}");
        assert!(debug.contains("CN=foobar internal CA"), "{debug}");
        let key_body: String = key.lines().nth(1).unwrap().to_string();
        assert!(!debug.contains(&key_body[..20]), "{debug}");
        assert!(!debug.to_lowercase().contains("private"), "{debug}");
        assert!(!format!("{ca:#?}").contains(&key_body[..20]));
    }

    #[test]
    fn loads_openssl_cas_in_every_key_format() {
        for (cert, key, name) in [
            (RSA_CA, RSA_CA_KEY, "CN=foobar RSA test CA"),
            (RSA_CA, RSA_CA_KEY_PKCS1, "CN=foobar RSA test CA"),
            (EC_CA, EC_CA_KEY_SEC1, "CN=foobar EC test CA"),
        ] {
            let ca = Ca::load(cert, key).unwrap();
            assert_eq!(ca.signer_name(), name);
            assert_eq!(der_of(&ca.trust_pem()), der_of(cert));
        }
    }

    #[test]
    fn refuses_a_key_that_matches_no_certificate() {
        let (a, _) = test_ca("a");
        let (b, _) = test_ca("b");
        let (_, other_key) = test_ca("c");
        let err = Ca::load(&format!("{a}{b}"), &other_key).unwrap_err();
        assert_eq!(err, PkiError::KeyMatchesNone { count: 2 });
        assert!(
            err.to_string()
                .starts_with("the CA key matches none of the 2 certificates of the CA bundle")
        );
        assert_eq!(
            Ca::load(RSA_CA, EC_CA_KEY_SEC1).unwrap_err(),
            PkiError::KeyMatchesNone { count: 1 }
        );
    }

    #[test]
    fn refuses_a_bundle_certificate_that_is_not_a_ca() {
        let (ca, _) = test_ca("real CA");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        for is_ca in [IsCa::ExplicitNoCa, IsCa::NoCa] {
            let leaf = ca_cert("not a CA", &key, 32_503_680_000, is_ca);
            let err = Ca::load(&format!("{ca}{leaf}"), &key.serialize_pem()).unwrap_err();
            let want = PkiError::NotCa {
                index: 2,
                subject: "CN=not a CA".into(),
            };
            assert_eq!(err, want);
        }
        let leaf = ca_cert("first", &key, 32_503_680_000, IsCa::ExplicitNoCa);
        let err = Ca::load(&leaf, &key.serialize_pem()).unwrap_err();
        assert!(matches!(err, PkiError::NotCa { index: 1, .. }), "{err:?}");
    }

    #[test]
    fn refuses_broken_bundles_and_keys() {
        let (cert, key) = test_ca("ca");
        let err = Ca::load("", &key).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::NoBlock {
                    what: "CA bundle",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(Ca::load("not pem at all", &key).is_err());
        let err = Ca::load(&format!("{cert}{key}"), &key).unwrap_err();
        assert_eq!(
            err,
            PkiError::NotACertificate {
                label: "PRIVATE KEY".into()
            }
        );
        let broken = cert.replace("-----END CERTIFICATE-----\n", "");
        assert!(matches!(
            Ca::load(&broken, &key).unwrap_err(),
            PkiError::Pem { .. }
        ));
        let err = Ca::load(&cert, "garbage").unwrap_err();
        assert!(matches!(err, PkiError::CaKey { .. }), "{err:?}");
        let err = Ca::load(&cert, &cert).unwrap_err();
        assert!(matches!(err, PkiError::CaKey { .. }), "{err:?}");
        let huge = format!("{cert}{}", " ".repeat(MAX_BUNDLE));
        assert!(matches!(
            Ca::load(&huge, &key).unwrap_err(),
            PkiError::TooLarge { .. }
        ));
        let huge_key = format!("{key}{}", " ".repeat(MAX_BUNDLE));
        assert!(matches!(
            Ca::load(&cert, &huge_key).unwrap_err(),
            PkiError::TooLarge { what: "CA key", .. }
        ));
    }

    #[test]
    fn bundle_size_limit_is_exact() {
        let (cert, key) = test_ca("ca");
        let fits = format!("{cert}{}", " ".repeat(MAX_BUNDLE - cert.len()));
        assert!(Ca::load(&fits, &key).is_ok());
        let over = format!("{fits} ");
        let err = Ca::load(&over, &key).unwrap_err();
        assert_eq!(
            err,
            PkiError::TooLarge {
                what: "CA bundle",
                len: MAX_BUNDLE + 1,
                max: MAX_BUNDLE
            }
        );
        assert!(
            err.to_string()
                .contains("1048577 bytes, more than the 1048576"),
            "{err}"
        );
    }

    #[test]
    fn trust_pem_puts_the_signer_first_then_the_bundle_order() {
        let (a, _) = test_ca("a");
        let (b, b_key) = test_ca("b");
        let (c, _) = test_ca("c");
        let ca = Ca::load(&format!("{a}{b}{c}"), &b_key).unwrap();
        assert_eq!(ca.trust_pem(), format!("{b}{a}{c}"));
        assert_eq!(ca.signer_name(), "CN=b");
        let debug = format!("{ca:?}");
        assert!(debug.contains("trusted: 3"), "{debug}");
    }

    #[test]
    fn trust_pem_is_canonical_whatever_the_input_layout() {
        let (a, a_key) = test_ca("a");
        let crlf = format!("junk before\r\n{}", a.replace('\n', "\r\n"));
        let ca = Ca::load(&crlf, &a_key).unwrap();
        assert_eq!(ca.trust_pem(), a);
        let b64: String = a.lines().filter(|l| !l.starts_with("-----")).collect();
        let one_line = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(Ca::load(&one_line, &a_key).unwrap().trust_pem(), a);
        assert!(a.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn pem_encode_wraps_at_64_columns() {
        assert_eq!(pem_encode("X", &[]), "-----BEGIN X-----\n-----END X-----\n");
        let pem = pem_encode("X", &[0u8; 48]);
        assert_eq!(
            pem,
            format!("-----BEGIN X-----\n{}\n-----END X-----\n", "A".repeat(64))
        );
        let pem = pem_encode("X", &[0u8; 49]);
        assert_eq!(
            pem,
            format!(
                "-----BEGIN X-----\n{}\nAA==\n-----END X-----\n",
                "A".repeat(64)
            )
        );
    }

    #[test]
    fn the_signer_is_the_matching_certificate_that_expires_last() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ca_kind = || IsCa::Ca(BasicConstraints::Unconstrained);
        let old = ca_cert("CA 2030", &key, 1_900_000_000, ca_kind());
        let new = ca_cert("CA 2040", &key, 2_200_000_000, ca_kind());
        let same = ca_cert("CA 2040 bis", &key, 2_200_000_000, ca_kind());
        let key_pem = key.serialize_pem();
        let ca = Ca::load(&format!("{old}{new}"), &key_pem).unwrap();
        assert_eq!(ca.signer_name(), "CN=CA 2040");
        assert_eq!(ca.trust_pem(), format!("{new}{old}"));
        let ca = Ca::load(&format!("{new}{old}"), &key_pem).unwrap();
        assert_eq!(ca.signer_name(), "CN=CA 2040");
        let ca = Ca::load(&format!("{old}{same}{new}"), &key_pem).unwrap();
        assert_eq!(ca.signer_name(), "CN=CA 2040 bis", "first of a tie");
    }

    // ---- Ca::sign ----

    #[test]
    fn signs_an_rcgen_csr_with_what_is_wanted_not_what_is_asked() {
        let (ca_pem, ca_key) = test_ca("foobar internal CA");
        let ca = Ca::load(&ca_pem, &ca_key).unwrap();
        let (csr, public) = test_csr("asked-for-name");
        let want = web1();
        let pem = ca.sign(&csr, &want, now()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(pem.matches("BEGIN").count(), 1, "the leaf only");
        check_leaf(&pem, &ca_pem, &want, &parse_public_key(&public).unwrap());
        let seen = parse_cert(&pem).unwrap();
        assert!(ca.issued(&seen));
        assert_eq!(seen.issuer, "CN=foobar internal CA");
    }

    #[test]
    fn signs_an_openssl_csr_with_ec_and_rsa_cas() {
        let spki = parse_public_key(OPENSSL_PUB).unwrap();
        let want = spec("web1", &[ip("172.30.77.21"), dns("web1.lab")], 30);
        let (rcgen_ca, rcgen_key) = test_ca("rcgen CA");
        for (ca_pem, key) in [
            (rcgen_ca.as_str(), rcgen_key.as_str()),
            (EC_CA, EC_CA_KEY_SEC1),
            (RSA_CA, RSA_CA_KEY),
            (RSA_CA, RSA_CA_KEY_PKCS1),
        ] {
            let ca = Ca::load(ca_pem, key).unwrap();
            let pem = ca.sign(OPENSSL_CSR, &want, now()).unwrap();
            check_leaf(&pem, ca_pem, &want, &spki);
            let seen = parse_cert(&pem).unwrap();
            assert_eq!(seen.spki_der, spki);
            assert!(ca.issued(&seen));
        }
    }

    #[test]
    fn ignores_the_extensions_an_openssl_rsa_csr_asks_for() {
        let ca = Ca::load(RSA_CA, RSA_CA_KEY).unwrap();
        let want = spec("db1", &[dns("db1")], 10);
        let pem = ca.sign(OPENSSL_RSA_CSR, &want, now()).unwrap();
        let csr_der = der_of(OPENSSL_RSA_CSR);
        let (_, csr) = X509CertificationRequest::from_der(&csr_der).unwrap();
        let spki = csr.certification_request_info.subject_pki.raw;
        check_leaf(&pem, RSA_CA, &want, spki);
    }

    #[test]
    fn serials_are_random() {
        let ca = new_ca("ca");
        let (csr, _) = test_csr("x");
        let a = parse_cert(&ca.sign(&csr, &web1(), now()).unwrap()).unwrap();
        let b = parse_cert(&ca.sign(&csr, &web1(), now()).unwrap()).unwrap();
        assert_ne!(a.serial_hex, b.serial_hex);
        assert_eq!(a.serial_hex.len(), 32);
    }

    #[test]
    fn random_serial_is_positive_and_sixteen_bytes() {
        for _ in 0..64 {
            let bytes = random_serial().unwrap().to_bytes();
            assert_eq!(bytes.len(), SERIAL_LEN);
            assert!(bytes[0] >= 1 && bytes[0] <= 0x7f, "{bytes:?}");
        }
    }

    #[test]
    fn positive_serial_clears_the_sign_bit_and_keeps_sixteen_bytes() {
        let mut max = [0xffu8; SERIAL_LEN];
        assert_eq!(positive_serial(max).to_bytes()[0], 0x7f);
        max[0] = 0x80;
        assert_eq!(positive_serial(max).to_bytes()[0], 0x01);
        let zeros = positive_serial([0; SERIAL_LEN]).to_bytes();
        assert_eq!(zeros[0], 0x01);
        assert_eq!(zeros[1..], [0; SERIAL_LEN - 1]);
        let mut mid = [7u8; SERIAL_LEN];
        mid[0] = 0x42;
        assert_eq!(positive_serial(mid).to_bytes(), mid.to_vec());
    }

    #[test]
    fn duplicate_wanted_names_appear_once() {
        let ca = new_ca("ca");
        let (csr, _) = test_csr("x");
        let want = spec("web1", &[dns("web1"), ip("10.0.0.1"), dns("web1")], 5);
        let seen = parse_cert(&ca.sign(&csr, &want, now()).unwrap()).unwrap();
        assert_eq!(seen.sans, vec![dns("web1"), ip("10.0.0.1")]);
    }

    /// `pem`'s first block with one byte of its DER changed.
    fn tamper(pem: &str, label: &str, index: impl Fn(&[u8]) -> usize) -> String {
        let mut der = der_of(pem);
        let i = index(&der);
        der[i] ^= 0x01;
        pem_encode(label, &der)
    }

    #[test]
    fn refuses_a_tampered_csr() {
        let ca = new_ca("ca");
        let (rcgen_csr, _) = test_csr("web1");
        for csr in [OPENSSL_CSR, OPENSSL_RSA_CSR, rcgen_csr.as_str()] {
            let last = tamper(csr, "CERTIFICATE REQUEST", |der| der.len() - 1);
            let err = ca.sign(&last, &web1(), now()).unwrap_err();
            assert!(matches!(err, PkiError::CsrSignature { .. }), "{err:?}");
            assert!(err.to_string().contains("does not verify"), "{err}");
        }
        let subject = tamper(OPENSSL_CSR, "CERTIFICATE REQUEST", |der| {
            der.windows(4).position(|w| w == b"web1").unwrap() + 3
        });
        let err = ca.sign(&subject, &web1(), now()).unwrap_err();
        assert!(matches!(err, PkiError::CsrSignature { .. }), "{err:?}");
    }

    #[test]
    fn refuses_a_weak_rsa_key() {
        let ca = new_ca("ca");
        let err = ca.sign(OPENSSL_WEAK_CSR, &web1(), now()).unwrap_err();
        assert_eq!(err, PkiError::WeakKey { bits: 1024 });
    }

    #[test]
    fn refuses_what_is_not_a_csr() {
        let ca = new_ca("ca");
        let (cert_pem, _) = test_ca("x");
        for csr in ["", "garbage", cert_pem.as_str(), OPENSSL_PUB] {
            let err = ca.sign(csr, &web1(), now()).unwrap_err();
            assert_eq!(
                err,
                PkiError::NoBlock {
                    what: "CSR",
                    label: "CERTIFICATE REQUEST"
                }
            );
        }
        let new_label = OPENSSL_CSR.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
        assert!(ca.sign(&new_label, &web1(), now()).is_ok());
        let mut der = der_of(OPENSSL_CSR);
        der.push(0);
        let trailing_pem = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca.sign(&trailing_pem, &web1(), now()).unwrap_err();
        assert!(matches!(err, PkiError::Der { what: "CSR", .. }), "{err:?}");
        let junk = pem_encode("CERTIFICATE REQUEST", b"junk");
        let err = ca.sign(&junk, &web1(), now()).unwrap_err();
        assert!(matches!(err, PkiError::Der { what: "CSR", .. }), "{err:?}");
    }

    #[test]
    fn refuses_an_invalid_spec() {
        let ca = new_ca("ca");
        let (csr, _) = test_csr("x");
        let refused = |want: CertSpec| match ca.sign(&csr, &want, now()).unwrap_err() {
            PkiError::Spec { detail, .. } => detail,
            other => panic!("{other:?}"),
        };
        assert!(refused(spec("web1", &[], 90)).contains("no subject alternative names"));
        assert!(refused(spec("web1", &[dns("web1")], 0)).contains("at least 1 day"));
        assert!(refused(spec("", &[dns("web1")], 90)).contains("1 to 64"));
        assert!(refused(spec(&"é".repeat(65), &[dns("web1")], 90)).contains("1 to 64"));
        assert!(refused(spec("we\u{7}b", &[dns("web1")], 90)).contains("control"));
        assert!(refused(spec("web1", &[dns("bad name")], 90)).contains("\"bad name\""));
        assert!(
            ca.sign(&csr, &spec(&"é".repeat(64), &[dns("w")], 1), now())
                .is_ok()
        );
        assert!(
            ca.sign(&csr, &spec("w", &[ip("10.0.0.1")], 1), now())
                .is_ok()
        );
    }

    #[test]
    fn refuses_times_a_certificate_cannot_hold() {
        let ca = new_ca("ca");
        let (csr, _) = test_csr("x");
        let long = spec("web1", &[dns("web1")], u32::MAX);
        assert!(matches!(
            ca.sign(&csr, &long, now()),
            Err(PkiError::Time(_))
        ));
        let before_1970 = UNIX_EPOCH - Duration::from_secs(86_400);
        assert!(matches!(
            ca.sign(&csr, &web1(), before_1970),
            Err(PkiError::Time(_))
        ));
        let at_epoch = parse_cert(&ca.sign(&csr, &web1(), UNIX_EPOCH).unwrap()).unwrap();
        assert_eq!(at_epoch.not_after, at(90 * 86_400));
    }

    #[test]
    fn an_expired_signer_does_not_sign() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = ca_cert(
            "old CA",
            &key,
            NOW_SECS as i64,
            IsCa::Ca(BasicConstraints::Unconstrained),
        );
        let ca = Ca::load(&cert, &key.serialize_pem()).unwrap();
        let (csr, _) = test_csr("x");
        assert!(
            ca.sign(&csr, &web1(), now()).is_ok(),
            "valid through not_after"
        );
        let err = ca.sign(&csr, &web1(), at(NOW_SECS + 1)).unwrap_err();
        assert_eq!(
            err,
            PkiError::CaExpired {
                name: "CN=old CA".into(),
                when: "2027-01-15 08:00 UTC".into()
            }
        );
    }

    // ---- parse_cert / parse_public_key ----

    #[test]
    fn parses_a_certificate() {
        let ca = new_ca("the CA");
        let (csr, public) = test_csr("x");
        let want = spec("web1", &[ip("fd00::21"), dns("web1"), ip("10.1.2.3")], 90);
        let pem = ca.sign(&csr, &want, now()).unwrap();
        let seen = parse_cert(&format!("leading text\n{public}{pem}")).unwrap();
        assert_eq!(seen.subject, "CN=web1");
        assert_eq!(seen.common_name, "web1");
        assert_eq!(seen.issuer, "CN=the CA");
        assert_eq!(seen.sans, want.sans);
        assert_eq!(seen.not_after, at(NOW_SECS + 90 * 86_400));
        assert_eq!(seen.spki_der, parse_public_key(&public).unwrap());
        assert_eq!(seen.der, der_of(&pem));
        let x = parse_der_cert(&seen.der, "c").unwrap();
        assert_eq!(seen.serial_hex, hex::encode(x.raw_serial()));
        assert!(
            seen.serial_hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn parses_an_openssl_ca_certificate() {
        let seen = parse_cert(RSA_CA).unwrap();
        assert_eq!(seen.subject, "CN=foobar RSA test CA");
        assert_eq!(seen.issuer, seen.subject);
        assert!(seen.sans.is_empty());
        assert!(Ca::load(RSA_CA, RSA_CA_KEY).unwrap().issued(&seen));
        assert!(!new_ca("other").issued(&seen));
    }

    /// A certificate whose subject and SANs are given by the test.
    fn odd_cert(cn: &str, sans: Vec<SanType>) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "Org");
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn keeps_only_dns_and_ip_names() {
        let sans = vec![
            SanType::Rfc822Name("a@b.c".try_into().unwrap()),
            SanType::DnsName("web1".try_into().unwrap()),
            SanType::URI("https://x".try_into().unwrap()),
            SanType::IpAddress("10.0.0.9".parse().unwrap()),
        ];
        let seen = parse_cert(&odd_cert("web1", sans)).unwrap();
        assert_eq!(seen.sans, vec![dns("web1"), ip("10.0.0.9")]);
        assert_eq!(seen.subject, "CN=web1, O=Org");
        assert_eq!(seen.common_name, "web1");
    }

    #[test]
    fn seen_san_reads_addresses_by_length() {
        assert_eq!(
            seen_san(&GeneralName::IPAddress(&[10, 0, 0, 1])),
            Some(ip("10.0.0.1"))
        );
        let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(seen_san(&GeneralName::IPAddress(&v6)), Some(ip("fd00::1")));
        assert_eq!(seen_san(&GeneralName::IPAddress(&[1, 2, 3])), None);
        assert_eq!(seen_san(&GeneralName::IPAddress(&[0; 8])), None);
        assert_eq!(seen_san(&GeneralName::DNSName("a\u{1b}")), Some(dns("a^[")));
        assert_eq!(seen_san(&GeneralName::RFC822Name("a@b")), None);
    }

    #[test]
    fn makes_hostile_subjects_printable_and_short() {
        let seen = parse_cert(&odd_cert("evil\u{1b}[31m\nname\t!", vec![])).unwrap();
        assert_eq!(seen.common_name, "evil^[[31m^Jname^I!");
        assert!(
            !seen.subject.chars().any(char::is_control),
            "{:?}",
            seen.subject
        );
        let seen = parse_cert(&odd_cert(&"x".repeat(300), vec![])).unwrap();
        assert_eq!(seen.subject.chars().count(), 256);
        assert!(seen.subject.ends_with('…'));
        assert_eq!(seen.common_name.chars().count(), 256);
    }

    #[test]
    fn clean_bounds_at_exactly_256_characters() {
        assert_eq!(clean(&"é".repeat(256)), "é".repeat(256));
        assert_eq!(clean(&"é".repeat(257)), format!("{}…", "é".repeat(255)));
        assert_eq!(clean("a\tb\nc\u{0}"), "a^Ib^Jc^@");
    }

    #[test]
    fn refuses_garbage_and_oversized_certificates() {
        let (cert, _) = test_ca("ca");
        for bad in ["", "garbage", OPENSSL_CSR, OPENSSL_PUB] {
            let err = parse_cert(bad).unwrap_err();
            assert_eq!(
                err,
                PkiError::NoBlock {
                    what: "certificate",
                    label: "CERTIFICATE"
                }
            );
        }
        let junk = pem_encode("CERTIFICATE", b"not DER");
        assert!(matches!(parse_cert(&junk), Err(PkiError::Der { .. })));
        let mut der = der_of(&cert);
        der.extend_from_slice(&[0, 0]);
        let err = parse_cert(&pem_encode("CERTIFICATE", &der)).unwrap_err();
        assert!(
            err.to_string().contains("unexpected bytes after its end"),
            "{err}"
        );
        let bad_b64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(parse_cert(bad_b64), Err(PkiError::Pem { .. })));
    }

    #[test]
    fn certificate_size_limit_is_exact() {
        let (cert, _) = test_ca("ca");
        let fits = format!("{cert}{}", "\n".repeat(MAX_PEM - cert.len()));
        assert!(parse_cert(&fits).is_ok());
        let err = parse_cert(&format!("{fits}\n")).unwrap_err();
        assert_eq!(
            err,
            PkiError::TooLarge {
                what: "certificate",
                len: MAX_PEM + 1,
                max: MAX_PEM
            }
        );
        assert!(
            err.to_string().contains("65537 bytes, more than the 65536"),
            "{err}"
        );
    }

    #[test]
    fn parses_public_keys() {
        let spki = parse_public_key(OPENSSL_PUB).unwrap();
        assert_eq!(spki, der_of(OPENSSL_PUB));
        assert!(matches!(
            parse_public_key(OPENSSL_CSR),
            Err(PkiError::NoBlock {
                what: "public key",
                label: "PUBLIC KEY"
            })
        ));
        let junk = pem_encode("PUBLIC KEY", b"junk");
        assert!(matches!(parse_public_key(&junk), Err(PkiError::Der { .. })));
        let mut der = spki.clone();
        der.push(0);
        let err = parse_public_key(&pem_encode("PUBLIC KEY", &der)).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Der {
                    what: "public key",
                    ..
                }
            ),
            "{err:?}"
        );
        let huge = format!("{OPENSSL_PUB}{}", " ".repeat(MAX_PEM));
        assert!(matches!(
            parse_public_key(&huge),
            Err(PkiError::TooLarge { .. })
        ));
    }

    #[test]
    fn certificate_times_convert_both_sides_of_1970() {
        assert_eq!(asn1_to_system(0).unwrap(), UNIX_EPOCH);
        assert_eq!(asn1_to_system(5).unwrap(), at(5));
        assert_eq!(
            asn1_to_system(-5).unwrap(),
            UNIX_EPOCH - Duration::from_secs(5)
        );
        assert_eq!(format_utc(at(NOW_SECS + 59)), "2027-01-15 08:00 UTC");
        assert_eq!(format_utc(at(NOW_SECS + 60)), "2027-01-15 08:01 UTC");
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(60)),
            "1969-12-31 23:59 UTC"
        );
    }

    // ---- decide ----

    const WINDOW: Duration = Duration::from_secs(30 * 86_400);

    fn decided(action: CertAction, reason: &str, new_key: bool) -> Option<CertDecision> {
        Some(CertDecision {
            action,
            reason: reason.to_string(),
            new_key,
        })
    }

    #[test]
    fn no_key_means_a_new_key_even_with_a_certificate() {
        let ca = new_ca("ca");
        let (cert, _) = host(&ca, &web1(), now());
        let want = decided(CertAction::Issue, "no private key on the host", true);
        assert_eq!(decide(Some(&cert), None, &web1(), &ca, now(), WINDOW), want);
        assert_eq!(decide(None, None, &web1(), &ca, now(), WINDOW), want);
    }

    #[test]
    fn no_certificate_means_issue_with_the_host_key() {
        let ca = new_ca("ca");
        let (_, spki) = host(&ca, &web1(), now());
        assert_eq!(
            decide(None, Some(&spki), &web1(), &ca, now(), WINDOW),
            decided(CertAction::Issue, "no certificate", false)
        );
    }

    #[test]
    fn a_converged_host_is_left_alone() {
        let ca = new_ca("ca");
        let (cert, spki) = host(&ca, &web1(), now());
        assert_eq!(
            decide(Some(&cert), Some(&spki), &web1(), &ca, now(), WINDOW),
            None
        );
    }

    #[test]
    fn a_key_mismatch_comes_before_everything_else() {
        let ca = new_ca("ca");
        let other_ca = new_ca("other");
        let (cert, _) = host(&other_ca, &web1(), now());
        let (_, other_spki) = host(&ca, &web1(), now());
        let changed = spec("web9", &[dns("web9")], 90);
        let expired = at(NOW_SECS + 365 * 86_400);
        assert_eq!(
            decide(
                Some(&cert),
                Some(&other_spki),
                &changed,
                &ca,
                expired,
                WINDOW
            ),
            decided(
                CertAction::Reissue,
                "the certificate does not match the private key",
                false
            )
        );
    }

    #[test]
    fn a_certificate_of_the_old_ca_is_reissued_naming_it() {
        let (old, old_key) = test_ca("old CA");
        let (new, new_key) = test_ca("new CA");
        let old_ca = Ca::load(&old, &old_key).unwrap();
        let ca = Ca::load(&format!("{old}{new}"), &new_key).unwrap();
        assert_eq!(ca.trust_pem(), format!("{new}{old}"));
        let (cert, spki) = host(&old_ca, &web1(), now());
        assert!(!ca.issued(&cert));
        assert_eq!(
            decide(Some(&cert), Some(&spki), &web1(), &ca, now(), WINDOW),
            decided(
                CertAction::Reissue,
                "issued by CN=old CA, not by the current CA CN=new CA",
                false
            )
        );
    }

    #[test]
    fn a_certificate_claiming_the_ca_name_but_signed_by_another_key_is_reissued() {
        let real = new_ca("foobar CA");
        let impostor = new_ca("foobar CA");
        let (cert, spki) = host(&impostor, &web1(), now());
        assert_eq!(cert.issuer, real.signer_name());
        let got = decide(Some(&cert), Some(&spki), &web1(), &real, now(), WINDOW).unwrap();
        assert_eq!(got.action, CertAction::Reissue);
        assert!(
            got.reason.starts_with("issued by CN=foobar CA"),
            "{}",
            got.reason
        );
    }

    #[test]
    fn changed_names_are_listed_added_then_removed_sorted() {
        let ca = new_ca("ca");
        let old = spec("web1", &[ip("10.0.0.1"), dns("web1"), ip("10.0.0.0")], 90);
        let (cert, spki) = host(&ca, &old, now());
        let want = spec("web1", &[dns("web1"), dns("web3"), dns("web2")], 90);
        assert_eq!(
            decide(Some(&cert), Some(&spki), &want, &ca, now(), WINDOW),
            decided(
                CertAction::Reissue,
                "names changed: +DNS:web2 +DNS:web3 -IP:10.0.0.0 -IP:10.0.0.1",
                false
            )
        );
        let only_added = spec(
            "web1",
            &[ip("10.0.0.1"), dns("web1"), ip("10.0.0.0"), dns("x")],
            90,
        );
        assert_eq!(
            decide(Some(&cert), Some(&spki), &only_added, &ca, now(), WINDOW)
                .unwrap()
                .reason,
            "names changed: +DNS:x"
        );
    }

    #[test]
    fn names_compare_as_sets() {
        let ca = new_ca("ca");
        let (cert, spki) = host(&ca, &web1(), now());
        let shuffled = spec(
            "web1",
            &[ip("172.30.77.21"), dns("web1"), ip("172.30.77.21")],
            90,
        );
        assert_eq!(
            decide(Some(&cert), Some(&spki), &shuffled, &ca, now(), WINDOW),
            None
        );
        assert_eq!(names_change(&[dns("a"), dns("a")], &[dns("a")]), None);
        assert_eq!(
            names_change(&[dns("a")], &[]),
            Some("names changed: -DNS:a".to_string())
        );
    }

    #[test]
    fn a_changed_common_name_is_reissued_after_names() {
        let ca = new_ca("ca");
        let (cert, spki) = host(&ca, &web1(), now());
        let renamed = spec("web1.lab", &web1().sans, 90);
        let late = at(NOW_SECS + 89 * 86_400);
        assert_eq!(
            decide(Some(&cert), Some(&spki), &renamed, &ca, late, WINDOW),
            decided(
                CertAction::Reissue,
                "common name changed: web1 -> web1.lab",
                false
            )
        );
        let both = spec("web1.lab", &[dns("web1")], 90);
        let got = decide(Some(&cert), Some(&spki), &both, &ca, now(), WINDOW).unwrap();
        assert_eq!(got.reason, "names changed: -IP:172.30.77.21");
    }

    #[test]
    fn the_renewal_window_boundary_is_exact() {
        let ca = new_ca("ca");
        // Signed at NOW for 90 days: not_after = NOW + 90 days = 2027-04-15 08:00 UTC.
        let (cert, spki) = host(&ca, &web1(), now());
        let not_after = NOW_SECS + 90 * 86_400;
        let on_edge = at(not_after - 30 * 86_400);
        assert_eq!(
            decide(Some(&cert), Some(&spki), &web1(), &ca, on_edge, WINDOW),
            decided(
                CertAction::Renew,
                "expires 2027-04-15 08:00 UTC, within the 30-day renewal window",
                false
            )
        );
        let a_second_before = at(not_after - 30 * 86_400 - 1);
        assert_eq!(
            decide(
                Some(&cert),
                Some(&spki),
                &web1(),
                &ca,
                a_second_before,
                WINDOW
            ),
            None
        );
        assert_eq!(
            decide(
                Some(&cert),
                Some(&spki),
                &web1(),
                &ca,
                now(),
                Duration::ZERO
            ),
            None
        );
    }

    #[test]
    fn an_expired_certificate_says_so() {
        let ca = new_ca("ca");
        let (cert, spki) = host(&ca, &web1(), now());
        let not_after = NOW_SECS + 90 * 86_400;
        let renew = |t: u64| decide(Some(&cert), Some(&spki), &web1(), &ca, at(t), WINDOW);
        let expired = decided(CertAction::Renew, "expired 2027-04-15 08:00 UTC", false);
        assert_eq!(renew(not_after), expired);
        assert_eq!(renew(not_after + 86_400), expired);
        let got = renew(not_after - 1).unwrap();
        assert_eq!(got.action, CertAction::Renew);
        assert!(
            got.reason.starts_with("expires 2027-04-15"),
            "{}",
            got.reason
        );
    }

    #[test]
    fn renewal_handles_any_window() {
        let t = at(NOW_SECS);
        assert_eq!(
            renewal(t, at(0), Duration::MAX).unwrap(),
            format!(
                "expires 2027-01-15 08:00 UTC, within the {} renewal window",
                window_text(Duration::MAX)
            )
        );
        assert_eq!(
            renewal(t, at(NOW_SECS - 3600), Duration::from_secs(3599)),
            None
        );
        assert!(renewal(t, at(NOW_SECS - 3600), Duration::from_secs(3600)).is_some());
        assert_eq!(window_text(Duration::from_secs(30 * 86_400)), "30-day");
        assert_eq!(window_text(Duration::ZERO), "0-day");
        assert_eq!(window_text(Duration::from_secs(12 * 3600)), "12-hour");
        assert_eq!(window_text(Duration::from_secs(36 * 3600)), "36-hour");
        assert_eq!(window_text(Duration::from_secs(90)), "90-second");
    }

    #[test]
    fn decisions_serialize_in_lowercase() {
        let d = decided(CertAction::Renew, "r", false).unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"action":"renew","reason":"r","new_key":false}"#
        );
        assert_eq!(
            serde_json::to_string(&CertAction::Issue).unwrap(),
            r#""issue""#
        );
        assert_eq!(
            serde_json::to_string(&CertAction::Reissue).unwrap(),
            r#""reissue""#
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let err = PkiError::CsrSignature { detail: "x".into() };
        assert!(err.to_string().contains("make a new CSR on the host"));
        let err = PkiError::WeakKey { bits: 1024 };
        assert_eq!(
            err.to_string(),
            "the CSR's RSA key has 1024 bits, fewer than 2048: make a stronger key on the host"
        );
    }

    // ---- hostile input ----

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_text_never_panics(s in any::<String>()) {
            let _ = parse_cert(&s);
            let _ = parse_public_key(&s);
            let _ = San::parse(&s);
            let ca = shared_ca();
            prop_assert!(ca.sign(&s, &web1(), now()).is_err());
        }

        #[test]
        fn random_der_in_pem_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(parse_cert(&pem_encode("CERTIFICATE", &bytes)).is_err());
            let csr = pem_encode("CERTIFICATE REQUEST", &bytes);
            prop_assert!(shared_ca().sign(&csr, &web1(), now()).is_err());
        }

        /// A bit flipped in what the host signed (the request info) or in the signature's
        /// last integer is refused. (The signature algorithm field is not signed, and the
        /// parser tolerates some changes of its encoding: the request still proves the key.)
        #[test]
        fn corrupted_csrs_never_sign(index in 0usize..4096, bit in 0u8..8) {
            let mut der = der_of(OPENSSL_CSR);
            let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
            let info = csr.certification_request_info.raw.len();
            // The request info follows the 3-byte outer header; the signature's s is the
            // last 32 bytes.
            let i = match index % (info + 32) {
                j if j < info => 3 + j,
                j => der.len() - (j - info) - 1,
            };
            der[i] ^= 1 << bit;
            let csr = pem_encode("CERTIFICATE REQUEST", &der);
            prop_assert!(shared_ca().sign(&csr, &web1(), now()).is_err());
        }
    }

    fn shared_ca() -> &'static Ca {
        static CA: std::sync::OnceLock<Ca> = std::sync::OnceLock::new();
        CA.get_or_init(|| new_ca("fuzz CA"))
    }
}
