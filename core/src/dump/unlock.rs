//! The network lock of a dump: its id, derived from the image directory, and `cryo unlock`.

use cryo_proto::image::Inventory;
use cryo_proto::ImageKind;

use crate::error::{Error, Result};
use crate::image::{names, ImageDir};

/// The id of the network lock of a dump into `dir`: derived from the directory's absolute
/// path, so that `cryo unlock -D DIR` finds it even when the dump died before writing its
/// inventory.
pub fn lock_id_for(dir: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let bytes = abs.as_os_str().as_encoded_bytes();
    format!("dump-{:08x}-{:x}", crc32c::crc32c(bytes), bytes.len())
}

/// Removes the network lock a dump into `dir` left installed (`cryo unlock -D DIR`): the one
/// named in its inventory, else the one derived from the directory (a dump that died before
/// writing its inventory). Returns the lock id and whether it was installed.
pub fn unlock(dir: &std::path::Path) -> Result<(String, bool)> {
    let from_inventory = ImageDir::open(dir)
        .ok()
        .and_then(|images| {
            images
                .read_single::<Inventory>(names::INVENTORY, ImageKind::Inventory)
                .ok()
        })
        .map(|inv| inv.network_lock)
        .filter(|id| !id.is_empty());
    let id = from_inventory.unwrap_or_else(|| lock_id_for(dir));
    let found = cryo_netns::NetworkLock::release_by_id(&id).map_err(|e| Error::ImageDir {
        path: dir.to_path_buf(),
        detail: format!("remove network lock {id}: {e}"),
    })?;
    Ok((id, found))
}

/// The network lock of the image in `dir`, if its inventory names one and it is installed
/// (what a failed restore leaves for a retry).
pub fn network_lock_installed(dir: &std::path::Path) -> Option<String> {
    let images = ImageDir::open(dir).ok()?;
    let inventory: Inventory = images
        .read_single(names::INVENTORY, ImageKind::Inventory)
        .ok()?;
    let id = inventory.network_lock;
    let installed = cryo_netns::installed_locks().ok()?;
    (!id.is_empty() && installed.contains(&id)).then_some(id)
}
