//! Capability probes: which of the capabilities the engine's calls need are effective.

use std::fs;
use std::io;

use super::error::{at, CheckError, Outcome};

/// A field of /proc/self/status.
pub(super) fn status_field(name: &str) -> io::Result<String> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {name} in status")))
}

/// Whether capability `bit` is in CapEff.
fn has_capability(bit: u32) -> Outcome<bool> {
    let eff = status_field("CapEff").map_err(at("/proc/self/status"))?;
    let eff = u64::from_str_radix(&eff, 16).map_err(|e| {
        CheckError::unexpected("CapEff", format!("{eff:?} is not hexadecimal: {e}"))
    })?;
    Ok(eff & (1u64 << bit) != 0)
}

/// Found when capability `bit` is effective.
pub(super) fn capability(bit: u32) -> Outcome {
    if has_capability(bit)? {
        Ok(format!("in CapEff (bit {bit})"))
    } else {
        Err(CheckError::unexpected("CapEff", format!("bit {bit} clear")))
    }
}

/// CAP_SYS_RESOURCE: without it, prlimit on another uid's task and hard limits above the
/// current ones fail, and pipes cannot grow past pipe-max-size.
pub(super) fn cap_sys_resource() -> Outcome {
    const CAP_SYS_RESOURCE: u32 = 24;
    if has_capability(CAP_SYS_RESOURCE)? {
        return Ok(format!("in CapEff (bit {CAP_SYS_RESOURCE})"));
    }
    let max = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    Err(CheckError::unexpected(
        "CapEff",
        format!(
            "bit {CAP_SYS_RESOURCE} clear: restoring another uid's rlimits fails, hard \
             rlimits cannot be raised, F_SETPIPE_SZ limited to {max} bytes"
        ),
    ))
}
