//! The fuzz targets of cryo's parsers of bytes it does not control, their seed corpora, and
//! a small deterministic mutator so the same targets also run under stable `cargo test`.
//!
//! ```text
//! target          parser (pure entry point: bytes in, typed value or error out)
//! image_frame     cryo_proto::frame::decode, every image kind (as read, and with its
//!                 checksums made valid so the record walk and protobuf decode are reached)
//! image_checks    cryo_proto::sanity::{check_entry, check_core, check_mm}: the semantic
//!                 checks a restore runs after decoding, on valid-framed mutated images
//! unix_diag       cryo_unix_sockets::diag::parse_answer (unix_diag answers)
//! inet_diag       cryo_tcp_repair::parse_listener_answer (inet_diag answers)
//! family_diag     cryo_unix_sockets::family_diag::{parse_packet_answer, parse_netlink_answer}
//!                 (packet_diag and netlink_diag answers)
//! netlink_acks    cryo_netns::replies::parse_acks (NLMSG_ERROR ACKs, extended ACK TLVs)
//! nft_dump        cryo_netns::replies::{parse_dump_part, parse_table} (GETTABLE dump)
//! resume_record   cryo_resume::{parse_record, marker_channel, is_fifo_channel_path}
//! stream_frame    cryo_stream::frame::decode (image stream frames) and the control message
//!                 each frame type carries
//! ```
//!
//! A target panics only when a parser breaks its contract: it panicked itself, or accepted
//! bytes whose value does not survive a second round. Errors are the expected answer.

pub mod mutate;
pub mod seeds;
pub mod targets;

/// A target: a function of the fuzzer's bytes that panics only on a broken contract.
pub type Target = fn(&[u8]);

/// Every target: its name (as in fuzz_targets/ and fuzz/corpus/) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("image_frame", targets::image_frame),
    ("image_checks", targets::image_checks),
    ("unix_diag", targets::unix_diag),
    ("inet_diag", targets::inet_diag),
    ("netlink_acks", targets::netlink_acks),
    ("nft_dump", targets::nft_dump),
    ("resume_record", targets::resume_record),
    ("family_diag", targets::family_diag),
    ("stream_frame", targets::stream_frame),
];
