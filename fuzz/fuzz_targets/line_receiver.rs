//! LineReceiver: raw/line mode switches and pauses, whole vs byte-by-byte reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() <= 4096 {
        torsion_fuzz::check_line_receiver(data);
    }
});
