//! keyctl(2) on cryo's own keyrings: which session keyring it has, and the calls a restored
//! process makes to join a new one like the one it had (nix and libc do not wrap keyctl).

use std::io;

use super::check;

/// The keyctl operations used (linux/keyctl.h).
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_CHOWN: libc::c_long = 4;
const KEYCTL_SETPERM: libc::c_long = 5;

/// The special keyring ids (linux/keyctl.h): the caller's thread, process and session
/// keyrings, and its user's session keyring (what a process without a session keyring of its
/// own finds as its session keyring).
pub const KEY_SPEC_THREAD_KEYRING: i32 = -1;
pub const KEY_SPEC_PROCESS_KEYRING: i32 = -2;
pub const KEY_SPEC_SESSION_KEYRING: i32 = -3;
pub const KEY_SPEC_USER_SESSION_KEYRING: i32 = -5;

/// The keyctl call asking the serial of special keyring `spec` of whoever runs it, without
/// making one (ENOKEY where there is none): run in a target by a remote call.
pub fn keyring_id_call(spec: i32) -> (i64, [u64; 6]) {
    (
        libc::SYS_keyctl,
        [KEYCTL_GET_KEYRING_ID as u64, spec as i64 as u64, 0, 0, 0, 0],
    )
}

/// The serial of cryo's own special keyring `spec`, without making one.
pub fn own_keyring_id(spec: i32) -> io::Result<i32> {
    // SAFETY: integer arguments only.
    let id = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            spec as libc::c_long,
            0 as libc::c_long,
        )
    })?;
    Ok(id as i32)
}

/// The session keyring of cryo's own, if it has one (else its keyctl finds its user's).
/// Asked on a short-lived thread: a thread without a session keyring that names
/// KEY_SPEC_SESSION_KEYRING gets its user's session keyring installed in its credentials
/// (lookup_user_key: "always install a session keyring upon access"), which the processes
/// cryo forks would inherit, and keep after a change of uid. Asked once per run (cryo never
/// joins a keyring in its own threads).
pub fn own_session_keyring() -> io::Result<Option<i32>> {
    static OWN: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    if let Some(own) = OWN.get() {
        return Ok(*own);
    }
    let own = std::thread::scope(|s| {
        s.spawn(|| {
            let session = own_keyring_id(KEY_SPEC_SESSION_KEYRING)?;
            let user_session = own_keyring_id(KEY_SPEC_USER_SESSION_KEYRING)?;
            Ok((session != user_session).then_some(session))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the keyring thread panicked")))
    })?;
    Ok(*OWN.get_or_init(|| own))
}

/// Joins a new anonymous session keyring ("_ses") with permissions `perm`, owned by `uid` and
/// `gid`: in a restored process, whose creds are still root's (keys added after it may be
/// given to its user).
pub fn join_new_session_keyring(perm: u32, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a null name: a new anonymous keyring; the other calls take integers.
    let id = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    })?;
    set_perm_and_owner(id, perm, uid, gid)
}

/// KEYCTL_DESCRIBE and KEYCTL_READ (linux/keyctl.h).
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_READ: libc::c_long = 11;

/// The keyctl call writing "type;uid;gid;perm;description" of keyring `spec` of whoever runs
/// it into `len` bytes at `buf` (answering the length it needs, its NUL included).
pub fn describe_call(spec: i32, buf: u64, len: u64) -> (i64, [u64; 6]) {
    (
        libc::SYS_keyctl,
        [KEYCTL_DESCRIBE as u64, spec as i64 as u64, buf, len, 0, 0],
    )
}

/// The keyctl call answering how many bytes the list of keys linked in keyring `spec` of
/// whoever runs it takes (four per key), writing none.
pub fn links_len_call(spec: i32) -> (i64, [u64; 6]) {
    read_call(spec, 0, 0)
}

/// The keyctl call reading key `id` (a keyring: its keys' serials) into `len` bytes at `buf`,
/// answering its whole length.
pub fn read_call(id: i32, buf: u64, len: u64) -> (i64, [u64; 6]) {
    (
        libc::SYS_keyctl,
        [KEYCTL_READ as u64, id as i64 as u64, buf, len, 0, 0],
    )
}

/// Adds a "user" key `description` holding `payload` to the caller's session keyring, with
/// permissions `perm`, owned by `uid` and `gid`.
pub fn add_user_key(
    description: &str,
    payload: &[u8],
    perm: u32,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let ty = std::ffi::CString::new("user").map_err(io::Error::other)?;
    let description = std::ffi::CString::new(description).map_err(io::Error::other)?;
    // SAFETY: live NUL-terminated strings and a payload of the length given.
    let id = check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING as libc::c_long,
        )
    })?;
    set_perm_and_owner(id, perm, uid, gid)
}

/// KEYCTL_SETPERM, then KEYCTL_CHOWN, of key `id` (the caller still root).
fn set_perm_and_owner(id: libc::c_long, perm: u32, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, perm as libc::c_long) })?;
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_CHOWN,
            id,
            uid as libc::c_long,
            gid as libc::c_long,
        )
    })?;
    Ok(())
}

/// /proc/keys as a thread of cryo whose filesystem uid and gid are `uid` and `gid` reads it:
/// the keys that owner (or its group, or anyone) may view, with their expiry times. The ids
/// are the thread's own (setfsuid and setfsgid change only the calling thread), which ends
/// with the read.
pub fn proc_keys_as(uid: u32, gid: u32) -> io::Result<String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: integer arguments only; they change this short-lived thread's
            // credentials alone (the raw calls, not glibc's process-wide wrappers).
            unsafe {
                libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
                libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
            }
            // setfs*id answer the old id whatever happened: read back to see they took.
            // SAFETY: as above; -1 changes nothing and answers the current id.
            let now = unsafe {
                (
                    libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long),
                    libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long),
                )
            };
            if now != (uid as i64, gid as i64) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            std::fs::read_to_string("/proc/keys")
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the /proc/keys reader panicked")))
    })
}
