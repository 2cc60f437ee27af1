//! Keyrings of a task (keyrings(7)): a session keyring of its own comes back as a new one
//! like it (description, owner, permissions) when it is empty and anonymous, or as itself
//! when `cryo restore` runs in it; thread and process keyrings, and keys cryo cannot give
//! back, are refused at dump.
//!
//! ```text
//! dump     remote:  keyctl GET_KEYRING_ID of session, user session and thread keyrings in
//!                   every thread's batch (threads.rs); process keyring, DESCRIBE and READ
//!                   (the number of keys) of an own session keyring in the main thread
//!          refuse:  thread or process keyring; a thread in another session keyring than its
//!                   process; keys or a name in a session keyring not cryo's
//! restore  check:   a root's keyring against `cryo restore`'s own (before anything is made)
//!          child:   KEYCTL_JOIN_SESSION_KEYRING(NULL), SETPERM, CHOWN where its parent (for
//!                   a root, cryo) is in another, before its children are forked
//! ```
//!
//! A restored process is a fork of `cryo restore` and inherits its session keyring: a process
//! that had none of its own (its keyctl finding its user's session keyring) comes back right
//! only from a `cryo restore` without one either.

use std::io;

use cryo_proto::image::{ProcessAttrs, SessionKeyring, TaskCore};
use nix::unistd::Pid;

use super::attrs::AttrError;
use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::restore::error::{ChildError, ChildStep};
use crate::sys::keyctl::{self, KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING};

/// The description KEYCTL_JOIN_SESSION_KEYRING gives a new anonymous session keyring.
const ANONYMOUS: &str = "_ses";
/// Room for KEYCTL_DESCRIBE's "type;uid;gid;perm;description".
const DESCRIBE_LEN: usize = 256;

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
    let mut calls = Vec::new();
    if own {
        calls.push(("describe the session keyring", 0));
        calls.push(("count the session keyring's keys", 1));
    }
    calls.push(("process keyring", 2));
    let (out, results, failed) = scratch.batch_reading_until_failure(
        remote,
        calls.len(),
        DESCRIBE_LEN,
        |i, slot| match calls[i].1 {
            0 => keyctl::describe_call(KEY_SPEC_SESSION_KEYRING, slot, DESCRIBE_LEN as u64),
            1 => keyctl::links_len_call(KEY_SPEC_SESSION_KEYRING),
            _ => keyctl::keyring_id_call(KEY_SPEC_PROCESS_KEYRING),
        },
    );
    match failed {
        Some(e) if e.index + 1 == calls.len() && e.error.raw_os_error() == Some(libc::ENOKEY) => {}
        Some(e) => return Err(Error::sys(tid, calls[e.index].0, e.error)),
        None => p.process_keyring = true,
    }
    if own {
        let text = &out[..DESCRIBE_LEN];
        let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
        let mut keyring = parse_description(&String::from_utf8_lossy(text)).ok_or_else(|| {
            Error::sys(
                tid,
                "describe the session keyring",
                io::Error::from(io::ErrorKind::InvalidData),
            )
        })?;
        keyring.serial = session;
        keyring.links = (results[1] / 4) as u32;
        p.session_keyring = Some(keyring);
    }
    Ok(())
}

/// KEYCTL_DESCRIBE's answer, "type;uid;gid;perm;description" (perm in hex), of a keyring.
fn parse_description(text: &str) -> Option<SessionKeyring> {
    let mut fields = text.splitn(5, ';');
    if fields.next()? != "keyring" {
        return None;
    }
    Some(SessionKeyring {
        uid: fields.next()?.parse().ok()?,
        gid: fields.next()?.parse().ok()?,
        perm: u32::from_str_radix(fields.next()?, 16).ok()?,
        description: fields.next()?.to_string(),
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
        if let Some(m) = main.filter(|m| m.session_keyring != a.session_keyring) {
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
        Some(k) if Some(k.serial) != own && !makeable(k) => Err(unrestorable(
            pid.as_raw(),
            "session keyring",
            format!("{} \"{}\" with {} keys", k.serial, k.description, k.links),
            "only an empty anonymous session keyring is made again (keys are not dumped: they \
             may be secrets); dump and restore from within that session keyring to keep it",
        )),
        _ => Ok(()),
    }
}

/// Whether a restore can make keyring `k` again: an empty anonymous one.
fn makeable(k: &SessionKeyring) -> bool {
    k.links == 0 && k.description == ANONYMOUS
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
    keyctl::join_new_session_keyring(k.perm, k.uid, k.gid)
        .map_err(|e| ChildError::sys_on(ChildStep::Attribute, "session keyring")(e))
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
        assert!(refuse_root(&core(None), Some(9)).is_some());
        assert!(refuse_root(&core(None), None).is_none());
        assert!(refuse_root(&core(Some(ses(5, 1, "_ses"))), Some(5)).is_none());
        assert!(refuse_root(&core(Some(ses(5, 1, "_ses"))), None).is_some());
    }
}
