//! Netlink attributes read and written by hand: the helpers every message builder and dump
//! reader of this crate shares (nf_tables, ctnetlink).

/// `NLA_F_NESTED`.
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without its NESTED and NET_BYTEORDER flags.
pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;

/// Appends one attribute of raw type `raw` (flags included) with `value`, padded to 4 bytes.
pub(crate) fn put(buf: &mut Vec<u8>, raw: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).expect("netlink attribute over 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&raw.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The (raw type, value) attributes of `buf`: the type with its flags, so that an attribute
/// goes back exactly as the kernel wrote it; stops at the first malformed one.
pub(crate) fn raw(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ty, value))
    })
}

/// The (type, value) attributes of `buf`, the types without their flags.
pub(crate) fn all(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    raw(buf).map(|(ty, value)| (ty & NLA_TYPE_MASK, value))
}

/// Attribute `ty` among `attrs`.
pub(crate) fn find(attrs: &[u8], ty: u16) -> Option<&[u8]> {
    all(attrs).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// `attrs` without the attributes whose types are in `dropped`.
pub(crate) fn without(attrs: &[u8], dropped: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(attrs.len());
    for (ty, value) in raw(attrs) {
        if !dropped.contains(&(ty & NLA_TYPE_MASK)) {
            put(&mut out, ty, value);
        }
    }
    out
}

/// A NUL-terminated string attribute's text.
pub(crate) fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A big-endian u16 attribute.
pub(crate) fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

/// A big-endian u32 attribute.
pub(crate) fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 attribute.
pub(crate) fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// An nf_tables family (NFPROTO_*) as nft names it.
pub(crate) fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}
