//! libFuzzer entry of the `resume_record` target; the body is [`cryo_fuzz::targets::resume_record`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::resume_record(data));
