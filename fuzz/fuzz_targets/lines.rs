//! LineDecoder: CRLF, LF and an awkward self-overlapping delimiter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocols::framing::LineDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let delimiter: &[u8] = match pick % 4 {
        0 => b"\r\n",
        1 => b"\n",
        2 => b"aab",
        _ => b"\r\n\r\n",
    };
    torsion_fuzz::check_decoder(
        rest,
        |max| LineDecoder::with_options(delimiter, max),
        |_| delimiter.len(),
    );
});
