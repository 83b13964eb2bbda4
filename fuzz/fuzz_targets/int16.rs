//! PrefixDecoder with a 2-byte length prefix (Int16StringReceiver).
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocols::framing::{PrefixDecoder, PrefixWidth};

fuzz_target!(|data: &[u8]| {
    torsion_fuzz::check_decoder(
        data,
        |max| PrefixDecoder::with_max_length(PrefixWidth::Int16, max),
        |_| 2,
    );
});
