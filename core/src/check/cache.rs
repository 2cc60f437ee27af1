//! The probe results of this boot, kept in a 0600 JSON file keyed by kernel release, boot id,
//! cryo version, euid and effective capabilities, so dump and restore can consult them for
//! free.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::caps::status_field;
use super::{all_required_found, run_all, Probe, ProbeStatus, PROBES};

/// What a cached result is valid for: the same kernel, boot, cryo and privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CacheKey {
    kernel_release: String,
    pub(super) boot_id: String,
    cryo_version: String,
    euid: u32,
    cap_eff: String,
}

impl CacheKey {
    fn current() -> io::Result<Self> {
        let uname = nix::sys::utsname::uname().map_err(io::Error::from)?;
        Ok(Self {
            kernel_release: uname.release().to_string_lossy().into_owned(),
            boot_id: crate::proc::boot_id()?,
            cryo_version: env!("CARGO_PKG_VERSION").to_string(),
            euid: nix::unistd::geteuid().as_raw(),
            cap_eff: status_field("CapEff")?,
        })
    }
}

/// One probe as stored in the cache file (name, required and status; the rest comes from the
/// catalog of this build).
#[derive(Debug, Serialize, Deserialize)]
struct CachedProbe {
    name: String,
    required: bool,
    status: ProbeStatus,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CacheFile {
    pub(super) key: CacheKey,
    probes: Vec<CachedProbe>,
}

/// The probe results for this kernel boot: read from `cache_path` when it holds a result for
/// the same kernel release, boot id, cryo version, euid and capabilities, otherwise probed
/// with [`run_all`] and stored there (only when every required feature was found, so a
/// transient failure is probed again next time rather than remembered). Cache I/O problems
/// never fail the call; they only cost a fresh probe.
pub fn cached(cache_path: &Path) -> Vec<Probe> {
    if let Some(probes) = load(cache_path) {
        return probes;
    }
    let probes = run_all();
    if all_required_found(&probes) {
        if let Err(err) = store(cache_path, &probes) {
            tracing::debug!(path = %cache_path.display(), %err, "could not store the check cache");
        }
    }
    probes
}

/// The cached probe results in `cache_path`, if it exists, parses, matches the current key
/// and lists exactly the probes of this build.
pub fn load(cache_path: &Path) -> Option<Vec<Probe>> {
    let key = CacheKey::current().ok()?;
    let mut text = String::new();
    fs::File::open(cache_path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let file: CacheFile = serde_json::from_str(&text).ok()?;
    if file.key != key || file.probes.len() != PROBES.len() {
        return None;
    }
    PROBES
        .iter()
        .zip(file.probes)
        .map(|(def, cached)| {
            (def.name == cached.name && def.required == cached.required).then_some(Probe {
                name: def.name,
                needed_for: def.needed_for,
                required: def.required,
                status: cached.status,
            })
        })
        .collect()
}

/// Writes `probes` to `cache_path` (mode 0600, parent created 0700), atomically by rename.
pub fn store(cache_path: &Path, probes: &[Probe]) -> io::Result<()> {
    let file = CacheFile {
        key: CacheKey::current()?,
        probes: probes
            .iter()
            .map(|p| CachedProbe {
                name: p.name.to_string(),
                required: p.required,
                status: p.status.clone(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    let dir = match cache_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let file_name = cache_path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, cache_path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
