//! Length-prefixed strings: a 1, 2 or 4-byte big-endian unsigned length, then that many bytes
//! (Twisted's `Int8StringReceiver`, `Int16StringReceiver`, `Int32StringReceiver`).
//!
//! The announced length is checked against the maximum (default 99,999, as Twisted's
//! `MAX_LENGTH`) as soon as the prefix is complete, before a single byte of the body is
//! buffered: a peer announcing 4 GiB costs nothing.

use std::fmt;

use super::buffer::{Framer, Parser, Step, Want};
use super::{EncodeError, FrameError};

/// The default maximum string length in bytes, as Twisted's `IntNStringReceiver.MAX_LENGTH`.
pub const DEFAULT_MAX_STRING_LENGTH: usize = 99_999;

/// The size of a length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefixWidth {
    /// One byte: strings of up to 255 bytes (`Int8StringReceiver`).
    Int8,
    /// Two bytes, big-endian: up to 65,535 bytes (`Int16StringReceiver`).
    Int16,
    /// Four bytes, big-endian: up to 4,294,967,295 bytes (`Int32StringReceiver`).
    Int32,
}

impl PrefixWidth {
    /// The prefix size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PrefixWidth::Int8 => 1,
            PrefixWidth::Int16 => 2,
            PrefixWidth::Int32 => 4,
        }
    }

    /// The largest length the prefix can announce.
    pub const fn max_encodable(self) -> u64 {
        match self {
            PrefixWidth::Int8 => u8::MAX as u64,
            PrefixWidth::Int16 => u16::MAX as u64,
            PrefixWidth::Int32 => u32::MAX as u64,
        }
    }

    /// Reads the length from a complete prefix.
    #[inline]
    fn read(self, header: &[u8]) -> u64 {
        match self {
            PrefixWidth::Int8 => u64::from(header[0]),
            PrefixWidth::Int16 => u64::from(u16::from_be_bytes([header[0], header[1]])),
            PrefixWidth::Int32 => u64::from(u32::from_be_bytes([
                header[0], header[1], header[2], header[3],
            ])),
        }
    }

    /// Writes the prefix for `len` into `buf`, returning the part used.
    pub(crate) fn encode_header(self, len: usize, buf: &mut [u8; 4]) -> Result<&[u8], EncodeError> {
        let too_long = || EncodeError::TooLong {
            length: len,
            max: self.max_encodable(),
        };
        let n = self.bytes();
        match self {
            PrefixWidth::Int8 => buf[0] = u8::try_from(len).map_err(|_| too_long())?,
            PrefixWidth::Int16 => {
                buf[..2].copy_from_slice(&u16::try_from(len).map_err(|_| too_long())?.to_be_bytes())
            }
            PrefixWidth::Int32 => {
                buf[..4].copy_from_slice(&u32::try_from(len).map_err(|_| too_long())?.to_be_bytes())
            }
        }
        Ok(&buf[..n])
    }
}

/// Appends `payload` with its length prefix to `out`.
///
/// # Errors
/// [`EncodeError::TooLong`] if `payload` is longer than the prefix can announce (`out` is left
/// unchanged).
///
/// ```
/// use torsion_protocols::framing::{encode_prefixed, PrefixWidth};
///
/// let mut out = Vec::new();
/// encode_prefixed(PrefixWidth::Int16, b"hi", &mut out).unwrap();
/// assert_eq!(out, b"\x00\x02hi");
/// assert!(encode_prefixed(PrefixWidth::Int8, &[0; 256], &mut out).is_err());
/// ```
pub fn encode_prefixed(
    width: PrefixWidth,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut header = [0u8; 4];
    out.extend_from_slice(width.encode_header(payload.len(), &mut header)?);
    out.extend_from_slice(payload);
    Ok(())
}

#[derive(Clone, Debug)]
pub(crate) struct PrefixParser {
    width: PrefixWidth,
    max: usize,
}

impl PrefixParser {
    /// The whole frame's size once the prefix is known and valid.
    #[inline]
    fn total(&self, input: &[u8]) -> Result<Option<usize>, FrameError> {
        let h = self.width.bytes();
        if input.len() < h {
            return Ok(None);
        }
        let len = self.width.read(input);
        let too_long = || FrameError::TooLong {
            announced: len,
            max: self.max,
        };
        if len > self.max as u64 {
            return Err(too_long());
        }
        // Where `usize` is 32 bits, a 4 GiB announcement under a huge maximum would overflow.
        let total = usize::try_from(len)
            .ok()
            .and_then(|len| h.checked_add(len))
            .ok_or_else(too_long)?;
        Ok(Some(total))
    }
}

impl Parser for PrefixParser {
    #[inline]
    fn parse(&mut self, input: &[u8]) -> Result<Step, FrameError> {
        match self.total(input)? {
            Some(total) if input.len() >= total => Ok(Step::Frame {
                start: self.width.bytes(),
                end: total,
                consumed: total,
            }),
            _ => Ok(Step::Incomplete),
        }
    }

    #[inline]
    fn wanted(&mut self, tail: &[u8], more: &[u8]) -> Want {
        match self.total(tail) {
            // The prefix first: the length is checked before any body byte is buffered.
            Ok(None) => Want::Parse(self.width.bytes() - tail.len()),
            Ok(Some(total)) => {
                let need = total - tail.len();
                if more.len() >= need {
                    Want::Frame(
                        need,
                        Step::Frame {
                            start: self.width.bytes(),
                            end: total,
                            consumed: total,
                        },
                    )
                } else {
                    Want::More(more.len())
                }
            }
            Err(_) => Want::Parse(1),
        }
    }

    fn max_length(&self) -> usize {
        self.max
    }
}

/// The pure length-prefixed string parser: bytes in, strings out, no I/O.
///
/// ```
/// use torsion_protocols::framing::{Decoder, Flow, FrameError, PrefixDecoder, PrefixWidth};
///
/// let mut decoder = PrefixDecoder::new(PrefixWidth::Int32);
/// let mut strings = Vec::new();
/// decoder
///     .decode(b"\0\0\0\x03abc\0\0", |s| {
///         strings.push(s.to_vec());
///         Flow::Continue
///     })
///     .unwrap();
/// assert_eq!(strings, [b"abc".to_vec()]);
/// assert_eq!(decoder.buffered(), 2);
///
/// // A 4 GiB announcement is refused as soon as the prefix is complete.
/// let err = PrefixDecoder::new(PrefixWidth::Int32)
///     .decode(&[0xff; 4], |_| Flow::Continue)
///     .unwrap_err();
/// assert_eq!(err, FrameError::TooLong { announced: 0xffff_ffff, max: 99_999 });
/// ```
#[derive(Clone)]
pub struct PrefixDecoder {
    framer: Framer<PrefixParser>,
}

impl PrefixDecoder {
    /// A decoder for strings of at most 99,999 bytes behind a `width` prefix.
    pub fn new(width: PrefixWidth) -> Self {
        Self::with_max_length(width, DEFAULT_MAX_STRING_LENGTH)
    }

    /// A decoder for strings of at most `max_length` bytes behind a `width` prefix.
    pub fn with_max_length(width: PrefixWidth, max_length: usize) -> Self {
        PrefixDecoder {
            framer: Framer::new(PrefixParser {
                width,
                max: max_length,
            }),
        }
    }

    /// The prefix width.
    pub fn width(&self) -> PrefixWidth {
        self.framer.parser.width
    }
}

impl fmt::Debug for PrefixDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixDecoder")
            .field("width", &self.framer.parser.width)
            .field("max_length", &self.framer.parser.max)
            .field("buffered", &self.framer.buffered())
            .finish()
    }
}

super::forward_decoder!(PrefixDecoder);
