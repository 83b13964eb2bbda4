//! NetstringDecoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocols::framing::NetstringDecoder;

fuzz_target!(|data: &[u8]| {
    torsion_fuzz::check_decoder(data, NetstringDecoder::with_max_length, |max| {
        max.to_string().len() + 2
    });
});
