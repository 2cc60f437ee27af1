//! UTS namespaces: the host and domain names of another namespace, read from a thread that
//! joins it; a new one made for the calling process with given names.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;

use nix::sched::CloneFlags;

use super::check;

/// The host and domain names of the UTS namespace `ns` (an open /proc/PID/ns/uts), read by a
/// short-lived thread that joins it.
pub(crate) fn names_in(ns: impl AsFd + Send) -> io::Result<(String, String)> {
    super::ns::run_in(ns, CloneFlags::CLONE_NEWUTS, || {
        let uts = nix::sys::utsname::uname()?;
        Ok((
            uts.nodename().to_string_lossy().into_owned(),
            uts.domainname().to_string_lossy().into_owned(),
        ))
    })
    .and_then(|names| names)
}

/// Moves the calling process into a new UTS namespace named `hostname` and `domainname`.
pub(crate) fn make_new(hostname: &str, domainname: &str) -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUTS)?;
    nix::unistd::sethostname(hostname)?;
    let domain =
        CString::new(domainname).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `domain` is a live buffer of the length passed; the kernel copies it.
    check(unsafe { libc::setdomainname(domain.as_ptr(), domain.as_bytes().len()) }.into())?;
    Ok(())
}
