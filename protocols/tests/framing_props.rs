//! Property tests of every decoder: any split decodes as the whole, round trips, limits, and
//! bounded buffering. Each decoder is also checked against a naive reference model written
//! straight from Twisted's algorithms.

use proptest::prelude::*;
use torsion_protocols::framing::{
    encode_line, encode_netstring, encode_prefixed, Decoder, Flow, FrameError, LineDecoder,
    NetstringDecoder, PrefixDecoder, PrefixWidth, Progress,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Frame(Vec<u8>),
    Error(FrameError),
}

/// The decoders under test, each with a small limit so limits are exercised.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Lines(&'static [u8]),
    Netstring,
    Prefix(PrefixWidth),
}

const KINDS: [Kind; 8] = [
    Kind::Lines(b"\r\n"),
    Kind::Lines(b"\n"),
    Kind::Lines(b"aab"),
    Kind::Lines(b"xx"),
    Kind::Netstring,
    Kind::Prefix(PrefixWidth::Int8),
    Kind::Prefix(PrefixWidth::Int16),
    Kind::Prefix(PrefixWidth::Int32),
];

enum AnyDecoder {
    Lines(LineDecoder),
    Netstring(NetstringDecoder),
    Prefix(PrefixDecoder),
}

impl AnyDecoder {
    fn new(kind: Kind, max: usize) -> Self {
        match kind {
            Kind::Lines(d) => AnyDecoder::Lines(LineDecoder::with_options(d, max)),
            Kind::Netstring => AnyDecoder::Netstring(NetstringDecoder::with_max_length(max)),
            Kind::Prefix(w) => AnyDecoder::Prefix(PrefixDecoder::with_max_length(w, max)),
        }
    }

    fn decode(
        &mut self,
        data: &[u8],
        f: impl FnMut(&[u8]) -> Flow,
    ) -> Result<Progress, FrameError> {
        match self {
            AnyDecoder::Lines(d) => d.decode(data, f),
            AnyDecoder::Netstring(d) => d.decode(data, f),
            AnyDecoder::Prefix(d) => d.decode(data, f),
        }
    }

    fn push_back(&mut self, data: &[u8]) {
        match self {
            AnyDecoder::Lines(d) => d.push_back(data),
            AnyDecoder::Netstring(d) => d.push_back(data),
            AnyDecoder::Prefix(d) => d.push_back(data),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            AnyDecoder::Lines(d) => d.buffered(),
            AnyDecoder::Netstring(d) => d.buffered(),
            AnyDecoder::Prefix(d) => d.buffered(),
        }
    }
}

/// Bytes a decoder may hold beyond the payload limit (delimiter, prefix or header).
fn overhead(kind: Kind, max: usize) -> usize {
    match kind {
        Kind::Lines(d) => d.len(),
        Kind::Netstring => max.to_string().len() + 2,
        Kind::Prefix(w) => w.bytes(),
    }
}

fn decode_pieces(kind: Kind, max: usize, pieces: &[&[u8]]) -> Vec<Ev> {
    let mut decoder = AnyDecoder::new(kind, max);
    let mut out = Vec::new();
    for piece in pieces {
        let result = decoder.decode(piece, |f| {
            out.push(Ev::Frame(f.to_vec()));
            Flow::Continue
        });
        if let Err(e) = result {
            out.push(Ev::Error(e));
            break;
        }
    }
    out
}

fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    match kind {
        Kind::Lines(d) => encode_line(payload, d, out),
        Kind::Netstring => encode_netstring(payload, out),
        Kind::Prefix(w) => encode_prefixed(w, payload, out).expect("payloads are short"),
    }
}

// --- Reference models: whole input at once, the obvious way. ---

fn reference(kind: Kind, max: usize, data: &[u8]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut rest = data;
    match kind {
        Kind::Lines(delim) => loop {
            // Twisted: buffer.split(delimiter, 1), then the length checks.
            let pos = rest.windows(delim.len()).position(|w| w == delim);
            match pos {
                Some(p) if p > max => {
                    out.push(Ev::Error(FrameError::LineTooLong { max }));
                    break;
                }
                Some(p) => {
                    out.push(Ev::Frame(rest[..p].to_vec()));
                    rest = &rest[p + delim.len()..];
                }
                None => {
                    if rest.len() >= max + delim.len() {
                        out.push(Ev::Error(FrameError::LineTooLong { max }));
                    }
                    break;
                }
            }
        },
        Kind::Prefix(w) => {
            while rest.len() >= w.bytes() {
                let len = rest[..w.bytes()]
                    .iter()
                    .fold(0u64, |acc, &b| acc * 256 + u64::from(b));
                if len > max as u64 {
                    out.push(Ev::Error(FrameError::TooLong {
                        announced: len,
                        max,
                    }));
                    break;
                }
                let total = w.bytes() + len as usize;
                if rest.len() < total {
                    break;
                }
                out.push(Ev::Frame(rest[w.bytes()..total].to_vec()));
                rest = &rest[total..];
            }
        }
        Kind::Netstring => {
            'frames: while !rest.is_empty() {
                let mut len: u64 = 0;
                let mut i = 0;
                loop {
                    let Some(&b) = rest.get(i) else {
                        break 'frames;
                    };
                    if b.is_ascii_digit() {
                        if i == 1 && rest[0] == b'0' {
                            out.push(Ev::Error(FrameError::Malformed("")));
                            break 'frames;
                        }
                        len = len * 10 + u64::from(b - b'0');
                        if len > max as u64 {
                            out.push(Ev::Error(FrameError::TooLong {
                                announced: len,
                                max,
                            }));
                            break 'frames;
                        }
                        i += 1;
                    } else if b == b':' && i > 0 {
                        break;
                    } else {
                        out.push(Ev::Error(FrameError::Malformed("")));
                        break 'frames;
                    }
                }
                let start = i + 1;
                let end = start + len as usize;
                match rest.get(end) {
                    None => break,
                    Some(b',') => {
                        out.push(Ev::Frame(rest[start..end].to_vec()));
                        rest = &rest[end + 1..];
                    }
                    Some(_) => {
                        out.push(Ev::Error(FrameError::Malformed("")));
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Malformed messages differ in wording only; compare kinds.
fn normalise(events: Vec<Ev>) -> Vec<Ev> {
    events
        .into_iter()
        .map(|e| match e {
            Ev::Error(FrameError::Malformed(_)) => Ev::Error(FrameError::Malformed("")),
            other => other,
        })
        .collect()
}

// --- Input generators. ---

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(KINDS.to_vec())
}

/// Byte soup biased towards the characters the formats care about.
fn soup(kind: Kind) -> BoxedStrategy<Vec<u8>> {
    let special: Vec<u8> = match kind {
        Kind::Lines(d) => d.to_vec(),
        Kind::Netstring => b"0123456789:,".to_vec(),
        Kind::Prefix(_) => vec![0, 1, 2, 3, 255],
    };
    let byte = prop_oneof![
        3 => prop::sample::select(special),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..64).boxed()
}

/// Well-formed frames, then optionally some noise (truncation or a corrupt byte).
fn stream(kind: Kind) -> BoxedStrategy<Vec<u8>> {
    let payloads = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..6);
    (payloads, any::<Option<(u8, u8)>>(), any::<bool>())
        .prop_map(move |(payloads, corrupt, truncate)| {
            let mut out = Vec::new();
            for p in &payloads {
                // Lines cannot carry their delimiter.
                let p: Vec<u8> = match kind {
                    Kind::Lines(d) => p
                        .iter()
                        .map(|&b| if d.contains(&b) { b'.' } else { b })
                        .collect(),
                    _ => p.clone(),
                };
                encode(kind, &p, &mut out);
            }
            if let Some((at, byte)) = corrupt {
                if !out.is_empty() {
                    let i = usize::from(at) % out.len();
                    out[i] = byte;
                }
            }
            if truncate && !out.is_empty() {
                out.pop();
            }
            out.truncate(64);
            out
        })
        .boxed()
}

fn input() -> impl Strategy<Value = (Kind, usize, Vec<u8>)> {
    (kind(), 0usize..20).prop_flat_map(|(kind, max)| {
        let data = prop_oneof![stream(kind), soup(kind)];
        (Just(kind), Just(max), data)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// The whole input decodes as the naive reference model says.
    #[test]
    fn whole_input_matches_reference((kind, max, data) in input()) {
        let got = normalise(decode_pieces(kind, max, &[&data]));
        prop_assert_eq!(got, normalise(reference(kind, max, &data)));
    }

    /// Every split into three pieces (every pair of cut points) decodes as the whole.
    #[test]
    fn every_split_pair_decodes_the_same((kind, max, data) in input()) {
        let whole = decode_pieces(kind, max, &[&data]);
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let got = decode_pieces(kind, max, &[&data[..i], &data[i..j], &data[j..]]);
                prop_assert_eq!(&got, &whole, "cuts at {} and {}", i, j);
            }
        }
    }

    /// One byte per read decodes as the whole, and the buffer never holds more than the
    /// limit plus the framing overhead (so never more than the limit plus one read).
    #[test]
    fn bytewise_and_bounded((kind, max, data) in input()) {
        let whole = decode_pieces(kind, max, &[&data]);
        let mut decoder = AnyDecoder::new(kind, max);
        let mut got = Vec::new();
        for b in &data {
            let r = decoder.decode(std::slice::from_ref(b), |f| { got.push(Ev::Frame(f.to_vec())); Flow::Continue });
            prop_assert!(decoder.buffered() <= max + overhead(kind, max),
                "{} bytes buffered, limit {} + overhead", decoder.buffered(), max);
            if let Err(e) = r { got.push(Ev::Error(e)); break; }
        }
        prop_assert_eq!(got, whole);
    }

    /// Random chunk sizes, with buffered bytes bounded after every read.
    #[test]
    fn random_chunks_bounded(
        (kind, max, data) in input(),
        cuts in prop::collection::vec(1usize..40, 1..20),
    ) {
        let whole = decode_pieces(kind, max, &[&data]);
        let mut decoder = AnyDecoder::new(kind, max);
        let mut got = Vec::new();
        let mut rest = &data[..];
        for c in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (chunk, tail) = rest.split_at((*c).min(rest.len()));
            rest = tail;
            let r = decoder.decode(chunk, |f| { got.push(Ev::Frame(f.to_vec())); Flow::Continue });
            prop_assert!(decoder.buffered() <= max + overhead(kind, max) + chunk.len());
            if let Err(e) = r { got.push(Ev::Error(e)); break; }
        }
        prop_assert_eq!(got, whole);
    }

    /// Stopping after frames (as a paused receiver does) and pushing the rest back changes
    /// nothing.
    #[test]
    fn stop_and_push_back((kind, max, data) in input(), stops in prop::collection::vec(any::<bool>(), 1..16), cut in 0usize..64) {
        let whole = decode_pieces(kind, max, &[&data]);
        let cut = cut.min(data.len());
        let mut decoder = AnyDecoder::new(kind, max);
        let mut got = Vec::new();
        let mut n = 0usize;
        'outer: for piece in [&data[..cut], &data[cut..]] {
            let mut input = piece;
            loop {
                let r = decoder.decode(input, |f| {
                    got.push(Ev::Frame(f.to_vec()));
                    n += 1;
                    if stops[n % stops.len()] { Flow::Stop } else { Flow::Continue }
                });
                match r {
                    Ok(Progress::Consumed) => break,
                    Ok(Progress::Stopped { at }) => {
                        decoder.push_back(&input[at..]);
                        input = &[];
                    }
                    Err(e) => { got.push(Ev::Error(e)); break 'outer; }
                }
            }
        }
        prop_assert_eq!(got, whole);
    }

    /// Encoding then decoding gives the payloads back, whatever the chunking.
    #[test]
    fn round_trip(
        kind in kind(),
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        chunk in 1usize..97,
    ) {
        let payloads: Vec<Vec<u8>> = payloads
            .into_iter()
            .map(|p| match kind {
                Kind::Lines(d) => p.into_iter().map(|b| if d.contains(&b) { b'.' } else { b }).collect(),
                Kind::Prefix(PrefixWidth::Int8) => { let mut p = p; p.truncate(255); p }
                _ => p,
            })
            .collect();
        let mut wire = Vec::new();
        for p in &payloads {
            encode(kind, p, &mut wire);
        }
        let pieces: Vec<&[u8]> = wire.chunks(chunk).collect();
        let got = decode_pieces(kind, 1000, &pieces);
        let want: Vec<Ev> = payloads.into_iter().map(Ev::Frame).collect();
        prop_assert_eq!(got, want);
    }

    /// A line of exactly the limit passes, one byte more is an error, in any chunking.
    #[test]
    fn line_limit_is_exact(max in 0usize..300, chunk in 1usize..50, crlf in any::<bool>()) {
        let delim: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let kind = Kind::Lines(if crlf { b"\r\n" } else { b"\n" });
        let mut ok = vec![b'x'; max];
        ok.extend_from_slice(delim);
        let pieces: Vec<&[u8]> = ok.chunks(chunk).collect();
        prop_assert_eq!(decode_pieces(kind, max, &pieces), vec![Ev::Frame(vec![b'x'; max])]);

        let mut long = vec![b'x'; max + 1];
        long.extend_from_slice(delim);
        let pieces: Vec<&[u8]> = long.chunks(chunk).collect();
        prop_assert_eq!(decode_pieces(kind, max, &pieces), vec![Ev::Error(FrameError::LineTooLong { max })]);
    }

    /// Length prefixes: exactly the limit passes, one more is refused at the prefix.
    #[test]
    fn prefix_limit_is_exact(max in 0usize..300, chunk in 1usize..50, wide in any::<bool>()) {
        let w = if wide { PrefixWidth::Int32 } else { PrefixWidth::Int16 };
        let mut ok = Vec::new();
        encode_prefixed(w, &vec![7; max], &mut ok).unwrap();
        let pieces: Vec<&[u8]> = ok.chunks(chunk).collect();
        prop_assert_eq!(decode_pieces(Kind::Prefix(w), max, &pieces), vec![Ev::Frame(vec![7; max])]);

        let mut long = Vec::new();
        encode_prefixed(w, &vec![7; max + 1], &mut long).unwrap();
        // Only the prefix is needed to refuse it.
        let got = decode_pieces(Kind::Prefix(w), max, &[&long[..w.bytes()]]);
        prop_assert_eq!(got, vec![Ev::Error(FrameError::TooLong { announced: max as u64 + 1, max })]);
    }
}

/// A frame that lies whole inside one read is handed out as a slice of that read.
#[test]
fn whole_frames_are_not_copied() {
    fn check(mut decoder: impl Decoder, first: &[u8], second: &[u8]) {
        let mut in_place = Vec::new();
        for chunk in [first, second] {
            let range = chunk.as_ptr_range();
            decoder
                .decode(chunk, |f| {
                    in_place.push(range.contains(&f.as_ptr()));
                    Flow::Continue
                })
                .unwrap();
        }
        // Frame 1 straddles the reads (copied); frames 2 and 3 lie inside the second read.
        assert_eq!(in_place, [false, true, true]);
    }
    check(LineDecoder::new(), b"ab", b"c\r\nde\r\nfg\r\n");
    check(NetstringDecoder::new(), b"3:a", b"bc,2:de,2:fg,");
    check(
        PrefixDecoder::new(PrefixWidth::Int16),
        b"\0\x03a",
        b"bc\0\x02de\0\x02fg",
    );
}

/// Twisted's limits: `MAX_LENGTH` 16384 for lines, 99999 for strings.
#[test]
fn defaults_match_twisted() {
    assert_eq!(LineDecoder::new().max_length(), 16_384);
    assert_eq!(LineDecoder::new().delimiter(), b"\r\n");
    assert_eq!(NetstringDecoder::new().max_length(), 99_999);
    assert_eq!(PrefixDecoder::new(PrefixWidth::Int32).max_length(), 99_999);
}

/// A 4-byte prefix of 2^32 - 1 is refused as soon as it is complete, however it arrives.
#[test]
fn huge_prefix_refused() {
    for split in 0..=4 {
        let data = [0xff; 4];
        let got = decode_pieces(
            Kind::Prefix(PrefixWidth::Int32),
            99_999,
            &[&data[..split], &data[split..]],
        );
        assert_eq!(
            got,
            vec![Ev::Error(FrameError::TooLong {
                announced: u64::from(u32::MAX),
                max: 99_999
            })]
        );
    }
}

/// Netstring details from Twisted's tests.
#[test]
fn netstring_edge_cases() {
    let d = |data: &[u8]| normalise(decode_pieces(Kind::Netstring, 99_999, &[data]));
    let malformed = Ev::Error(FrameError::Malformed(""));
    assert_eq!(d(b"0:,"), vec![Ev::Frame(vec![])]);
    assert_eq!(d(b"01:a,"), vec![malformed.clone()]);
    assert_eq!(d(b":a,"), vec![malformed.clone()]);
    assert_eq!(d(b"1:ab"), vec![malformed.clone()]);
    assert_eq!(d(b" 1:a,"), vec![malformed.clone()]);
    assert_eq!(d(b"-1:a,"), vec![malformed]);
    assert_eq!(
        d(b"100000"),
        vec![Ev::Error(FrameError::TooLong {
            announced: 100_000,
            max: 99_999
        })]
    );
    assert_eq!(d(b"99999"), vec![]);
}

/// Every way to split `data` in two.
fn splits(data: &[u8]) -> impl Iterator<Item = [&[u8]; 2]> {
    (0..=data.len()).map(move |i| [&data[..i], &data[i..]])
}

/// A netstring length within a maximum of `usize::MAX` whose frame would not fit in a `usize`
/// is refused, not an arithmetic overflow (a panic in debug builds, garbage in release).
#[test]
fn netstring_length_near_usize_max() {
    let max = usize::MAX;
    let too_long = |announced: u64| vec![Ev::Error(FrameError::TooLong { announced, max })];
    // `LEN:` (21 bytes) + LEN + `,` must stay within `usize::MAX`.
    let all = format!("{}:", usize::MAX);
    for pieces in splits(all.as_bytes()) {
        let got = decode_pieces(Kind::Netstring, max, &pieces);
        assert_eq!(got, too_long(u64::MAX), "{pieces:?}");
    }
    let largest = usize::MAX - 22;
    let over = format!("{}:", largest + 1);
    for pieces in splits(over.as_bytes()) {
        let got = decode_pieces(Kind::Netstring, max, &pieces);
        assert_eq!(got, too_long(largest as u64 + 1), "{pieces:?}");
    }
    // The largest addressable frame is merely incomplete, also as more data arrives.
    let fits = format!("{largest}:abc");
    for [a, b] in splits(fits.as_bytes()) {
        assert_eq!(
            decode_pieces(Kind::Netstring, max, &[a, b, b"def", b"g"]),
            vec![]
        );
    }
    // Ordinary netstrings still decode under that maximum.
    for pieces in splits(b"3:abc,0:,") {
        assert_eq!(
            decode_pieces(Kind::Netstring, max, &pieces),
            vec![Ev::Frame(b"abc".to_vec()), Ev::Frame(vec![])]
        );
    }
}

/// Length prefixes under a maximum of `usize::MAX`: the frame size is computed without
/// overflow (on 32-bit targets a 4 GiB announcement would otherwise wrap).
#[test]
fn prefix_under_usize_max() {
    for width in [PrefixWidth::Int8, PrefixWidth::Int16, PrefixWidth::Int32] {
        let kind = Kind::Prefix(width);
        let huge = vec![0xff; width.bytes()];
        for [a, b] in splits(&huge) {
            assert_eq!(
                decode_pieces(kind, usize::MAX, &[a, b, b"abc", b"d"]),
                vec![]
            );
        }
        let mut frame = Vec::new();
        encode_prefixed(width, b"hi", &mut frame).unwrap();
        for pieces in splits(&frame) {
            assert_eq!(
                decode_pieces(kind, usize::MAX, &pieces),
                vec![Ev::Frame(b"hi".to_vec())]
            );
        }
    }
}

/// Lines under a maximum of `usize::MAX` (the limit arithmetic saturates).
#[test]
fn lines_under_usize_max() {
    for delimiter in [&b"\r\n"[..], b"\n", b"aab"] {
        let kind = Kind::Lines(delimiter);
        let mut data = Vec::new();
        encode_line(b"one", delimiter, &mut data);
        encode_line(b"", delimiter, &mut data);
        data.extend_from_slice(b"unfinished");
        for [a, b] in splits(&data) {
            assert_eq!(
                decode_pieces(kind, usize::MAX, &[a, b, b"more"]),
                vec![Ev::Frame(b"one".to_vec()), Ev::Frame(vec![])]
            );
        }
    }
}
