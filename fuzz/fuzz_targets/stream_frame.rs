//! libFuzzer entry of the `stream_frame` target; the body is [`cryo_fuzz::targets::stream_frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::stream_frame(data));
