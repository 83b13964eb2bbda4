//! The buffering driver shared by every decoder: it turns a per-format [`Parser`] (which only
//! looks at bytes) into a streaming [`Decoder`](super::Decoder) that hands out frames without
//! copying when they lie whole inside one read.
//!
//! The driver keeps at most one incomplete frame in its buffer while running. Bytes are copied
//! into the buffer only to complete a frame that started in an earlier read, and only as many
//! as that frame needs: the rest of the read is parsed in place. After a stop (the consumer
//! paused) the caller may [`push_back`](Framer::push_back) the unread bytes; the buffer then
//! holds whole frames too, and the next [`decode`](Framer::decode) delivers them first.

use super::{Flow, FrameError, Progress};

/// What a parser found at the start of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A whole frame: the payload is `input[start..end]` and the frame ends at
    /// `input[..consumed]` (`consumed >= 1`).
    Frame {
        start: usize,
        end: usize,
        consumed: usize,
    },
    /// No whole frame yet, and nothing wrong so far.
    Incomplete,
}

/// What appending the start of the next read to a buffered incomplete frame gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Append this many bytes (clamped to `1..=more.len()`), then parse the buffer.
    Parse(usize),
    /// Append exactly this many bytes: the buffer then holds exactly this whole frame.
    Frame(usize, Step),
    /// Append exactly this many bytes: the buffer is still a valid, incomplete frame start
    /// (and the parser's search memo covers it).
    More(usize),
}

/// A pure frame parser: looks for one frame at the start of `input`.
///
/// Contract: `parse` may keep a memo of how far it searched (lines do), valid while successive
/// calls see extensions of the same bytes; the driver calls [`Parser::restart`] whenever that
/// stops being true. Errors must depend only on the bytes of the current frame seen so far, so
/// that any split of the input reports the same error after the same frames.
pub(crate) trait Parser {
    /// Parses one frame at the start of `input`.
    fn parse(&mut self, input: &[u8]) -> Result<Step, FrameError>;

    /// `tail` holds the start of a frame (`parse` said `Incomplete`); how many bytes of `more`
    /// (non-empty) to append to it next, and what that gives when the parser can tell
    /// without parsing the buffer again. With [`Want::Parse`], appending more than the frame
    /// needs is allowed (the excess is given back), but every byte appended is a byte
    /// copied, so parsers ask for what completes the frame.
    fn wanted(&mut self, tail: &[u8], more: &[u8]) -> Want;

    /// Forgets any search memo.
    fn restart(&mut self) {}

    /// The largest payload accepted.
    fn max_length(&self) -> usize;
}

/// Buffer capacity kept between frames; a larger buffer is released after use.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The streaming driver around a [`Parser`].
#[derive(Clone)]
pub(crate) struct Framer<P> {
    pub(crate) parser: P,
    buf: Vec<u8>,
    /// Start of the unread part of `buf` (non-zero only between frames delivered from it).
    start: usize,
    /// `buf` may hold whole frames (after a push-back), not just an incomplete tail.
    whole_frames: bool,
}

impl<P: Parser> Framer<P> {
    pub(crate) fn new(parser: P) -> Self {
        Framer {
            parser,
            buf: Vec::new(),
            start: 0,
            whole_frames: false,
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.whole_frames = false;
        self.parser.restart();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }

    pub(crate) fn push_back(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.compact();
        self.parser.restart();
        self.whole_frames = true;
        self.buf.extend_from_slice(data);
    }

    pub(crate) fn take_buffered(&mut self) -> Vec<u8> {
        self.compact();
        self.parser.restart();
        self.whole_frames = false;
        std::mem::take(&mut self.buf)
    }

    /// `true` if the buffer starts with a whole frame (not an error). Keeps the parser's
    /// memo valid: it parses the buffer as `decode` would next.
    pub(crate) fn holds_frame(&mut self) -> bool {
        let buf = &self.buf[self.start..];
        !buf.is_empty() && matches!(self.parser.parse(buf), Ok(Step::Frame { .. }))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn fail(&mut self, e: FrameError) -> Result<Progress, FrameError> {
        self.clear();
        Err(e)
    }

    pub(crate) fn decode<F>(&mut self, data: &[u8], mut on_frame: F) -> Result<Progress, FrameError>
    where
        F: FnMut(&[u8]) -> Flow,
    {
        // 1. Whole frames left in the buffer by a stop, then its incomplete tail.
        while self.whole_frames && self.start < self.buf.len() {
            match self.parser.parse(&self.buf[self.start..]) {
                Err(e) => return self.fail(e),
                Ok(Step::Incomplete) => {
                    self.whole_frames = false;
                    break;
                }
                Ok(Step::Frame {
                    start,
                    end,
                    consumed,
                }) => {
                    let base = self.start;
                    self.start += consumed;
                    let flow = on_frame(&self.buf[base + start..base + end]);
                    if self.start == self.buf.len() {
                        self.clear();
                    }
                    if flow == Flow::Stop {
                        return Ok(Progress::Stopped { at: 0 });
                    }
                }
            }
        }
        self.compact();

        // 2. Complete the buffered frame with just the bytes it needs.
        let mut pos = 0;
        while !self.buf.is_empty() && pos < data.len() {
            let more = &data[pos..];
            let old = self.buf.len();
            let (take, known) = match self.parser.wanted(&self.buf, more) {
                Want::Parse(n) => (n.clamp(1, more.len()), None),
                Want::Frame(n, step) => (n, Some(step)),
                Want::More(n) => (n, Some(Step::Incomplete)),
            };
            debug_assert!((1..=more.len()).contains(&take));
            self.buf.extend_from_slice(&more[..take]);
            pos += take;
            let step = match known {
                Some(step) => Ok(step),
                None => self.parser.parse(&self.buf),
            };
            match step {
                Err(e) => return self.fail(e),
                Ok(Step::Incomplete) => {}
                Ok(Step::Frame {
                    start,
                    end,
                    consumed,
                }) => {
                    debug_assert!(consumed > old && consumed <= self.buf.len());
                    pos -= self.buf.len() - consumed;
                    let flow = on_frame(&self.buf[start..end]);
                    self.clear();
                    if flow == Flow::Stop {
                        return Ok(Progress::Stopped { at: pos });
                    }
                }
            }
        }

        // 3. Frames that lie whole in this read: handed out in place.
        while pos < data.len() {
            let rest = &data[pos..];
            match self.parser.parse(rest) {
                Err(e) => return self.fail(e),
                Ok(Step::Frame {
                    start,
                    end,
                    consumed,
                }) => {
                    pos += consumed;
                    if on_frame(&rest[start..end]) == Flow::Stop {
                        return Ok(Progress::Stopped { at: pos });
                    }
                }
                Ok(Step::Incomplete) => {
                    self.buf.extend_from_slice(rest);
                    break;
                }
            }
        }
        Ok(Progress::Consumed)
    }
}
