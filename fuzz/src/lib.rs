//! Shared checks of the fuzz targets.
//!
//! Every decoder target runs [`check_decoder`]: the fuzzer's bytes are decoded whole, in
//! chunks whose sizes come from the first bytes of the input, one byte at a time, and with
//! stops and push-backs; all four must give the same frames and the same error, and the
//! decoder must never hold more than the limit plus the framing overhead.

use torsion_protocols::framing::{Decoder, Flow, FrameError, Progress};

/// What a decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame's payload.
    Frame(Vec<u8>),
    /// The error that ended the stream.
    Error(FrameError),
}

fn feed<D: Decoder>(
    decoder: &mut D,
    pieces: impl IntoIterator<Item = impl AsRef<[u8]>>,
    bound: usize,
) -> Vec<Event> {
    let mut out = Vec::new();
    for piece in pieces {
        let piece = piece.as_ref();
        let r = decoder.decode(piece, |f| {
            out.push(Event::Frame(f.to_vec()));
            Flow::Continue
        });
        assert!(
            decoder.buffered() <= bound,
            "{} bytes buffered, bound {bound}",
            decoder.buffered()
        );
        if let Err(e) = r {
            out.push(Event::Error(e));
            break;
        }
    }
    out
}

/// Runs the consistency checks on `data` with decoders from `make(max_length)`.
/// `overhead(max)` is what the framing may buffer beyond the payload limit.
pub fn check_decoder<D: Decoder>(
    data: &[u8],
    make: impl Fn(usize) -> D,
    overhead: impl Fn(usize) -> usize,
) {
    if data.len() < 3 {
        return;
    }
    let (params, input) = data.split_at(3);
    // Small limits hit the limit paths often; some inputs use the default-sized one.
    let max = if params[0] & 0x80 != 0 {
        16_384
    } else {
        usize::from(params[0]) * 3
    };
    let bound = max + overhead(max);

    let whole = feed(&mut make(max), [input], bound + input.len());

    // Chunk sizes cycling through a pattern taken from the input.
    let sizes = [
        1 + usize::from(params[1] % 13),
        1 + usize::from(params[2] % 61),
        1,
        2,
    ];
    let mut pieces = Vec::new();
    let mut rest = input;
    for s in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at((*s).min(rest.len()));
        pieces.push(a);
        rest = b;
    }
    let chunked = feed(&mut make(max), &pieces, bound + 61);
    assert_eq!(whole, chunked, "chunked decode differs");

    let bytewise = feed(&mut make(max), input.chunks(1), bound);
    assert_eq!(whole, bytewise, "bytewise decode differs");

    // Stop after every `k`-th frame, push the rest back, go on with decode(&[]).
    let k = usize::from(params[1] % 3) + 1;
    let mut decoder = make(max);
    let mut got = Vec::new();
    let mut n = 0;
    'pieces: for piece in &pieces {
        let mut data: &[u8] = piece;
        loop {
            let r = decoder.decode(data, |f| {
                got.push(Event::Frame(f.to_vec()));
                n += 1;
                if n % k == 0 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            });
            match r {
                Ok(Progress::Consumed) => break,
                Ok(Progress::Stopped { at }) => {
                    decoder.push_back(&data[at..]);
                    data = &[];
                }
                Err(e) => {
                    got.push(Event::Error(e));
                    break 'pieces;
                }
            }
        }
    }
    assert_eq!(whole, got, "stop/push-back decode differs");
}

/// The line receiver adapter (raw mode switches, pauses) in one read and in one-byte reads:
/// the lines and raw bytes delivered must be the same.
///
/// The handler reacts to lines: `R<d>` switches to raw mode for `d` bytes (then hands the
/// rest back with `set_line_mode`), `P` pauses (the driver resumes), `Q` closes.
pub fn check_line_receiver(data: &[u8]) {
    use std::cell::RefCell;
    use std::rc::Rc;
    use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
    use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Line(Vec<u8>),
        Raw(Vec<u8>),
        Exceeded,
    }

    struct H {
        seen: Rc<RefCell<Vec<Seen>>>,
        raw_left: usize,
    }

    impl LineHandler for H {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            self.seen.borrow_mut().push(Seen::Line(line.to_vec()));
            match line {
                [b'R', d, ..] => {
                    self.raw_left = usize::from(*d % 10) + 1;
                    ctx.set_raw_mode();
                }
                [b'P', ..] => ctx.pause(),
                [b'Q', ..] => ctx.lose_connection(),
                _ => {}
            }
        }
        fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
            let n = self.raw_left.min(data.len());
            let mut seen = self.seen.borrow_mut();
            match seen.last_mut() {
                Some(Seen::Raw(r)) => r.extend_from_slice(&data[..n]),
                _ => seen.push(Seen::Raw(data[..n].to_vec())),
            }
            self.raw_left -= n;
            if self.raw_left == 0 {
                ctx.set_line_mode(&data[n..]);
            }
        }
        fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>) {
            self.seen.borrow_mut().push(Seen::Exceeded);
            ctx.close_with_error("too long");
        }
    }

    let run = |chunk: usize| {
        let mr = MemoryReactor::new();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let receiver = LineReceiver::new(H {
            seen: seen.clone(),
            raw_left: 0,
        })
        .delimiter(b"\n")
        .max_length(40);
        let handle = receiver.handle();
        let st = StringTransport::with_options(&mr, receiver, MemoryOptions::chunked(chunk));
        st.feed(data);
        for _ in 0..data.len() + 1 {
            if !handle.is_paused() {
                break;
            }
            handle.resume();
            mr.run_until_idle();
        }
        // Close it: a protocol that keeps its transport handle (as receivers do while
        // paused) is only released by connection_lost.
        st.transport().abort_connection();
        mr.run_until_idle();
        let seen = std::mem::take(&mut *seen.borrow_mut());
        seen
    };
    let whole = run(64 * 1024);
    let bytewise = run(1);
    assert_eq!(whole, bytewise, "one read vs one byte per read");
    let odd = run(7);
    assert_eq!(whole, odd, "one read vs 7-byte reads");
}
