//! Writing frames: [`FrameSender`] and the vectored writers behind every `send_*`.

use std::fmt;
use std::io::IoSlice;
use std::rc::Rc;

use torsion_reactor::{Transport, TransportHandle};

use super::length_prefixed::PrefixWidth;
use super::EncodeError;

/// How a sender frames payloads.
#[derive(Clone, Debug)]
pub(crate) enum Encoding {
    Line(Rc<[u8]>),
    Prefix(PrefixWidth),
    Netstring,
}

pub(crate) fn write_line(t: &dyn Transport, line: &[u8], delimiter: &[u8]) {
    t.write_vectored(&[IoSlice::new(line), IoSlice::new(delimiter)]);
}

pub(crate) fn write_prefixed(
    t: &dyn Transport,
    width: PrefixWidth,
    payload: &[u8],
) -> Result<(), EncodeError> {
    let mut header = [0u8; 4];
    let header = width.encode_header(payload.len(), &mut header)?;
    t.write_vectored(&[IoSlice::new(header), IoSlice::new(payload)]);
    Ok(())
}

pub(crate) fn write_netstring(t: &dyn Transport, payload: &[u8]) {
    let mut header = [0u8; 24];
    let header = super::netstring::encode_header(payload.len(), &mut header);
    t.write_vectored(&[
        IoSlice::new(header),
        IoSlice::new(payload),
        IoSlice::new(b","),
    ]);
}

/// A cloneable handle that writes whole frames to one connection, in that connection's
/// framing: get one from a receiver's context (`ctx.sender()`) and keep it to send from
/// outside the receiver's callbacks, for example to broadcast a chat line to every client.
///
/// Like [`TransportHandle`], holding a sender does not keep the connection open; sends after
/// it closed are ignored.
#[derive(Clone)]
pub struct FrameSender {
    transport: TransportHandle,
    encoding: Encoding,
}

impl FrameSender {
    pub(crate) fn new(transport: TransportHandle, encoding: Encoding) -> Self {
        FrameSender {
            transport,
            encoding,
        }
    }

    /// Writes `payload` as one frame (one vectored write, the payload is not copied unless
    /// the socket cannot take it at once).
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] if the payload does not fit the length prefix (over 255 bytes
    /// for Int8, 65,535 for Int16, 4,294,967,295 for Int32); nothing is written then. Lines
    /// and netstrings never fail.
    pub fn send(&self, payload: &[u8]) -> Result<(), EncodeError> {
        match &self.encoding {
            Encoding::Line(delimiter) => {
                write_line(&*self.transport, payload, delimiter);
                Ok(())
            }
            Encoding::Prefix(width) => write_prefixed(&*self.transport, *width, payload),
            Encoding::Netstring => {
                write_netstring(&*self.transport, payload);
                Ok(())
            }
        }
    }

    /// The connection's transport.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// `true` if both senders write to the same connection.
    pub fn same_connection(&self, other: &FrameSender) -> bool {
        self.transport.same_connection(&other.transport)
    }
}

impl fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSender")
            .field("transport", &self.transport)
            .field("encoding", &self.encoding)
            .finish()
    }
}
