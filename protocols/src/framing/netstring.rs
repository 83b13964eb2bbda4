//! Netstrings (`LEN:DATA,`, D. J. Bernstein's format, Twisted's `NetstringReceiver`).
//!
//! The length is decimal ASCII with no leading zeros (`0:,` is the empty string; `01:a,` is
//! malformed), at most the maximum (default 99,999). Input is checked byte by byte as it
//! arrives, as Twisted does: a non-digit where a digit belongs, a length over the maximum or a
//! missing comma is an error as soon as the offending byte is read.

use std::fmt;

use super::buffer::{Framer, Parser, Step, Want};
use super::FrameError;

/// The default maximum netstring length in bytes, as Twisted's `NetstringReceiver.MAX_LENGTH`.
pub const DEFAULT_MAX_NETSTRING_LENGTH: usize = 99_999;

/// Appends `payload` as a netstring to `out`.
///
/// ```
/// let mut out = Vec::new();
/// torsion_protocols::framing::encode_netstring(b"hello", &mut out);
/// assert_eq!(out, b"5:hello,");
/// ```
pub fn encode_netstring(payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; 24];
    out.extend_from_slice(encode_header(payload.len(), &mut header));
    out.extend_from_slice(payload);
    out.push(b',');
}

/// Writes `LEN:` into `buf`, returning the part used.
pub(crate) fn encode_header(len: usize, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len() - 1;
    buf[i] = b':';
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[derive(Clone, Debug)]
pub(crate) struct NetstringParser {
    max: usize,
}

/// The parsed `LEN:` header.
enum Header {
    /// `(length, header size including the colon)`; their sum plus one (the comma) does not
    /// overflow.
    Done(usize, usize),
    /// A valid prefix of a header.
    Partial,
}

impl NetstringParser {
    #[inline]
    fn header(&self, input: &[u8]) -> Result<Header, FrameError> {
        let mut len: usize = 0;
        for (i, &b) in input.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    if i == 1 && input[0] == b'0' {
                        return Err(FrameError::Malformed("netstring length has a leading zero"));
                    }
                    let digit = usize::from(b - b'0');
                    len = match len.checked_mul(10).and_then(|l| l.checked_add(digit)) {
                        Some(l) if l <= self.max => l,
                        other => {
                            return Err(FrameError::TooLong {
                                announced: other.map_or(u64::MAX, |l| l as u64),
                                max: self.max,
                            })
                        }
                    };
                }
                // The whole frame (`LEN:`, the data, the comma) must be addressable: with a
                // maximum near `usize::MAX` a length within it can still overflow the end.
                b':' if i > 0 => {
                    return match (i + 2).checked_add(len) {
                        Some(_) => Ok(Header::Done(len, i + 1)),
                        None => Err(FrameError::TooLong {
                            announced: len as u64,
                            max: self.max,
                        }),
                    }
                }
                _ if i == 0 => {
                    return Err(FrameError::Malformed(
                        "netstring does not start with a decimal length",
                    ))
                }
                _ => {
                    return Err(FrameError::Malformed(
                        "netstring length is not followed by ':'",
                    ))
                }
            }
        }
        Ok(Header::Partial)
    }
}

impl Parser for NetstringParser {
    #[inline]
    fn parse(&mut self, input: &[u8]) -> Result<Step, FrameError> {
        let Header::Done(len, start) = self.header(input)? else {
            return Ok(Step::Incomplete);
        };
        let end = start + len;
        match input.get(end) {
            None => Ok(Step::Incomplete),
            Some(b',') => Ok(Step::Frame {
                start,
                end,
                consumed: end + 1,
            }),
            Some(_) => Err(FrameError::Malformed(
                "netstring data is not followed by ','",
            )),
        }
    }

    #[inline]
    fn wanted(&mut self, tail: &[u8], more: &[u8]) -> Want {
        match self.header(tail) {
            Ok(Header::Done(len, start)) => {
                let end = start + len;
                let need = end + 1 - tail.len();
                match more.get(need - 1) {
                    None => Want::More(more.len()),
                    Some(b',') => Want::Frame(
                        need,
                        Step::Frame {
                            start,
                            end,
                            consumed: end + 1,
                        },
                    ),
                    Some(_) => Want::Parse(need), // parse reports the missing comma
                }
            }
            // Still in the length: take up to the colon (a header is a few bytes).
            _ => Want::Parse(match memchr::memchr(b':', &more[..more.len().min(24)]) {
                Some(c) => c + 1,
                None => more.len().min(24),
            }),
        }
    }

    fn max_length(&self) -> usize {
        self.max
    }
}

/// The pure netstring parser: bytes in, strings out, no I/O.
///
/// ```
/// use torsion_protocols::framing::{Decoder, Flow, FrameError, NetstringDecoder};
///
/// let mut decoder = NetstringDecoder::new();
/// let mut strings = Vec::new();
/// decoder
///     .decode(b"5:hello,0:,", |s| {
///         strings.push(s.to_vec());
///         Flow::Continue
///     })
///     .unwrap();
/// assert_eq!(strings, [b"hello".to_vec(), b"".to_vec()]);
/// assert!(matches!(
///     decoder.decode(b"3:abc;", |_| Flow::Continue),
///     Err(FrameError::Malformed(_))
/// ));
/// ```
#[derive(Clone)]
pub struct NetstringDecoder {
    framer: Framer<NetstringParser>,
}

impl NetstringDecoder {
    /// A decoder for netstrings of at most 99,999 bytes.
    pub fn new() -> Self {
        Self::with_max_length(DEFAULT_MAX_NETSTRING_LENGTH)
    }

    /// A decoder for netstrings of at most `max_length` bytes.
    ///
    /// Any maximum is accepted, `usize::MAX` included: a length within it whose frame (header,
    /// data and comma) would not fit in a `usize` is refused with [`FrameError::TooLong`].
    pub fn with_max_length(max_length: usize) -> Self {
        NetstringDecoder {
            framer: Framer::new(NetstringParser { max: max_length }),
        }
    }
}

impl Default for NetstringDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for NetstringDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetstringDecoder")
            .field("max_length", &self.framer.parser.max)
            .field("buffered", &self.framer.buffered())
            .finish()
    }
}

super::forward_decoder!(NetstringDecoder);
