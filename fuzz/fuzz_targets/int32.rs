//! PrefixDecoder with a 4-byte length prefix (Int32StringReceiver).
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocols::framing::{PrefixDecoder, PrefixWidth};

fuzz_target!(|data: &[u8]| {
    torsion_fuzz::check_decoder(
        data,
        |max| PrefixDecoder::with_max_length(PrefixWidth::Int32, max),
        |_| 4,
    );
});
