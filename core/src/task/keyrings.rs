//! Keyrings of a task (keyrings(7)): a session keyring of its own comes back as a new one
//! like it (owner, permissions, its user keys with theirs) when it is anonymous, or as itself
//! when `cryo restore` runs in it; thread and process keyrings, and keys cryo cannot give
//! back (logon keys, nested keyrings, keys the process may not read), are refused at dump.
//!
//! ```text
//! dump     remote:  keyctl GET_KEYRING_ID of session, user session and thread keyrings in
//!                   every thread's batch (threads.rs); process keyring, DESCRIBE and READ
//!                   of an own session keyring, DESCRIBE and READ of each key, in the main
//!                   thread
//!          refuse:  thread or process keyring; a thread in another session keyring than its
//!                   process; keys or a name in a session keyring not cryo's
//! restore  check:   a root's keyring against `cryo restore`'s own (before anything is made)
//!          child:   KEYCTL_JOIN_SESSION_KEYRING(NULL), SETPERM, CHOWN, add_key of each key
//!                   where its parent (for a root, cryo) is in another, before its children
//! ```
//!
//! A restored process is a fork of `cryo restore` and inherits its session keyring: a process
//! that had none of its own (its keyctl finding its user's session keyring) comes back right
//! only from a `cryo restore` without one either.

use std::io;

use cryo_proto::image::{Key, ProcessAttrs, SessionKeyring, TaskCore, ThreadAttrs};
use nix::unistd::Pid;

use super::attrs::AttrError;
use crate::error::{Error, Result};
use crate::remote::{BatchCall, Remote, Scratch};
use crate::restore::error::{ChildError, ChildStep};
use crate::sys::keyctl::{self, KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING};

/// The description KEYCTL_JOIN_SESSION_KEYRING gives a new anonymous session keyring.
const ANONYMOUS: &str = "_ses";
/// Room for KEYCTL_DESCRIBE's "type;uid;gid;perm;description".
const DESCRIBE_LEN: usize = 256;
/// The largest key payload read (a user key holds up to 32767 bytes; systemd's
/// invocation_id 16): a larger one is left out, so its keyring is refused.
const PAYLOAD_MAX: usize = 1024;
/// The most keys of a session keyring read.
const KEYS_MAX: usize = 64;
/// The key type made again: "user" (logon keys cannot be read back, keyrings are not nested).
const USER: &str = "user";

/// Reads, by calls in the stopped main thread `tid` (`remote`, with `scratch`), whether the
/// process has a process keyring and, when its session keyring `session` is not its user's
/// (`user_session`), what that keyring is, into `p`.
pub fn dump_process(
    tid: Pid,
    remote: &Remote,
    scratch: &Scratch,
    p: &mut ProcessAttrs,
    session: i32,
    user_session: i32,
) -> Result<()> {
    let own = session != user_session;
    // The process keyring's read last: ENOKEY (none) ends the batch.
    type MakeCall = fn(u64) -> BatchCall;
    let mut calls: Vec<(&str, MakeCall)> = Vec::new();
    if own {
        calls.push(("describe the session keyring", |slot| {
            keyctl::describe_call(KEY_SPEC_SESSION_KEYRING, slot, DESCRIBE_LEN as u64)
        }));
        calls.push(("count the session keyring's keys", |_| {
            keyctl::links_len_call(KEY_SPEC_SESSION_KEYRING)
        }));
    }
    calls.push(("process keyring", |_| {
        keyctl::keyring_id_call(KEY_SPEC_PROCESS_KEYRING)
    }));
    let (out, results, failed) =
        scratch.batch_reading_until_failure(remote, calls.len(), DESCRIBE_LEN, |i, slot| {
            calls[i].1(slot)
        });
    match failed {
        Some(e) if e.index + 1 == calls.len() && e.error.raw_os_error() == Some(libc::ENOKEY) => {}
        Some(e) => return Err(Error::sys(tid, calls[e.index].0, e.error)),
        None => p.process_keyring = true,
    }
    if own {
        let mut keyring = parse_description(&c_string(&out[..DESCRIBE_LEN])).ok_or_else(|| {
            Error::sys(
                tid,
                "describe the session keyring",
                io::Error::from(io::ErrorKind::InvalidData),
            )
        })?;
        keyring.serial = session;
        keyring.links = (results[1] / 4) as u32;
        if keyring.links > 0 {
            keyring.keys = read_keys(tid, remote, scratch, keyring.links as usize)?;
        }
        keyring.expiring = expiring(&keyring)
            .map_err(|e| Error::sys(tid, "read /proc/keys as the keys' owners", e))?;
        p.session_keyring = Some(keyring);
    }
    Ok(())
}

/// The "user" keys the session keyring of the stopped thread `tid` links (`links` of them),
/// read in it: the serials (KEYCTL_READ of the keyring), then each one's description and
/// payload. Stops at the first key it may not read (or not a user key): its keyring, missing
/// keys, is then refused.
fn read_keys(tid: Pid, remote: &Remote, scratch: &Scratch, links: usize) -> Result<Vec<Key>> {
    let len = links.min(KEYS_MAX) * 4;
    let (out, _, failed) = scratch.batch_reading_until_failure(remote, 1, len, |_, slot| {
        keyctl::read_call(KEY_SPEC_SESSION_KEYRING, slot, len as u64)
    });
    if let Some(e) = failed {
        return Err(Error::sys(tid, "list the session keyring's keys", e.error));
    }
    let serials: Vec<i32> = out
        .chunks_exact(4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let out_len = DESCRIBE_LEN.max(PAYLOAD_MAX);
    let (out, results, _) =
        scratch.batch_reading_until_failure(remote, serials.len() * 2, out_len, |i, slot| {
            let serial = serials[i / 2];
            if i % 2 == 0 {
                keyctl::describe_call(serial, slot, DESCRIBE_LEN as u64)
            } else {
                keyctl::read_call(serial, slot, PAYLOAD_MAX as u64)
            }
        });
    let mut keys = Vec::new();
    for (k, &serial) in serials.iter().enumerate() {
        let (Some(_), Some(&payload_len)) = (results.get(2 * k), results.get(2 * k + 1)) else {
            break;
        };
        let at = |i: usize| &out[i * out_len..(i + 1) * out_len];
        let Some(mut key) = parse_key(c_string(at(2 * k))) else {
            break;
        };
        if key.key_type != USER || payload_len as usize > PAYLOAD_MAX {
            break;
        }
        key.serial = serial;
        key.payload = at(2 * k + 1)[..payload_len as usize].to_vec();
        keys.push(key);
    }
    Ok(keys)
}

/// The serials of `keyring` and of its keys that have an expiry time, or whose owner may not
/// view them in /proc/keys (cryo cannot tell): each read there as its owner reads it.
fn expiring(keyring: &SessionKeyring) -> io::Result<Vec<i32>> {
    let mut objects = vec![(keyring.serial, keyring.uid, keyring.gid)];
    objects.extend(keyring.keys.iter().map(|k| (k.serial, k.uid, k.gid)));
    let mut owners: Vec<(u32, u32)> = objects.iter().map(|&(_, u, g)| (u, g)).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut permanent = Vec::new();
    for (uid, gid) in owners {
        let text = keyctl::proc_keys_as(uid, gid)?;
        permanent.extend(text.lines().filter_map(permanent_serial));
    }
    Ok(objects
        .iter()
        .map(|&(serial, ..)| serial)
        .filter(|serial| !permanent.contains(serial))
        .collect())
}

/// The serial of a /proc/keys line whose timeout column says "perm" (no expiry).
fn permanent_serial(line: &str) -> Option<i32> {
    let mut fields = line.split_whitespace();
    let serial = u32::from_str_radix(fields.next()?, 16).ok()? as i32;
    (fields.nth(2)? == "perm").then_some(serial)
}

/// The text before the first NUL of `bytes`.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// KEYCTL_DESCRIBE's answer of a key (not a keyring).
fn parse_key(text: String) -> Option<Key> {
    let mut fields = text.splitn(5, ';');
    Some(Key {
        key_type: fields.next()?.to_string(),
        uid: fields.next()?.parse().ok()?,
        gid: fields.next()?.parse().ok()?,
        perm: u32::from_str_radix(fields.next()?, 16).ok()?,
        description: fields.next()?.to_string(),
        ..Default::default()
    })
}

/// KEYCTL_DESCRIBE's answer, "type;uid;gid;perm;description" (perm in hex), of a keyring.
fn parse_description(text: &str) -> Option<SessionKeyring> {
    let key = parse_key(text.to_string()).filter(|k| k.key_type == "keyring")?;
    Some(SessionKeyring {
        uid: key.uid,
        gid: key.gid,
        perm: key.perm,
        description: key.description,
        ..Default::default()
    })
}

/// Refuses, naming pid (and thread) and keyring, what of `core`'s keyrings a restore could not
/// give back; `own`: the session keyring of the dumping cryo's own, if any.
pub fn refuse(pid: Pid, core: &TaskCore, own: Option<i32>) -> std::result::Result<(), AttrError> {
    let unrestorable = |tid: i32, attribute, value: String, why| AttrError::Unrestorable {
        pid,
        tid: Pid::from_raw(tid),
        attribute,
        value,
        why,
    };
    let Some(p) = &core.attrs else {
        return Ok(());
    };
    if p.process_keyring {
        return Err(unrestorable(
            pid.as_raw(),
            "process keyring (keyctl KEY_SPEC_PROCESS_KEYRING)",
            "present".into(),
            "cryo does not make process keyrings again (their keys may be secrets an image \
             would hold)",
        ));
    }
    let main = core.threads.first().and_then(|t| t.attrs.as_ref());
    for thread in &core.threads {
        let Some(a) = &thread.attrs else { continue };
        if a.thread_keyring {
            return Err(unrestorable(
                thread.tid,
                "thread keyring (keyctl KEY_SPEC_THREAD_KEYRING)",
                "present".into(),
                "cryo does not make thread keyrings again (their keys may be secrets an \
                 image would hold)",
            ));
        }
        // Threads of different uids that joined none each find their own user's session
        // keyring: so do the restored ones, once their credentials are set again.
        let both_users = |m: &ThreadAttrs| m.session_keyring_is_users && a.session_keyring_is_users;
        if let Some(m) = main.filter(|m| m.session_keyring != a.session_keyring && !both_users(m)) {
            return Err(unrestorable(
                thread.tid,
                "session keyring",
                format!(
                    "{} (its process's: {})",
                    a.session_keyring, m.session_keyring
                ),
                "a thread that joined a session keyring of its own: keyrings are restored per \
                 process",
            ));
        }
    }
    match &p.session_keyring {
        Some(k) if Some(k.serial) != own && !k.expiring.is_empty() => Err(unrestorable(
            pid.as_raw(),
            "session keyring",
            format!(
                "{} \"{}\": {:?} expire (keyctl timeout) or cannot be seen to",
                k.serial, k.description, k.expiring
            ),
            "the kernel shows the time a key has left only to the minute, hour or day above a \
             minute (/proc/keys): a key made again would expire at another time; dump and \
             restore from within that session keyring to keep it",
        )),
        Some(k) if Some(k.serial) != own && !makeable(k) => Err(unrestorable(
            pid.as_raw(),
            "session keyring",
            format!(
                "{} \"{}\" with {} keys, {} of them user keys it may read",
                k.serial,
                k.description,
                k.links,
                k.keys.len()
            ),
            "only an anonymous session keyring whose keys are user keys it may read (up to \
             1 KiB) is made again; dump and restore from within that session keyring to keep it",
        )),
        _ => Ok(()),
    }
}

/// Whether a restore can make keyring `k` again: an anonymous one whose keys were all read.
fn makeable(k: &SessionKeyring) -> bool {
    k.links as usize == k.keys.len() && k.description == ANONYMOUS
}

/// The serial of `core`'s session keyring of its own (None: none).
pub fn serial(core: &TaskCore) -> Option<i32> {
    core.attrs
        .as_ref()
        .and_then(|p| p.session_keyring.as_ref())
        .map(|k| k.serial)
}

/// Why root `core` of an image cannot come back with its session keyring from a `cryo
/// restore` whose own is `own` (None: it has none), if it cannot: checked before anything is
/// made.
pub fn refuse_root(core: &TaskCore, own: Option<i32>) -> Option<String> {
    let pid = core.pid;
    match (
        core.attrs.as_ref().and_then(|p| p.session_keyring.as_ref()),
        own,
    ) {
        (None, Some(own)) => Some(format!(
            "pid {pid} had no session keyring of its own; forked by this `cryo restore`, it \
             would get cryo's ({own}): run the restore without one (as a service, or under \
             `setsid` from a session without pam_keyinit)"
        )),
        (Some(k), own) if Some(k.serial) != own && !makeable(k) => Some(format!(
            "pid {pid}'s session keyring {} \"{}\" with {} keys was the dumping cryo's: run \
             the restore in that session keyring",
            k.serial, k.description, k.links
        )),
        _ => None,
    }
}

/// In a forked process of the restore, before its children: a new session keyring like the
/// dumped one where its parent (`parent`; for a root, `cryo restore` with `own`) was in
/// another.
pub fn restore_in_child(
    core: &TaskCore,
    parent: Option<&TaskCore>,
    own: Option<i32>,
) -> std::result::Result<(), ChildError> {
    let Some(k) = core.attrs.as_ref().and_then(|p| p.session_keyring.as_ref()) else {
        return Ok(());
    };
    let inherited = match parent {
        Some(parent) => serial(parent),
        None => own,
    };
    if inherited == Some(k.serial) {
        return Ok(());
    }
    let failed = |what: String| ChildError::sys_on(ChildStep::Attribute, what);
    keyctl::join_new_session_keyring(k.perm, k.uid, k.gid)
        .map_err(failed("session keyring".into()))?;
    for key in &k.keys {
        keyctl::add_user_key(&key.description, &key.payload, key.perm, key.uid, key.gid).map_err(
            failed(format!("key {:?} of the session keyring", key.description)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_is_read_as_keyctl_describes_it() {
        let k = parse_description("keyring;33;34;3f1f0000;_ses").unwrap();
        assert_eq!((k.uid, k.gid, k.perm), (33, 34, 0x3f1f_0000));
        assert_eq!(k.description, "_ses");
        let named = parse_description("keyring;0;0;3f030000;a;b").unwrap();
        assert_eq!(named.description, "a;b");
        assert!(parse_description("user;0;0;3f030000;x").is_none());
    }

    #[test]
    fn a_key_without_expiry_is_told_by_its_proc_keys_line() {
        let line = "2a8b3c4d I--Q---     1 perm 3f010000     0     0 user      k: 5";
        assert_eq!(permanent_serial(line), Some(0x2a8b_3c4d));
        let line = "2a8b3c4d I--Q---     1 59s 3f010000     0     0 user      k: 5";
        assert_eq!(permanent_serial(line), None);
        assert_eq!(permanent_serial("junk"), None);
    }

    #[test]
    fn only_an_empty_anonymous_keyring_or_cryos_own_comes_back() {
        let pid = Pid::from_raw(7);
        let core = |k: Option<SessionKeyring>| TaskCore {
            pid: 7,
            attrs: Some(ProcessAttrs {
                session_keyring: k,
                ..Default::default()
            }),
            ..Default::default()
        };
        let ses = |serial, links, description: &str| SessionKeyring {
            serial,
            links,
            description: description.into(),
            ..Default::default()
        };
        refuse(pid, &core(Some(ses(5, 0, "_ses"))), None).unwrap();
        refuse(pid, &core(Some(ses(5, 2, "_ses"))), Some(5)).unwrap();
        let err = refuse(pid, &core(Some(ses(5, 2, "_ses"))), Some(6)).unwrap_err();
        assert!(err.to_string().contains("session keyring"), "{err}");
        assert!(refuse(pid, &core(Some(ses(5, 0, "mine"))), None).is_err());
        let mut expiring = ses(5, 0, "_ses");
        expiring.expiring = vec![5];
        let err = refuse(pid, &core(Some(expiring.clone())), None).unwrap_err();
        assert!(err.to_string().contains("expire"), "{err}");
        refuse(pid, &core(Some(expiring)), Some(5)).unwrap();
        assert!(refuse_root(&core(None), Some(9)).is_some());
        assert!(refuse_root(&core(None), None).is_none());
        assert!(refuse_root(&core(Some(ses(5, 1, "_ses"))), Some(5)).is_none());
        assert!(refuse_root(&core(Some(ses(5, 1, "_ses"))), None).is_some());
    }
}
