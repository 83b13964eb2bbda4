//! Development certificates: a private CA, a server certificate and a client certificate,
//! written as standard PEM files any TLS tool accepts (`torsion certs create`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use torsion_reactor::{Error, Result};

/// The host names a server certificate covers when none are given.
pub const DEFAULT_DEV_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Where [`create_dev_certs`] wrote each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevCerts {
    /// `ca.pem`: the development CA certificate (trust it on clients: `caCerts=`).
    pub ca_cert: PathBuf,
    /// `server.pem`: the server certificate followed by the CA (a full chain).
    pub server_cert: PathBuf,
    /// `server-key.pem`: the server's PKCS#8 private key (mode 0600).
    pub server_key: PathBuf,
    /// `client.pem`: a client certificate signed by the CA, followed by the CA.
    pub client_cert: PathBuf,
    /// `client-key.pem`: the client's PKCS#8 private key (mode 0600).
    pub client_key: PathBuf,
}

fn rcgen_error(what: &str, e: rcgen::Error) -> Error {
    Error::io(
        format!("create {what}"),
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    )
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    let context = format!("write {}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| Error::io(&context, e))?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&context, e))?;
    }
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::io(&context, e))
}

/// Creates a development CA, a server certificate for `hosts` (DNS names, wildcards such as
/// `*.example.test`, or IP addresses; empty means [`DEFAULT_DEV_HOSTS`]) and a client certificate, all signed by the CA, and
/// writes them into `dir` (created if missing) as `ca.pem`, `server.pem` (chain),
/// `server-key.pem`, `client.pem` (chain) and `client-key.pem`. Keys are ECDSA P-256 in
/// PKCS#8 PEM, readable only by the owner (0600). Existing files are overwritten. The
/// certificates are valid from a day ago, the server's and client's for a year (within the
/// 825 days Apple's TLS stack accepts), the CA's for ten.
///
/// For development and tests only: anyone holding `ca.pem`'s key could impersonate any of
/// these names, and the CA key is not kept.
pub fn create_dev_certs(dir: &Path, hosts: &[String]) -> Result<DevCerts> {
    let hosts: Vec<String> = if hosts.is_empty() {
        DEFAULT_DEV_HOSTS.iter().map(|s| s.to_string()).collect()
    } else {
        hosts.to_vec()
    };
    // A wildcard (`*.example.com`) covers the names one label below a DNS name.
    let valid = |h: &str| match h.strip_prefix("*.") {
        Some(rest) => rustls_pki_types::DnsName::try_from(rest).is_ok(),
        None => rustls_pki_types::ServerName::try_from(h).is_ok(),
    };
    if let Some(bad) = hosts.iter().find(|h| !valid(h)) {
        return Err(Error::io(
            format!("make a certificate for '{bad}'"),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a DNS name or an IP address",
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;

    // Valid from a day ago (clocks differ) for ten years (the CA) or a year (the leaves):
    // Apple's TLS stack refuses server certificates valid for more than 825 days, even from a
    // private CA.
    let now = time::OffsetDateTime::now_utc();
    let from = now - time::Duration::days(1);
    let ca_key = KeyPair::generate().map_err(|e| rcgen_error("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| rcgen_error("CA", e))?;
    ca_params.not_before = from;
    ca_params.not_after = now + time::Duration::days(10 * 365);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    // A name of its own: verifiers find a certificate's issuer by name, so a certificate from
    // another development CA must not look like one from this CA (it would fail with a bad
    // signature instead of an unknown issuer), and stores that hold both must tell them apart.
    let id: String = ca_key.public_key_raw()[1..9]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("torsion development CA {id}"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| rcgen_error("CA", e))?;

    let leaf = |names: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| -> Result<_> {
        let key = KeyPair::generate().map_err(|e| rcgen_error("key", e))?;
        let mut params = CertificateParams::new(names).map_err(|e| rcgen_error(cn, e))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        // ECDSA keys sign; key encipherment is for RSA key transport (RFC 5480 forbids it on
        // EC keys).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = from;
        params.not_after = now + time::Duration::days(365);
        let cert = params
            .signed_by(&key, &ca)
            .map_err(|e| rcgen_error(cn, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let first = hosts.first().cloned().unwrap_or_default();
    let (server_pem, server_key) = leaf(hosts, &first, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_pem, client_key) = leaf(
        Vec::new(),
        "torsion development client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    let paths = DevCerts {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    let ca_pem = ca.pem();
    write_file(&paths.ca_cert, &ca_pem, false)?;
    write_file(&paths.server_cert, &format!("{server_pem}{ca_pem}"), false)?;
    write_file(&paths.server_key, &server_key, true)?;
    write_file(&paths.client_cert, &format!("{client_pem}{ca_pem}"), false)?;
    write_file(&paths.client_key, &client_key, true)?;
    Ok(paths)
}
