//! libFuzzer entry of the `netlink_acks` target; the body is [`cryo_fuzz::targets::netlink_acks`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryo_fuzz::targets::netlink_acks(data));
