//! PrefixDecoder with a 1-byte length prefix (Int8StringReceiver).
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocols::framing::{PrefixDecoder, PrefixWidth};

fuzz_target!(|data: &[u8]| {
    torsion_fuzz::check_decoder(
        data,
        |max| PrefixDecoder::with_max_length(PrefixWidth::Int8, max),
        |_| 1,
    );
});
