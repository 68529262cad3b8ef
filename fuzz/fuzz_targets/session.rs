//! Arbitrary client bytes through the whole sans-IO intake (see `gmail_relay::intake::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gmail_relay::intake::fuzz::session(data);
});
