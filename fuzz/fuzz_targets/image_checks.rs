//! libFuzzer entry of the `image_checks` target; the body is [`cryo_fuzz::targets::image_checks`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::image_checks(data));
