//! bpf(2) for BPF maps: made, opened by id or by pin, described, read key by key, filled,
//! popped and frozen; the programs of the host and the maps they use, listed by id.
//!
//! The attribute union is passed as 128 zeroed bytes with the fields at the offsets of
//! linux/bpf.h (a kernel with a smaller union checks that the rest is zero).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_PROG_GET_NEXT_ID: libc::c_int = 11;
const BPF_MAP_GET_NEXT_ID: libc::c_int = 12;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_int = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_BTF_LOAD: libc::c_int = 18;
const BPF_BTF_GET_FD_BY_ID: libc::c_int = 19;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_int = 21;
const BPF_MAP_FREEZE: libc::c_int = 22;
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;

/// `BPF_OBJ_NAME_LEN`.
pub(crate) const NAME_LEN: usize = 16;

/// `union bpf_attr`, as 128 bytes (8-aligned: it holds `__aligned_u64` fields).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn u32(mut self, off: usize, v: u32) -> Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(mut self, off: usize, v: u64) -> Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn fd(self, off: usize, fd: BorrowedFd<'_>) -> Self {
        self.u32(off, fd.as_raw_fd() as u32)
    }

    fn ptr(self, off: usize, p: *const u8) -> Self {
        self.u64(off, p as u64)
    }

    fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

/// bpf(`cmd`, `attr`).
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` reads or writes through it, for the
/// sizes the other fields (or the map's key and value sizes) give.
unsafe fn bpf(cmd: libc::c_int, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is 128 writable bytes; the pointers inside are the caller's promise.
    check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    })
}

/// What BPF_MAP_CREATE is given.
#[derive(Debug, Clone, Default)]
pub(crate) struct MapCreate<'a> {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// Used when `map_flags` has BPF_F_NUMA_NODE.
    pub numa_node: u32,
    /// NUL-padded.
    pub name: [u8; NAME_LEN],
    pub map_extra: u64,
    /// The BTF object and the type ids of the key and value in it.
    pub btf: Option<(BorrowedFd<'a>, u32, u32)>,
}

/// A new map (close-on-exec, O_RDWR).
pub(crate) fn map_create(m: &MapCreate<'_>) -> io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32(0, m.map_type)
        .u32(4, m.key_size)
        .u32(8, m.value_size)
        .u32(12, m.max_entries)
        .u32(16, m.map_flags)
        .u32(24, m.numa_node)
        .u64(64, m.map_extra);
    attr.0[28..28 + NAME_LEN].copy_from_slice(&m.name);
    if let Some((btf, key, value)) = m.btf {
        attr = attr.fd(48, btf).u32(52, key).u32(56, value);
    }
    // SAFETY: no pointers in a map creation without BTF.
    owned_fd(unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?)
}

/// A new fd (a description of its own, close-on-exec) on map `id`, with `open_flags`
/// (BPF_F_RDONLY, BPF_F_WRONLY or 0).
pub(crate) fn map_fd_by_id(id: u32, open_flags: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, id).u32(8, open_flags);
    // SAFETY: no pointers.
    owned_fd(unsafe { bpf(BPF_MAP_GET_FD_BY_ID, &mut attr) }?)
}

/// A new fd on the object pinned at `path` in a BPF filesystem (a map, a program, a link:
/// opened read-write, the only mode every kind takes).
pub(crate) fn obj_get(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().ptr(0, path.as_ptr().cast());
    // SAFETY: `path` is NUL-terminated and outlives the call; the kernel only reads it.
    owned_fd(unsafe { bpf(BPF_OBJ_GET, &mut attr) }?)
}

/// A new fd on BTF object `id`.
pub(crate) fn btf_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, id);
    // SAFETY: no pointers.
    owned_fd(unsafe { bpf(BPF_BTF_GET_FD_BY_ID, &mut attr) }?)
}

/// The raw BTF data of BTF object `fd` (as it was loaded), and whether it is the kernel's
/// (vmlinux or a module's) rather than loaded from user space.
pub(crate) fn btf_data(fd: BorrowedFd<'_>) -> io::Result<(Vec<u8>, bool)> {
    /// sizeof(struct bpf_btf_info) up to `kernel_btf`.
    const LEN: usize = 32;
    let mut data: Vec<u8> = Vec::new();
    loop {
        #[repr(C, align(8))]
        struct Buf([u8; LEN]);
        let mut buf = Buf([0; LEN]);
        buf.0[0..8].copy_from_slice(&(data.as_mut_ptr() as u64).to_ne_bytes());
        buf.0[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        let mut attr = Attr::new()
            .fd(0, fd)
            .u32(4, LEN as u32)
            .ptr(8, buf.0.as_mut_ptr());
        // SAFETY: `buf` is LEN writable bytes, the length given; its btf points to `data`,
        // writable for the btf_size bytes it says (the kernel copies at most that many).
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        let size = u32::from_ne_bytes(buf.0[8..12].try_into().expect("4 bytes")) as usize;
        let kernel = u32::from_ne_bytes(buf.0[28..32].try_into().expect("4 bytes")) != 0;
        if size <= data.len() {
            data.truncate(size);
            return Ok((data, kernel));
        }
        data = vec![0; size];
    }
}

/// BPF_BTF_LOAD of raw BTF `data`: a new BTF object.
pub(crate) fn btf_load(data: &[u8]) -> io::Result<OwnedFd> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::other("BTF too large"))?;
    let mut attr = Attr::new().ptr(0, data.as_ptr()).u32(16, len);
    // SAFETY: `data` is readable for the btf_size given; no log buffer (size 0).
    owned_fd(unsafe { bpf(BPF_BTF_LOAD, &mut attr) }?)
}

/// A new fd on program `id` (to read its info).
fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, id);
    // SAFETY: no pointers.
    owned_fd(unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?)
}

/// `struct bpf_map_info`, the fields cryo reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// NUL-padded.
    pub name: [u8; NAME_LEN],
    pub ifindex: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub map_extra: u64,
}

/// sizeof(struct bpf_map_info) up to `map_extra` (the fields after it ask for more work).
const MAP_INFO_LEN: usize = 88;

/// BPF_OBJ_GET_INFO_BY_FD on a map fd.
pub(crate) fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    #[repr(C, align(8))]
    struct Buf([u8; MAP_INFO_LEN]);
    let mut buf = Buf([0; MAP_INFO_LEN]);
    let mut attr = Attr::new()
        .fd(0, fd)
        .u32(4, MAP_INFO_LEN as u32)
        .ptr(8, buf.0.as_mut_ptr());
    // SAFETY: `buf` is MAP_INFO_LEN writable bytes, the length given.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let b = &buf.0;
    let u32_at = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"));
    let mut name = [0u8; NAME_LEN];
    name.copy_from_slice(&b[24..24 + NAME_LEN]);
    Ok(MapInfo {
        map_type: u32_at(0),
        id: u32_at(4),
        key_size: u32_at(8),
        value_size: u32_at(12),
        max_entries: u32_at(16),
        map_flags: u32_at(20),
        name,
        ifindex: u32_at(40),
        btf_vmlinux_value_type_id: u32_at(44),
        btf_id: u32_at(64),
        btf_key_type_id: u32_at(68),
        btf_value_type_id: u32_at(72),
        map_extra: u64::from_ne_bytes(b[80..88].try_into().expect("8 bytes")),
    })
}

/// The ids of the maps program `prog_id` uses; None when the program is gone meanwhile.
pub(crate) fn prog_map_ids(prog_id: u32) -> io::Result<Option<Vec<u32>>> {
    let fd = match prog_fd_by_id(prog_id) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    /// sizeof(struct bpf_prog_info) up to `map_ids`.
    const LEN: usize = 64;
    let mut ids: Vec<u32> = vec![0; 64];
    loop {
        #[repr(C, align(8))]
        struct Buf([u8; LEN]);
        let mut buf = Buf([0; LEN]);
        buf.0[52..56].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
        buf.0[56..64].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
        let mut attr = Attr::new()
            .fd(0, fd.as_fd())
            .u32(4, LEN as u32)
            .ptr(8, buf.0.as_mut_ptr());
        // SAFETY: `buf` is LEN writable bytes, the length given; its map_ids points to
        // `ids`, writable for the nr_map_ids u32s it says.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        let nr = u32::from_ne_bytes(buf.0[52..56].try_into().expect("4 bytes")) as usize;
        if nr <= ids.len() {
            ids.truncate(nr);
            return Ok(Some(ids));
        }
        ids = vec![0; nr];
    }
}

/// The id after `start` of the programs (`maps` false) or maps of the host; None after the
/// last.
pub(crate) fn next_id(start: u32, maps: bool) -> io::Result<Option<u32>> {
    let cmd = if maps {
        BPF_MAP_GET_NEXT_ID
    } else {
        BPF_PROG_GET_NEXT_ID
    };
    let mut attr = Attr::new().u32(0, start);
    // SAFETY: no pointers.
    match unsafe { bpf(cmd, &mut attr) } {
        Ok(_) => Ok(Some(attr.read_u32(4))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The key of an element command: the bytes of `key`, or NULL (queues and stacks).
fn key_ptr(key: Option<&[u8]>) -> *const u8 {
    key.map_or(std::ptr::null(), <[u8]>::as_ptr)
}

/// The attribute of an element call on map `fd`: the key (None: no key) at 8 and a second
/// buffer (a value or the next key: `second`, of `have` bytes, `want` needed, both sizes
/// checked) at 16. A buffer the kernel writes is given by its `as_mut_ptr`.
fn element_attr(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    key: Option<&[u8]>,
    (second, have): (*const u8, usize),
    (want, what): (usize, &str),
) -> io::Result<Attr> {
    if let Some(k) = key {
        sized(k, sizes.key_size, "key")?;
    }
    if have < want {
        return Err(io::Error::other(format!(
            "{what} buffer of {have} bytes for {want}"
        )));
    }
    Ok(Attr::new().fd(0, fd).ptr(8, key_ptr(key)).ptr(16, second))
}

/// Whether a call that answers ENOENT for "no such element" (or "no more") found one.
fn found(result: io::Result<libc::c_long>) -> io::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks that `buf` has the `want` bytes the kernel will read or write through it.
fn sized(buf: &[u8], want: usize, what: &str) -> io::Result<()> {
    if buf.len() < want {
        return Err(io::Error::other(format!(
            "{what} buffer of {} bytes for {want}",
            buf.len()
        )));
    }
    Ok(())
}

/// The sizes of a map's keys and of the values a lookup writes (`value_len`: per-CPU maps
/// take one rounded-up value per possible CPU).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElemSizes {
    pub key_size: usize,
    pub value_len: usize,
}

/// BPF_MAP_LOOKUP_ELEM of `key` into `value`; false if there is no such element.
pub(crate) fn map_lookup(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    key: Option<&[u8]>,
    value: &mut [u8],
) -> io::Result<bool> {
    let mut attr = element_attr(
        fd,
        sizes,
        key,
        (value.as_mut_ptr(), value.len()),
        (sizes.value_len, "value"),
    )?;
    // SAFETY: the key holds key_size bytes (checked), the value value_len bytes (checked),
    // borrowed mutably for the call: what the kernel copies for this map.
    found(unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) })
}

/// BPF_MAP_GET_NEXT_KEY after `key` (None: the first) into `next`; false after the last.
pub(crate) fn map_next_key(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    let mut attr = element_attr(
        fd,
        sizes,
        key,
        (next.as_mut_ptr(), next.len()),
        (sizes.key_size, "next key"),
    )?;
    // SAFETY: both keys hold key_size bytes (checked), `next` borrowed mutably for the call.
    found(unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) })
}

/// BPF_MAP_UPDATE_ELEM of `key` (None: a push onto a queue or stack) with `value`,
/// `flags` (BPF_ANY = 0).
pub(crate) fn map_update(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    key: Option<&[u8]>,
    value: &[u8],
    flags: u64,
) -> io::Result<()> {
    let mut attr = element_attr(
        fd,
        sizes,
        key,
        (value.as_ptr(), value.len()),
        (sizes.value_len, "value"),
    )?
    .u64(24, flags);
    // SAFETY: the key holds key_size bytes and the value value_len bytes (checked); the
    // kernel only reads them.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
    Ok(())
}

/// BPF_MAP_LOOKUP_AND_DELETE_ELEM without a key: the head of a queue or stack taken into
/// `value`; false when it is empty.
pub(crate) fn map_pop(fd: BorrowedFd<'_>, sizes: ElemSizes, value: &mut [u8]) -> io::Result<bool> {
    sized(value, sizes.value_len, "value")?;
    let mut attr = Attr::new().fd(0, fd).ptr(16, value.as_mut_ptr());
    // SAFETY: no key; the value holds value_len writable bytes (checked).
    found(unsafe { bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) })
}

/// BPF_MAP_FREEZE: the map read-only to system calls from now on.
pub(crate) fn map_freeze(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new().fd(0, fd);
    // SAFETY: no pointers.
    unsafe { bpf(BPF_MAP_FREEZE, &mut attr) }?;
    Ok(())
}

/// One BPF_MAP_LOOKUP_BATCH: up to `count` elements after position `from` (None: the start)
/// into `keys` and `values` (`count` of each); the position after them goes into `to`
/// (a buffer of at least the key size and 4 bytes). Returns how many were read and whether
/// the map has more.
pub(crate) fn map_lookup_batch(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    from: Option<&[u8]>,
    to: &mut [u8],
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
) -> io::Result<(usize, bool)> {
    let batch_len = sizes.key_size.max(4);
    if let Some(f) = from {
        sized(f, batch_len, "batch position")?;
    }
    sized(to, batch_len, "batch position")?;
    sized(keys, sizes.key_size * count as usize, "keys")?;
    sized(values, sizes.value_len * count as usize, "values")?;
    let mut attr = Attr::new()
        .ptr(0, key_ptr(from))
        .ptr(8, to.as_mut_ptr())
        .ptr(16, keys.as_mut_ptr())
        .ptr(24, values.as_mut_ptr())
        .u32(32, count)
        .fd(36, fd);
    // SAFETY: the positions hold max(key_size, 4) bytes, `keys` and `values` `count` keys and
    // values (checked): what the kernel reads and writes for this map; it writes back the
    // number read in the attribute.
    let r = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
    let n = attr.read_u32(32) as usize;
    match r {
        Ok(_) => Ok((n, true)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((n, false)),
        Err(e) => Err(e),
    }
}

/// BPF_MAP_UPDATE_BATCH of `count` elements (`keys`, `values` back to back), BPF_ANY.
/// Returns how many were written when it fails, with the error.
pub(crate) fn map_update_batch(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), (usize, io::Error)> {
    let checked = sized(keys, sizes.key_size * count as usize, "keys")
        .and_then(|()| sized(values, sizes.value_len * count as usize, "values"));
    checked.map_err(|e| (0, e))?;
    let mut attr = Attr::new()
        .ptr(16, keys.as_ptr())
        .ptr(24, values.as_ptr())
        .u32(32, count)
        .fd(36, fd);
    // SAFETY: `keys` and `values` hold `count` keys and values (checked), which the kernel
    // only reads; it writes back the number done in the attribute.
    match unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) => Err((attr.read_u32(32) as usize, e)),
    }
}
