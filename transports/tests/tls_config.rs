//! TLS configuration from files: what a user sees when a file is not what it should be.

use std::path::{Path, PathBuf};

use torsion_transports::tls::{self, ClientTlsConfig, DevCerts, ServerTlsConfig};

fn certs() -> (tempfile::TempDir, DevCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
    (dir, certs)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhlD0TjYkmO+gICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEELgYlnw0E0MqyNL78CaqIOsEgZCs
Yc5Ex7LoKzhCoE9PAN22AqNoqf7bOwuyZuLNSGBe8wgxAtd0pTwJwDWZhhdNkIPP
JKUKd4IRcInueYypKwxJABmC+d3oRL+lBHfkM/AWQAj5o94w6pX6axwVQbXPIn32
U1NlMYNXjZvEfi14qtmrJlDjZH94qOOAFWJjOrDGZ8N8zSUZlst2fXJnKAdNXZI=
-----END ENCRYPTED PRIVATE KEY-----
";

const ENCRYPTED_LEGACY_EC: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-128-CBC,7C445BC9E5DDAA9A8D9D185BDDEAD647

2W6uTKmwPBZxi2nfi2eLZIsLW1kR++0iPVK+3/wunV43N5Y0cMlVpNZjlGLMtv/a
4FYyz+8m9DMOjV6v0k/J8z3ktRS5HCcsOwm74gOmUG7RUAZ4+3WKMg2tD5vu5U7P
l93l9FKvRok4cxZHWu7t8x6gAJU4829VgaXu6nPnRE8=
-----END EC PRIVATE KEY-----
";

#[test]
fn encrypted_keys_are_refused_as_encrypted() {
    let (dir, c) = certs();
    for (name, text) in [
        ("pkcs8.pem", ENCRYPTED_PKCS8),
        ("legacy.pem", ENCRYPTED_LEGACY_EC),
    ] {
        let key = write(dir.path(), name, text);
        let err = ServerTlsConfig::from_pem_files(&c.server_cert, &key, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("encrypted private keys are not supported"),
            "{msg}"
        );
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        let err = ClientTlsConfig::builder()
            .client_certificate_pem_files(&c.client_cert, &key)
            .unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }
}

#[test]
fn a_key_of_another_certificate_is_a_clear_config_error() {
    let (_d, c) = certs();
    let err = ServerTlsConfig::from_pem_files(&c.server_cert, &c.client_key, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("the private key does not match the certificate"),
        "{err}"
    );
    let err = ClientTlsConfig::builder()
        .client_certificate_pem_files(&c.client_cert, &c.server_key)
        .unwrap()
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the private key does not match the certificate"),
        "{err}"
    );
}

#[test]
fn a_chain_with_the_ca_first_is_a_clear_config_error() {
    let (dir, c) = certs();
    let chain = std::fs::read_to_string(&c.server_cert).unwrap();
    let ca = std::fs::read_to_string(&c.ca_cert).unwrap();
    let leaf = chain.strip_suffix(ca.as_str()).unwrap();
    let reversed = write(dir.path(), "reversed.pem", &format!("{ca}{leaf}"));
    let err = ServerTlsConfig::from_pem_files(&reversed, &c.server_key, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not match the certificate"), "{msg}");
    assert!(msg.contains("leaf first"), "{msg}");
}

#[test]
fn a_bad_certificate_in_a_client_ca_file_names_the_file() {
    let (dir, c) = certs();
    let ca = std::fs::read_to_string(&c.ca_cert).unwrap();
    let bad = write(
        dir.path(),
        "bad-ca.pem",
        &format!("{ca}-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"),
    );
    let err = ClientTlsConfig::with_ca_file(&bad).unwrap_err();
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
    let err =
        ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, Some(&bad)).unwrap_err();
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn alpn_names_tls_cannot_carry_are_refused_at_build() {
    let (_d, c) = certs();
    let long = vec![b'a'; 256];
    let max = vec![b'a'; 255];
    for bad in [&b""[..], &long[..]] {
        let err = ServerTlsConfig::builder_from_pem_files(&c.server_cert, &c.server_key)
            .unwrap()
            .alpn_protocols([&b"h2"[..], bad])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("ALPN"), "{err}");
        let err = ClientTlsConfig::builder()
            .alpn_protocols([bad])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("ALPN"), "{err}");
    }
    ClientTlsConfig::builder()
        .alpn_protocols([&max[..], b"h2"])
        .build()
        .unwrap();
}

/// Days from 1970-01-01 to the date `YYMMDD` of a DER UTCTime (years 1950–2049).
fn utc_time_days(t: &[u8]) -> i64 {
    let n = |i: usize| i64::from(t[i] - b'0') * 10 + i64::from(t[i + 1] - b'0');
    let (yy, m, d) = (n(0), n(2), n(4));
    let y = if yy < 50 { 2000 + yy } else { 1900 + yy };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// `(notBefore, notAfter)` of a certificate, in days since 1970: its first two UTCTimes.
fn validity(der: &[u8]) -> (i64, i64) {
    let times: Vec<i64> = der
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == &[0x17, 13])
        .map(|(i, _)| utc_time_days(&der[i + 2..i + 15]))
        .take(2)
        .collect();
    (times[0], times[1])
}

/// `torsion certs create` makes certificates every TLS stack takes: valid from about now, the
/// server's for at most 825 days (Apple's limit, even under a private CA; they were valid from
/// 1975 to 4096), and leaf keys (ECDSA) for signing only, without key encipherment.
#[test]
fn dev_certificates_are_valid_from_now_for_a_year() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let (_d, c) = certs();
    let today = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400) as i64;
    for (path, max_days) in [
        (&c.server_cert, 825),
        (&c.client_cert, 825),
        (&c.ca_cert, 3700),
    ] {
        let der = CertificateDer::pem_file_iter(path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let (from, until) = validity(&der);
        assert!(
            from <= today && today - from <= 2,
            "{path:?} from day {from}"
        );
        assert!(until > today + 300, "{path:?} until day {until}");
        assert!(until - from <= max_days, "{path:?}: {} days", until - from);
        if max_days == 825 {
            // keyUsage (2.5.29.15) is digitalSignature alone: BIT STRING 03 02 07 80.
            let ku = der
                .windows(3)
                .position(|w| w == [0x55, 0x1d, 0x0f])
                .unwrap();
            let rest = &der[ku..(ku + 12).min(der.len())];
            assert!(
                rest.windows(4).any(|w| w == [0x03, 0x02, 0x07, 0x80]),
                "{rest:02x?}"
            );
        }
    }
}
