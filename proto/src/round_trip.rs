//! Round-trip property tests of every image record: encode -> frame -> decode gives the same
//! value, and a flipped bit or a cut file is refused naming the file and the record.
//!
//! The values are generated (proptest; the generated types derive `Arbitrary` in test builds,
//! see build.rs). A new message in proto/image.proto is one line in [`every_message!`]; the
//! test `every_message_of_the_schema_is_tested` fails until it is there.

use std::path::Path;

use proptest::prelude::*;
use prost::Message;

use crate::frame::{decode, encode, ImageError, ImageKind};
use crate::image;

/// The file name the errors must carry.
const FILE: &str = "some-dir/record.img";

/// Frames `records`, decodes them back and compares.
fn check_round_trip<M: Message + Default + PartialEq>(records: &[M]) -> Result<(), TestCaseError> {
    let buf = encode(ImageKind::Core, records);
    let back: Vec<M> = decode(Path::new(FILE), ImageKind::Core, &buf)
        .map_err(|e| TestCaseError::fail(format!("decode of a fresh frame: {e}")))?;
    prop_assert!(
        back == records,
        "decoded records differ from the encoded ones"
    );
    Ok(())
}

/// The part of the frame a byte belongs to: "header" or "record N".
fn part_of<M: Message>(records: &[M], byte: usize) -> String {
    let mut end = 32;
    if byte < end {
        return "header".into();
    }
    for (i, r) in records.iter().enumerate() {
        end += 8 + r.encoded_len();
        if byte < end {
            return format!("record {i}");
        }
    }
    unreachable!("byte {byte} past the end of the frame")
}

/// A flipped bit anywhere is refused, naming the file and the part (header or record) hit.
fn check_flip_refused<M: Message + Default>(
    records: &[M],
    at: prop::sample::Index,
    bit: u8,
) -> Result<(), TestCaseError> {
    let mut buf = encode(ImageKind::Core, records);
    let byte = at.index(buf.len());
    buf[byte] ^= 1 << (bit % 8);
    let err = match decode::<M>(Path::new(FILE), ImageKind::Core, &buf) {
        Ok(_) => {
            return Err(TestCaseError::fail(format!(
                "accepted a flip in byte {byte}"
            )))
        }
        Err(e) => e,
    };
    let text = err.to_string();
    prop_assert!(text.contains(FILE), "{text}");
    let part = part_of(records, byte);
    // The magic, version and kind are judged before any checksum: those errors say what
    // they found instead of "header".
    let judged_early = matches!(
        err,
        ImageError::BadMagic { .. }
            | ImageError::Version { .. }
            | ImageError::OlderFormat { .. }
            | ImageError::WrongKind { .. }
    );
    prop_assert!(
        (part == "header" && judged_early) || text.contains(&part),
        "a flip in byte {byte} ({part}) was refused as: {text}"
    );
    Ok(())
}

/// A frame cut anywhere is refused, naming the file and the record cut (or the header).
fn check_cut_refused<M: Message + Default>(
    records: &[M],
    at: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let buf = encode(ImageKind::Core, records);
    let len = at.index(buf.len());
    let err = match decode::<M>(Path::new(FILE), ImageKind::Core, &buf[..len]) {
        Ok(_) => return Err(TestCaseError::fail(format!("accepted a cut at {len}"))),
        Err(e) => e,
    };
    let text = err.to_string();
    prop_assert!(text.contains(FILE), "{text}");
    let part = part_of(records, len);
    prop_assert!(
        matches!(err, ImageError::Truncated { .. }) && (part == "header" || text.contains(&part)),
        "a cut at {len} ({part}) was refused as: {text}"
    );
    Ok(())
}

/// One module of three properties per message type.
macro_rules! every_message {
    ($($name:ident),* $(,)?) => {
        /// The message names this file tests, to compare with the schema's.
        const TESTED: &[&str] = &[$(stringify!($name)),*];

        $(
            #[allow(non_snake_case)]
            mod $name {
                use super::*;

                proptest! {
                    #![proptest_config(ProptestConfig::with_cases(32))]

                    #[test]
                    fn round_trips(records in prop::collection::vec(any::<image::$name>(), 0..4)) {
                        check_round_trip(&records)?;
                    }

                    #[test]
                    fn a_flipped_bit_is_refused(
                        records in prop::collection::vec(any::<image::$name>(), 1..4),
                        at in any::<prop::sample::Index>(),
                        bit in any::<u8>(),
                    ) {
                        check_flip_refused(&records, at, bit)?;
                    }

                    #[test]
                    fn a_cut_frame_is_refused(
                        records in prop::collection::vec(any::<image::$name>(), 1..4),
                        at in any::<prop::sample::Index>(),
                    ) {
                        check_cut_refused(&records, at)?;
                    }
                }
            }
        )*
    };
}

every_message!(
    RawFileRef,
    UtsNamespace,
    TimeNamespace,
    CgroupMembership,
    CgroupNamespace,
    CgroupSettings,
    NetNamespace,
    NetAddress,
    NetRoute,
    NetLink,
    NetLinkPeer,
    NetSysctl,
    NftObject,
    XtTable,
    ConntrackEntry,
    MountNamespace,
    UserNamespace,
    NamespaceMount,
    BinfmtMisc,
    BinfmtFormat,
    MountPropagation,
    MountRemount,
    OuterGroup,
    TreeEntry,
    CgroupFile,
    CgroupFileOwner,
    IpcNamespace,
    IpcSysctl,
    Inventory,
    CgroupRoot,
    ProcessEntry,
    Creds,
    Rlimit,
    SigAction,
    SigInfo,
    SigAltStack,
    Rseq,
    X86Regs,
    ThreadCore,
    ThreadSecurity,
    SeccompFilter,
    FdEntry,
    TaskCore,
    ITimer,
    PosixTimer,
    Vma,
    PageRun,
    MmCore,
    AioRing,
    RegularFile,
    Pipe,
    PipePacket,
    Socket,
    FileDesc,
    BpfMap,
    BpfMapEntry,
    EventFd,
    TimerFd,
    SignalFd,
    EpollTarget,
    Epoll,
    InotifyWatch,
    Inotify,
    FanotifyMark,
    Fanotify,
    Memfd,
    FileExtent,
    Shmem,
    Tty,
    ResumeChannel,
    InetAddr,
    SocketOptions,
    TcpOptions,
    TcpWindow,
    WindowScale,
    TcpConnection,
    TcpListener,
    UdpSocket,
    McastMembership,
    QueuedDatagram,
    TcpUnconnected,
    TcpConnecting,
    UnixCreds,
    UnixPeerCred,
    UnixMessage,
    UnixPendingConnection,
    SocketFileAttrs,
    UnixSocket,
    SocketIntOption,
    PacketSocket,
    PacketMembership,
    PacketRing,
    NetlinkSocket,
    ThreadAttrs,
    SyscallUserDispatch,
    ProcessAttrs,
    SysvShm,
    SysvSem,
    SysvMessage,
    SysvMsgQueue,
    SysvIpc,
    FileLock,
    FdOwner,
    RawSocketOption,
    LinkedInode,
    Pidfd,
    ProcFile,
    GuardRegion,
    HugeRange,
    LazyFreeRange,
    Pty,
    MigrationCheck,
    CheckedFile,
    CheckedProcess,
    CheckedPort,
    CheckedId,
    CheckedAioRing,
    CheckedHugePages,
    PreCopyRound,
    RemovedDir,
    RemovedNode,
    InodeAttrs,
    Xattr,
    PosixMqueue,
    PosixMqMessage,
    SessionKeyring,
    Key,
    LineTerminal,
);

#[test]
fn every_message_of_the_schema_is_tested() {
    let schema = include_str!("../proto/image.proto");
    let declared: Vec<&str> = schema
        .lines()
        .filter_map(|l| l.strip_prefix("message "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&&str> = declared.iter().filter(|m| !TESTED.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "messages of image.proto without round-trip tests (add them to every_message!): {missing:?}"
    );
}
