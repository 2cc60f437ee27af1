//! libFuzzer entry of the `family_diag` target; the body is [`cryo_fuzz::targets::family_diag`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::family_diag(data));
