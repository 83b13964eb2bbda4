//! Properties of endpoint description parsing: any input either parses or is refused with a
//! clear one-line message, never a panic, quickly; a parsed endpoint displays as a description
//! that parses back to it. Parsing never touches the filesystem (TLS paths are only names).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use torsion_transports::{ClientEndpoint, EndpointError, ServerEndpoint};

/// A refusal is one non-empty line.
fn check_error(desc: &str, e: &EndpointError) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.trim().is_empty(), "empty error for {:?}", desc);
    prop_assert!(
        !msg.chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
        "error for {:?} is not one line: {:?}",
        desc,
        msg
    );
    Ok(())
}

/// A parse result: a refusal is one line; what parsed displays as a description that parses
/// back to it.
fn check_parsed<T>(desc: &str, parsed: Result<T, EndpointError>) -> Result<(), TestCaseError>
where
    T: std::str::FromStr<Err = EndpointError> + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    let ep = match parsed {
        Ok(ep) => ep,
        Err(e) => return check_error(desc, &e),
    };
    let shown = ep.to_string();
    match shown.parse::<T>() {
        Ok(back) => prop_assert_eq!(back, ep, "{:?} displayed as {:?}", desc, shown),
        Err(e) => prop_assert!(
            false,
            "{:?} displayed as {:?}, which is refused: {}",
            desc,
            shown,
            e
        ),
    }
    Ok(())
}

/// Parses `desc` both ways, checking errors and the round trip of what parses.
fn check(desc: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let server = ServerEndpoint::parse(desc);
    let client = ClientEndpoint::parse(desc);
    prop_assert!(
        start.elapsed() < Duration::from_millis(500),
        "parsing {:?} took {:?}",
        desc,
        start.elapsed()
    );
    check_parsed(desc, server)?;
    check_parsed(desc, client)
}

const KINDS: &[&str] = &[
    "tcp", "tcp6", "unix", "tls", "ssl", "tlsunix", "udp", "udp6", "unixgram", "", "TCP", "tcp7",
];

const KEYS: &[&str] = &[
    "port",
    "interface",
    "backlog",
    "mode",
    "address",
    "path",
    "host",
    "certKey",
    "privateKey",
    "caCerts",
    "certificate",
    "timeout",
    "bindAddress",
    "lockfile",
    "",
];

/// One value: something plausible, something hostile, or anything.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("0".to_owned()),
        Just("8000".to_owned()),
        Just("65536".to_owned()),
        Just("99999999999999999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("NaN".to_owned()),
        Just("1e-12".to_owned()),
        Just("0.000000001".to_owned()),
        Just("18446744073709551615.9".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        Just(r"\:\:1".to_owned()),
        Just("[::1".to_owned()),
        Just("::1]".to_owned()),
        Just("[[".to_owned()),
        Just("]]".to_owned()),
        Just("[".to_owned()),
        Just(r"127.0.0.1\:99".to_owned()),
        Just("[::ffff:1.2.3.4]".to_owned()),
        Just("@".to_owned()),
        Just("@abstract".to_owned()),
        Just("/nonexistent/b8/x.pem".to_owned()),
        Just("a=b".to_owned()),
        Just("7777".to_owned()),
        Just("17777".to_owned()),
        Just("localhost".to_owned()),
        Just("line\nbreak".to_owned()),
        Just("nul\0byte".to_owned()),
        Just("\r".to_owned()),
        Just("\u{2028}".to_owned()),
        Just("é🦀".to_owned()),
        Just("\\".to_owned()),
        "[0-9]{1,30}",
        "[0-9]{1,12}\\.[0-9]{1,12}",
        "[a-z0-9.@/=\\[\\]\\\\:-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

/// A segment of a description: a positional value or an option.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        value(),
        (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k}={v}")),
        (value(), value()).prop_map(|(k, v)| format!("{k}={v}")),
    ]
}

/// A near-valid description: a known (or almost known) type and random segments.
fn near_valid() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(KINDS),
        proptest::collection::vec(segment(), 0..6),
        prop_oneof![
            Just(""),
            Just("\\"),
            Just(":"),
            Just("["),
            Just("]"),
            Just("\0"),
            Just("\n")
        ],
    )
        .prop_map(|(kind, segments, tail)| {
            let mut desc = kind.to_owned();
            for s in segments {
                desc.push(':');
                desc.push_str(&s);
            }
            desc.push_str(tail);
            desc
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 5000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings_parse_or_fail_in_one_line(desc in any::<String>()) {
        check(&desc)?;
    }

    #[test]
    fn description_like_strings_parse_or_fail_in_one_line(
        desc in "[a-z0-9:=\\[\\]\\\\@./ \n\0-]{0,40}"
    ) {
        check(&desc)?;
    }

    #[test]
    fn near_valid_descriptions_parse_or_fail_in_one_line(desc in near_valid()) {
        check(&desc)?;
    }
}

/// Long inputs (many segments, deep brackets, long escapes) parse quickly.
#[test]
fn long_descriptions_parse_quickly() {
    let long = [
        format!("tcp:{}", "[".repeat(100_000)),
        format!("tcp:{}", "]".repeat(100_000)),
        format!("unix:{}", "\\".repeat(100_001)),
        format!("tcp:{}", ":".repeat(100_000)),
        format!("tcp:{}", "a=b:".repeat(20_000)),
        format!("tcp:{}:1", "9".repeat(100_000)),
        format!("tls:{}", "certKey=x:".repeat(20_000)),
    ];
    for desc in &long {
        let start = Instant::now();
        for r in [
            ServerEndpoint::parse(desc).err(),
            ClientEndpoint::parse(desc).err(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!r.to_string().contains('\n'));
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{} bytes took {:?}",
            desc.len(),
            start.elapsed()
        );
    }
}

proptest! {
    #![proptest_config(config())]

    /// Fractional timeouts keep their value through display (printed as an `f64`).
    #[test]
    fn timeouts_round_trip(
        secs in prop_oneof![0u64..1000, 0u64..1 << 40, any::<u64>()],
        nanos in 0u32..1_000_000_000) {
        check(&format!("tcp:h:80:timeout={secs}.{nanos:09}"))?;
        check(&format!("tcp:h:80:timeout={}", secs as f64 + f64::from(nanos) / 1e9))?;
    }
}

/// Inputs found by the properties above.
#[test]
fn regressions() {
    // Refusals quoted line breaks and NUL bytes raw, splitting the message over lines.
    for desc in [
        "tcp\0",
        "tcp:\n",
        "unix:/a:mode=\r",
        "tcp:h:80:timeout=1\u{2028}",
    ] {
        check(desc).unwrap();
    }
    // A client host given by name could contain `=` and displayed as an option.
    for desc in [
        "tcp:host=a=b:port=80",
        "tls:host=a=b:port=80",
        "tlsunix:/x:host=a=b",
    ] {
        let e = ClientEndpoint::parse(desc).unwrap_err().to_string();
        assert!(e.contains("not a host name"), "{desc}: {e}");
    }
}
