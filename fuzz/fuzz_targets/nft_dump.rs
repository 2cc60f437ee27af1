//! libFuzzer entry of the `nft_dump` target; the body is [`cryo_fuzz::targets::nft_dump`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::nft_dump(data));
