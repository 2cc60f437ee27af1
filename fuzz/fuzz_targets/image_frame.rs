//! libFuzzer entry of the `image_frame` target; the body is [`cryo_fuzz::targets::image_frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::image_frame(data));
