//! The packet rings of the `socks` workload: a ring set up and mapped on command, and read or
//! written the way a program using PACKET_MMAP does, with the process's own frame index (the
//! kernel keeps its own, which the process cannot see).
//!
//! ```text
//!   ring FD VERSION BLOCK_SIZE BLOCK_NR FRAME_SIZE FRAME_NR rx|tx
//!                             -> <address> (PACKET_VERSION 0|1|2 set, the ring asked for,
//!                             mapped MAP_SHARED read-write; V3 RX: retire_blk_tov 10 ms)
//!   ring-read FD MARKER       RX: frames taken at the process's index and handed back until
//!                             one holds MARKER -> "frame I" (V3: "block I") | "timeout at I"
//!                             (nothing at the index for 5 s)
//!   ring-state FD             -> "next I" and a letter per frame (V3: block): u (the
//!                             process's) or k (the kernel's)
//!   ring-send FD MARKER       TX: a frame (to 00:.., ethertype 0x88b6, MARKER) at the
//!                             process's index, TP_STATUS_SEND_REQUEST, send() -> "sent I"
//!   ring-queue FD MARKER      the same without send(): it waits in the ring -> "queued I"
//!   ring-restamp FD           RX: every frame's timestamp made the same (a program that
//!                             rewrites the headers)
//!   ring-map FD               -> this process's mapping of the ring in /proc/self/maps
//!   ring-unmap-tail FD        its last page unmapped (the rest stays mapped)
//!   ring-private FD           the ring mapped again MAP_PRIVATE read-write, "cow" written at
//!                             byte 100 of its last page (a private copy of that page)
//!                             -> <address>
//!   ring-private-state FD     -> the private mapping's line of /proc/self/maps (address,
//!                             permissions, offset), the 3 bytes at 100 of its last page,
//!                             and whether its first page reads as the shared one does:
//!                             "same" or "differs"
//! ```

use std::io;
use std::time::{Duration, Instant};

use super::sys::{cvt, setsockopt_value};

const SOL_PACKET: i32 = 263;
const PACKET_RX_RING: i32 = 5;
const PACKET_VERSION: i32 = 10;
const PACKET_TX_RING: i32 = 13;
const TPACKET_V1: u32 = 0;
const TPACKET_V3: u32 = 2;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
/// The ethertype of the frames `ring-send` sends.
pub const SEND_PROTOCOL: u16 = 0x88b6;

/// One mapped ring.
pub struct Ring {
    fd: i32,
    version: u32,
    base: *mut u8,
    block_size: usize,
    block_nr: usize,
    frame_size: usize,
    frame_nr: usize,
    tx: bool,
    /// The process's own index (frame; V3: block).
    next: usize,
    /// A second, private mapping of the ring (`ring-private`).
    private: Option<*mut u8>,
}

fn bad(what: &str) -> String {
    format!("ring: {what}")
}

impl Ring {
    /// `ring FD VERSION BLOCK_SIZE BLOCK_NR FRAME_SIZE FRAME_NR rx|tx`.
    pub fn setup(fd: i32, args: &[u32], which: &str) -> Result<Self, String> {
        let &[version, block_size, block_nr, frame_size, frame_nr] = args else {
            return Err(bad("five numbers"));
        };
        let tx = match which {
            "rx" => false,
            "tx" => true,
            other => return Err(bad(&format!("rx or tx, not {other:?}"))),
        };
        setsockopt_value(fd, SOL_PACKET, PACKET_VERSION, &(version as i32))
            .map_err(|e| format!("PACKET_VERSION: {e}"))?;
        let name = if tx { PACKET_TX_RING } else { PACKET_RX_RING };
        let set = if version == TPACKET_V3 {
            let retire = if tx { 0 } else { 10 };
            let req: [u32; 7] = [block_size, block_nr, frame_size, frame_nr, retire, 0, 0];
            setsockopt_value(fd, SOL_PACKET, name, &req)
        } else {
            let req: [u32; 4] = [block_size, block_nr, frame_size, frame_nr];
            setsockopt_value(fd, SOL_PACKET, name, &req)
        };
        set.map_err(|e| format!("ring: {e}"))?;
        let len = block_size as usize * block_nr as usize;
        // SAFETY: a fresh shared mapping of the socket's ring, chosen by the kernel.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap: {}", io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            version,
            base: base.cast(),
            block_size: block_size as usize,
            block_nr: block_nr as usize,
            frame_size: frame_size as usize,
            frame_nr: frame_nr as usize,
            tx,
            next: 0,
            private: None,
        })
    }

    /// The mapping's address.
    pub fn address(&self) -> usize {
        self.base as usize
    }

    fn frame(&self, i: usize) -> usize {
        let per_block = self.block_size / self.frame_size;
        (i / per_block) * self.block_size + (i % per_block) * self.frame_size
    }

    fn u32_at(&self, off: usize) -> u32 {
        // SAFETY: off is inside the ring mapping (callers pass header offsets of its frames
        // and blocks), u32-aligned; the kernel writes it, hence volatile.
        unsafe { std::ptr::read_volatile(self.base.add(off).cast::<u32>()) }
    }

    fn u16_at(&self, off: usize) -> u16 {
        // SAFETY: as u32_at.
        unsafe { std::ptr::read_volatile(self.base.add(off).cast::<u16>()) }
    }

    fn set_u32(&self, off: usize, v: u32) {
        // The frame's bytes before its status.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: as u32_at.
        unsafe { std::ptr::write_volatile(self.base.add(off).cast::<u32>(), v) }
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        let len = len.min(self.block_size * self.block_nr - off);
        // SAFETY: off..off+len lies inside the mapping (clamped above).
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }

    /// Status of frame `i` (V3: of block `i`).
    fn status(&self, i: usize) -> u32 {
        match (self.version == TPACKET_V3, self.tx) {
            (true, false) => self.u32_at(i * self.block_size + 8),
            (true, true) => self.u32_at(self.frame(i) + 20),
            _ => self.u32_at(self.frame(i)),
        }
    }

    fn slots(&self) -> usize {
        if self.version == TPACKET_V3 && !self.tx {
            self.block_nr
        } else {
            self.frame_nr
        }
    }

    /// `ring-state`.
    pub fn state(&self) -> String {
        let letters: String = (0..self.slots())
            .map(|i| {
                if self.status(i) & TP_STATUS_USER != 0 {
                    'u'
                } else {
                    'k'
                }
            })
            .collect();
        format!("next {} {letters}", self.next)
    }

    /// The packet data of frame `f` (V1/V2 RX).
    fn frame_data(&self, f: usize) -> &[u8] {
        let (mac, snap) = if self.version == TPACKET_V1 {
            (self.u16_at(f + 16), self.u32_at(f + 12))
        } else {
            (self.u16_at(f + 12), self.u32_at(f + 8))
        };
        self.bytes(f + mac as usize, snap as usize)
    }

    /// `ring-read MARKER`.
    pub fn read(&mut self, marker: &str) -> Result<String, String> {
        let marker = marker.as_bytes();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let i = self.next;
            if self.status(i) & TP_STATUS_USER == 0 {
                if Instant::now() > deadline {
                    return Ok(format!("timeout at {i}"));
                }
                let mut p = libc::pollfd {
                    fd: self.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on our one pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
                continue;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let found = if self.version == TPACKET_V3 {
                let b = i * self.block_size;
                let (n, mut off) = (self.u32_at(b + 12), self.u32_at(b + 16) as usize);
                let mut found = false;
                for _ in 0..n {
                    let p = b + off;
                    let (snap, mac) = (self.u32_at(p + 12), self.u16_at(p + 24));
                    found |= contains(self.bytes(p + mac as usize, snap as usize), marker);
                    off += self.u32_at(p) as usize;
                }
                found
            } else {
                contains(self.frame_data(self.frame(i)), marker)
            };
            let off = if self.version == TPACKET_V3 {
                i * self.block_size + 8
            } else {
                self.frame(i)
            };
            self.set_u32(off, 0);
            self.next = (i + 1) % self.slots();
            if found {
                let what = if self.version == TPACKET_V3 {
                    "block"
                } else {
                    "frame"
                };
                return Ok(format!("{what} {i}"));
            }
        }
    }

    /// A frame with `marker` written at the process's TX index, handed to the kernel;
    /// sent now if `send`.
    pub fn send(&mut self, marker: &str, send: bool) -> Result<String, String> {
        let i = self.next;
        let f = self.frame(i);
        let (status_at, len_at, data_at) = match self.version {
            TPACKET_V1 => (f, f + 8, f + 32),
            TPACKET_V3 => (f + 20, f + 16, f + 48),
            _ => (f, f + 4, f + 32),
        };
        if self.status(i) != 0 {
            return Err(format!("frame {i} is the kernel's"));
        }
        let mut frame = [0u8; 60];
        frame[12..14].copy_from_slice(&SEND_PROTOCOL.to_be_bytes());
        frame[14..14 + marker.len()].copy_from_slice(marker.as_bytes());
        // SAFETY: data_at..+60 lies inside frame i (frames are at least 128 bytes here).
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), self.base.add(data_at), 60) };
        self.set_u32(len_at, 60);
        self.set_u32(status_at, TP_STATUS_SEND_REQUEST);
        self.next = (i + 1) % self.frame_nr;
        if !send {
            return Ok(format!("queued {i}"));
        }
        // SAFETY: send of nothing: the kernel sends the ring's requested frames.
        cvt(unsafe { libc::send(self.fd, std::ptr::null(), 0, 0) } as i32)
            .map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.u32_at(status_at) != 0 {
            if Instant::now() > deadline {
                return Ok(format!("stuck {i} status {}", self.u32_at(status_at)));
            }
            std::thread::yield_now();
        }
        Ok(format!("sent {i}"))
    }

    /// `ring-restamp`: every RX frame stamped alike (V1/V2).
    pub fn restamp(&self) {
        for i in 0..self.frame_nr {
            let f = self.frame(i);
            let (sec, sub) = if self.version == TPACKET_V1 {
                (f + 20, f + 24)
            } else {
                (f + 16, f + 20)
            };
            self.set_u32(sec, 1_000_000);
            self.set_u32(sub, 7);
        }
    }

    /// `ring-unmap-tail`: the mapping's last page unmapped.
    pub fn unmap_tail(&mut self) -> Result<String, String> {
        let len = self.block_size * self.block_nr;
        // SAFETY: the last page of our own ring mapping; nothing reads it after (the ring's
        // commands are not used on it again).
        let r = unsafe { libc::munmap(self.base.add(len - 4096).cast(), 4096) };
        cvt(r).map_err(|e| format!("munmap: {e}"))?;
        Ok("ok".into())
    }

    fn len(&self) -> usize {
        self.block_size * self.block_nr
    }

    /// `ring-private`: the ring mapped again, private, its last page written (a copy).
    pub fn map_private(&mut self) -> Result<String, String> {
        let len = self.len();
        // SAFETY: a fresh private mapping of the socket's ring, chosen by the kernel.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                self.fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap private: {}", io::Error::last_os_error()));
        }
        let base: *mut u8 = base.cast();
        // SAFETY: byte 100 of the last page is inside the mapping just made.
        unsafe { std::ptr::copy_nonoverlapping(b"cow".as_ptr(), base.add(len - 4096 + 100), 3) };
        self.private = Some(base);
        Ok(format!("{:x}", base as usize))
    }

    /// `ring-private-state`: the private mapping as /proc/self/maps shows it, its written
    /// bytes, and its first page against the shared mapping's.
    pub fn private_state(&self) -> Result<String, String> {
        let base = self.private.ok_or_else(|| bad("no private mapping"))?;
        let len = self.len();
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let start = format!("{:x}-", base as usize);
        let line = maps
            .lines()
            .find(|l| l.starts_with(&start))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .ok_or_else(|| bad("private mapping gone"))?;
        // SAFETY: both mappings are `len` bytes long, readable.
        let (private, shared) = unsafe {
            (
                std::slice::from_raw_parts(base, len),
                std::slice::from_raw_parts(self.base, len),
            )
        };
        let written = private[len - 4096 + 100..len - 4096 + 103]
            .escape_ascii()
            .to_string();
        let first = if private[..4096] == shared[..4096] {
            "same"
        } else {
            "differs"
        };
        Ok(format!("{line} {written} {first}"))
    }

    /// `ring-map`: this process's mapping of the ring.
    pub fn mapping(&self) -> Result<String, String> {
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let start = format!("{:x}-", self.address());
        maps.lines()
            .find(|l| l.starts_with(&start))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .ok_or_else(|| bad("not mapped"))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
