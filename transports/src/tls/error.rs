//! Why a TLS connection failed: [`TlsError`], and its mapping onto [`CloseReason`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use torsion_reactor::CloseReason;

/// A TLS-level failure of a connection.
///
/// Reaches the protocol's `connection_lost` (and, during a client handshake, the client
/// factory's `client_connection_failed`) inside a [`CloseReason`]; get it back with
/// [`TlsError::from_reason`]:
///
/// ```
/// use torsion_transports::tls::TlsError;
/// # let reason = torsion_reactor::CloseReason::Done;
/// match TlsError::from_reason(&reason) {
///     Some(TlsError::Truncated) => { /* the peer hung up without close_notify */ }
///     Some(err) => eprintln!("TLS failed: {err}"),
///     None => { /* not a TLS failure */ }
/// }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer closed the connection (EOF) after the handshake without sending a TLS
    /// `close_notify` alert: the data may have been cut short by an attacker or a crash.
    /// Never reported as a clean close.
    Truncated,
    /// The peer closed the connection (EOF) before the handshake completed.
    HandshakeEof,
    /// The handshake did not complete within the configured deadline (the peer is stalled or
    /// does not speak TLS).
    HandshakeTimeout(Duration),
    /// rustls rejected the connection: an alert from the peer, a certificate that failed
    /// verification (unknown CA, name mismatch, expired…), no shared protocol version, or
    /// bytes that are not TLS. The [`rustls::Error`] is kept whole.
    Rustls(rustls::Error),
}

impl TlsError {
    /// The rustls error, if this failure came from rustls.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }

    /// The certificate verification failure, if this is one (e.g.
    /// [`rustls::CertificateError::UnknownIssuer`]).
    pub fn certificate_error(&self) -> Option<&rustls::CertificateError> {
        match self {
            TlsError::Rustls(rustls::Error::InvalidCertificate(e)) => Some(e),
            _ => None,
        }
    }

    /// The TLS failure carried by a close reason, if it carries one.
    pub fn from_reason(reason: &CloseReason) -> Option<&TlsError> {
        static TRUNCATED: TlsError = TlsError::Truncated;
        match reason {
            CloseReason::Truncated => Some(&TRUNCATED),
            CloseReason::Tls(e) => e.downcast_ref::<TlsError>(),
            _ => None,
        }
    }

    /// The [`CloseReason`] that carries this failure (the one place the TLS layer maps its
    /// failures onto the reactor's reasons).
    pub fn into_close_reason(self) -> CloseReason {
        match self {
            TlsError::Truncated => CloseReason::Truncated,
            other => CloseReason::Tls(Arc::new(other)),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Truncated => f.write_str(
                "TLS connection truncated: the peer closed without close_notify (data may be missing)",
            ),
            TlsError::HandshakeEof => {
                f.write_str("the peer closed the connection during the TLS handshake")
            }
            TlsError::HandshakeTimeout(d) => write!(
                f,
                "TLS handshake did not complete within {d:?} (peer stalled or not speaking TLS)"
            ),
            TlsError::Rustls(e) => {
                write!(f, "TLS failure: {e}")?;
                match e {
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => f
                        .write_str(
                            " (trust the issuing CA: ClientTlsConfigBuilder::ca_file, or caCerts=)",
                        ),
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. },
                    ) => f.write_str(" (connect with a name listed in the certificate)"),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}
