//! libFuzzer entry of the `inet_diag` target; the body is [`cryo_fuzz::targets::inet_diag`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::inet_diag(data));
