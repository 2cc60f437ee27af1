//! libFuzzer entry of the `unix_diag` target; the body is [`cryo_fuzz::targets::unix_diag`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::unix_diag(data));
