//! An image on the wire: its files sent one by one (FileOpen, Data..., FileClose) and the
//! End with the manifest; and the receiving side, which writes them into a private image
//! directory by cryo's image rules and accepts the image only whole.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use cryo_core::ImageDir;
use tracing::debug;

use crate::conn::{unexpected, Conn, Frame, Unchecked};
use crate::error::StreamError;
use crate::frame::FrameType;
use crate::manifest;
use crate::msg::{self, Manifest, ManifestEntry};

/// The most files an image may hold.
pub const MAX_FILES: usize = 1 << 16;
/// The largest file accepted (the pages of a very large process fit).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// The most bytes an image may hold in all.
pub const MAX_IMAGE_SIZE: u64 = 1 << 42;

/// The inventory, sent last: a directory without one is not an image.
const INVENTORY: &str = "inventory.img";

/// Whether `name` may name an image (under the receiver's root) or a file of one: a plain
/// name, no `/`, not `.` or `..`, not hidden (the receiver's partial directories are), no
/// NUL, at most 255 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name.contains('/') || name.contains('\0') {
        return Err(format!("{name:?} is not a plain name (holds '/' or NUL)"));
    }
    if name.starts_with('.') {
        return Err(format!(
            "{name:?} starts with '.' (\".\", \"..\" and hidden names are refused)"
        ));
    }
    if name.len() > 255 {
        return Err(format!("a name of {} bytes (255 at most)", name.len()));
    }
    Ok(())
}

/// The files of the image directory at `dir`, in the order they are sent: by name, the
/// inventory last.
pub fn image_files(dir: &Path) -> Result<Vec<String>, StreamError> {
    let step = format!("list {}", dir.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StreamError::io(&step, e, 0))? {
        let entry = entry.map_err(|e| StreamError::io(&step, e, 0))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| StreamError::protocol(&step, format!("file name {n:?} is not UTF-8")))?;
        names.push(name);
    }
    names.sort_by_key(|n| (n == INVENTORY, n.clone()));
    Ok(names)
}

/// Sends every file of `images` and the End; returns the manifest sent. `keep_going` is
/// asked between frames (a pending SIGINT stops the transfer).
pub fn send_image<S: Read + Write>(
    conn: &mut Conn<S>,
    images: &ImageDir,
    checkpoint_id: &str,
    keep_going: &dyn Fn(&str) -> Result<(), StreamError>,
) -> Result<Manifest, StreamError> {
    let mut manifest = Manifest {
        checkpoint_id: checkpoint_id.into(),
        files: Vec::new(),
    };
    send_dir_files(conn, images, &mut manifest.files, keep_going)?;
    send_end(conn, &manifest)?;
    Ok(manifest)
}

/// Sends every file of `images` (the inventory last), each added to `sent`.
pub fn send_dir_files<S: Read + Write>(
    conn: &mut Conn<S>,
    images: &ImageDir,
    sent: &mut Vec<ManifestEntry>,
    keep_going: &dyn Fn(&str) -> Result<(), StreamError>,
) -> Result<(), StreamError> {
    for name in image_files(images.path())? {
        let step = format!("send {name}");
        // Mapped: the frames go out from the file's pages, not from a copy of them.
        let (map, st) = images
            .map_file(&name)
            .map_err(|e| StreamError::images(&step, e))?;
        let data = map.as_ref().map_or(&[][..], |m| m.as_slice());
        let entry = send_file_with(conn, &name, st.st_size as u64, st.st_mode & 0o7777, |c| {
            c.send_slice(data, &step, keep_going)
        })?;
        sent.push(entry);
    }
    Ok(())
}

/// Sends one file: its announcement, `size` bytes read from `contents`, its checksum.
pub fn send_file<S: Read + Write>(
    conn: &mut Conn<S>,
    name: &str,
    size: u64,
    mode: u32,
    contents: &mut dyn Read,
    keep_going: &dyn Fn(&str) -> Result<(), StreamError>,
) -> Result<ManifestEntry, StreamError> {
    let step = format!("send {name}");
    send_file_with(conn, name, size, mode, |c| {
        c.send_data(contents, size, &step, keep_going)
    })
}

/// Sends one file: its announcement, its data frames (`send_data`, which returns their
/// crc32c), its checksum.
fn send_file_with<S: Read + Write>(
    conn: &mut Conn<S>,
    name: &str,
    size: u64,
    mode: u32,
    send_data: impl FnOnce(&mut Conn<S>) -> Result<u32, StreamError>,
) -> Result<ManifestEntry, StreamError> {
    let step = format!("send {name}");
    conn.send_msg(
        FrameType::FileOpen,
        &msg::FileOpen {
            name: name.into(),
            size,
            mode,
        },
        &step,
    )?;
    let crc = send_data(conn)?;
    conn.send_msg(FrameType::FileClose, &msg::FileClose { crc32c: crc }, &step)?;
    debug!(name, size, "sent");
    Ok(ManifestEntry {
        name: name.into(),
        size,
        crc32c: crc,
    })
}

/// Sends the End with `manifest`.
pub fn send_end<S: Read + Write>(
    conn: &mut Conn<S>,
    manifest: &Manifest,
) -> Result<(), StreamError> {
    conn.send_msg(
        FrameType::End,
        &msg::End {
            manifest: Some(manifest.clone()),
        },
        "send the manifest",
    )
}

/// Receives an image into `images` (a new, private directory) until its End, checking each
/// file against its announcement and the whole against the manifest, every file fsync'd and
/// the directory too. Returns the manifest. On an error, what was written is the caller's
/// to discard.
pub fn receive_image<S: Read + Write>(
    conn: &mut Conn<S>,
    images: &ImageDir,
    checkpoint_id: Option<&str>,
) -> Result<Manifest, StreamError> {
    receive_image_with(conn, images, checkpoint_id, &mut |_| Ok(false))
}

/// [`receive_image`], calling `on_file(name)` after each file arrived whole and checked (a
/// pre-copy's rounds appended on arrival: [`cryo_core::PreCopyAppended`]); when it answers
/// true the sender is told the file was absorbed (an Absorbed frame naming it).
pub fn receive_image_with<S: Read + Write>(
    conn: &mut Conn<S>,
    images: &ImageDir,
    checkpoint_id: Option<&str>,
    on_file: &mut dyn FnMut(&str) -> Result<bool, StreamError>,
) -> Result<Manifest, StreamError> {
    let mut received: Vec<ManifestEntry> = Vec::new();
    let mut total = 0u64;
    loop {
        let step = "receive the image (missing End: incomplete)";
        let f = conn.recv(step)?;
        match f.kind {
            FrameType::FileOpen => {
                let open: msg::FileOpen = f.decode("receive a file announcement")?;
                let step = format!("receive {:?}", open.name);
                check_name(&open.name).map_err(|e| StreamError::protocol(&step, e))?;
                if received.len() >= MAX_FILES {
                    return Err(StreamError::protocol(
                        &step,
                        format!("more than {MAX_FILES} files"),
                    ));
                }
                if received.iter().any(|e| e.name == open.name) {
                    return Err(StreamError::protocol(&step, "sent twice"));
                }
                if open.size > MAX_FILE_SIZE || total + open.size > MAX_IMAGE_SIZE {
                    return Err(StreamError::protocol(
                        &step,
                        format!(
                            "announced {} bytes (a file holds {MAX_FILE_SIZE} at most, an \
                             image {MAX_IMAGE_SIZE})",
                            open.size
                        ),
                    ));
                }
                if open.mode & 0o7077 != 0 {
                    return Err(StreamError::protocol(
                        &step,
                        format!(
                            "mode {:#o}: image files are private to their owner",
                            open.mode
                        ),
                    ));
                }
                let file = images
                    .create_raw(&open.name)
                    .map_err(|e| StreamError::images(&step, e))?;
                let entry = receive_file(conn, file, &open, &step)?;
                total += entry.size;
                if on_file(&entry.name)? {
                    conn.send_msg(
                        FrameType::Absorbed,
                        &msg::Absorbed {
                            name: entry.name.clone(),
                        },
                        &format!("acknowledge {:?}", entry.name),
                    )?;
                }
                received.push(entry);
            }
            FrameType::End => {
                let end: msg::End = f.decode("receive the manifest")?;
                let step = "check the manifest";
                let m = end
                    .manifest
                    .ok_or_else(|| StreamError::protocol(step, "an End without a manifest"))?;
                if let Some(id) = checkpoint_id {
                    if m.checkpoint_id != id {
                        return Err(StreamError::protocol(
                            step,
                            format!(
                                "the manifest is of checkpoint {:?}, the transfer of {id:?}",
                                m.checkpoint_id
                            ),
                        ));
                    }
                }
                manifest::verify(&m, &received).map_err(|e| StreamError::protocol(step, e))?;
                if !received.iter().any(|e| e.name == INVENTORY) {
                    return Err(StreamError::protocol(
                        step,
                        "no inventory.img: not an image",
                    ));
                }
                sync_dir(images.path())?;
                return Ok(m);
            }
            _ => return Err(unexpected(&f, step, "FileOpen or End")),
        }
    }
}

/// One file's data frames and its FileClose, written to `file` and fsync'd.
///
/// Two threads: this one reads the frames off the connection, a second checks each data
/// frame (checksum, tag) and only then writes it to the file with one write, while this one
/// reads the next. A frame that fails its checks stops the file there: nothing after it is
/// written, and the caller discards the image.
fn receive_file<S: Read + Write>(
    conn: &mut Conn<S>,
    file: File,
    open: &msg::FileOpen,
    step: &str,
) -> Result<ManifestEntry, StreamError> {
    let checker = conn.checker(step);
    let write_err = |e| StreamError::io(format!("{step}: write"), e, 0);
    let (to_writer, writer_in) = std::sync::mpsc::sync_channel::<(Vec<u8>, Unchecked)>(2);
    let (writer_out, from_writer) =
        std::sync::mpsc::sync_channel::<Result<Vec<u8>, StreamError>>(2);
    std::thread::scope(|scope| {
        let (file, checker) = (&file, &checker);
        scope.spawn(move || {
            for (buf, frame) in writer_in {
                let done = checker
                    .check(&frame, &buf)
                    .and_then(|()| (&*file).write_all(&buf).map_err(write_err))
                    .map(|()| buf);
                let failed = done.is_err();
                if writer_out.send(done).is_err() || failed {
                    return;
                }
            }
        });
        // Owned by this closure: dropped when it returns (an error too), which stops the
        // writer before the scope waits for it.
        let (to_writer, from_writer) = (to_writer, from_writer);
        let stopped = || StreamError::protocol(step, "the file writer stopped");
        let mut free: Vec<Vec<u8>> = (0..3).map(|_| Vec::new()).collect();
        let mut queued = 0usize;
        let mut got = 0u64;
        let mut crc = 0u32;
        loop {
            let mut buf = match free.pop() {
                Some(buf) => buf,
                None => {
                    queued -= 1;
                    from_writer.recv().map_err(|_| stopped())??
                }
            };
            let frame = conn.recv_unchecked(step, &mut buf)?;
            if frame.kind() == FrameType::Data {
                got += buf.len() as u64;
                if got > open.size {
                    return Err(StreamError::protocol(
                        step,
                        format!("larger than announced ({} bytes)", open.size),
                    ));
                }
                // The header's crc: the frame is checked against it before it is written,
                // and the sum is used only once every frame was.
                crc = crate::frame::crc_combine(crc, frame.crc(), buf.len());
                if to_writer.send((buf, frame)).is_err() {
                    // The writer stopped at a failure: its error says which.
                    return Err(from_writer
                        .iter()
                        .find_map(Result::err)
                        .unwrap_or_else(stopped));
                }
                queued += 1;
                continue;
            }
            // Every data frame before this one checked and written (or the first failure).
            while queued > 0 {
                queued -= 1;
                from_writer.recv().map_err(|_| stopped())??;
            }
            checker.check(&frame, &buf)?;
            let f = Frame {
                kind: frame.kind(),
                payload: buf,
                crc: frame.crc(),
            };
            if f.kind != FrameType::FileClose {
                return Err(unexpected(&f, step, "Data or FileClose"));
            }
            let close: msg::FileClose = f.decode(step)?;
            if got != open.size {
                return Err(StreamError::protocol(
                    step,
                    format!("{got} bytes received, {} announced", open.size),
                ));
            }
            if close.crc32c != crc {
                return Err(StreamError::protocol(
                    step,
                    format!(
                        "checksum mismatch: crc32c {crc:#010x} received, {:#010x} announced",
                        close.crc32c
                    ),
                ));
            }
            file.sync_all()
                .map_err(|e| StreamError::io(format!("{step}: fsync"), e, 0))?;
            return Ok(ManifestEntry {
                name: open.name.clone(),
                size: got,
                crc32c: crc,
            });
        }
    })
}

/// fsync of a directory, so the names in it (a new file, a rename) are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StreamError> {
    let step = format!("fsync {}", dir.display());
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StreamError::io(step, e, 0))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::frame::DATA_CHUNK;

    #[test]
    fn names() {
        for ok in ["core-1.img", "web", "a.b"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
    }

    fn image(dir: &Path, files: &[(&str, &[u8])]) -> ImageDir {
        let images = ImageDir::create(dir).unwrap();
        for (name, data) in files {
            images.create_raw(name).unwrap().write_all(data).unwrap();
        }
        images
    }

    /// Sends `src` with `tamper` applied to the bytes on the wire; returns what the
    /// receiver said.
    fn transfer(
        files: &[(&str, &[u8])],
        tamper: impl Fn(&mut Conn<UnixStream>, &ImageDir) -> Result<(), StreamError> + Send + 'static,
    ) -> Result<Manifest, StreamError> {
        let tmp = tempfile::tempdir().unwrap();
        let src = image(&tmp.path().join("src"), files);
        let dst = ImageDir::create(&tmp.path().join("dst")).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut tx = Conn::new(a, "rx", 5);
            tamper(&mut tx, &src)
        });
        let mut rx = Conn::new(b, "tx", 5);
        let r = receive_image(&mut rx, &dst, Some("id"));
        drop(rx);
        let _ = t.join().unwrap();
        r
    }

    const FILES: &[(&str, &[u8])] = &[("pages-1.img", b"0123456789"), ("inventory.img", b"inv")];

    /// A keyed transfer of an image whose pages span several data frames (the sender's and
    /// the receiver's second threads at work) through a relay that flips the byte at
    /// `flip` (if any) on the way; returns the receiver's answer and the pages received.
    fn keyed_transfer(flip: Option<usize>) -> (Result<Manifest, StreamError>, Vec<u8>, Vec<u8>) {
        let pages: Vec<u8> = (0..(3 * DATA_CHUNK + 1234) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let tmp = tempfile::tempdir().unwrap();
        let src = image(
            &tmp.path().join("src"),
            &[("pages-1.img", &pages), ("inventory.img", b"inv")],
        );
        let dst = ImageDir::create(&tmp.path().join("dst")).unwrap();
        let key = crate::auth::Psk::from_bytes(b"0123456789abcdef").session_key(b"c", b"s");
        let (a, relay_in) = UnixStream::pair().unwrap();
        let (relay_out, b) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || {
            let (mut from, mut to) = (relay_in, relay_out);
            let mut buf = vec![0u8; 64 << 10];
            let mut at = 0usize;
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Some(f) = flip.filter(|f| (at..at + n).contains(f)) {
                    buf[f - at] ^= 0x40;
                }
                at += n;
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
        let k2 = key.clone();
        let tx = std::thread::spawn(move || {
            let mut tx = Conn::new(a, "rx", 5).keyed(k2);
            send_image(&mut tx, &src, "id", &|_| Ok(())).map(drop)
        });
        let mut rx = Conn::new(b, "tx", 5).keyed(key);
        let r = receive_image(&mut rx, &dst, Some("id"));
        drop(rx);
        let _ = tx.join().unwrap();
        relay.join().unwrap();
        let got = std::fs::read(dst.path().join("pages-1.img")).unwrap_or_default();
        (r, got, pages)
    }

    #[test]
    fn keyed_multi_frame_file_arrives_whole() {
        let (r, got, pages) = keyed_transfer(None);
        r.unwrap();
        assert!(got == pages, "the pages differ");
    }

    #[test]
    fn a_flipped_byte_in_a_middle_frame_stops_the_file_before_it() {
        // In the payload of the third data frame (the FileOpen frame and two data frames,
        // headers and tags, come before it).
        let (r, got, pages) = keyed_transfer(Some(2 * DATA_CHUNK + 4096));
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                StreamError::Frame {
                    source: crate::frame::FrameError::BadTag { seq: 3 },
                    ..
                }
            ),
            "{e}"
        );
        assert!(got.len() <= 2 * DATA_CHUNK, "written past the bad frame");
        assert!(got == pages[..got.len()], "what was written differs");
    }

    #[test]
    fn whole_image_received() {
        let m = transfer(FILES, |tx, src| {
            send_image(tx, src, "id", &|_| Ok(())).map(drop)
        })
        .unwrap();
        let names: Vec<_> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pages-1.img", "inventory.img"], "inventory last");
    }

    fn open(tx: &mut Conn<UnixStream>, name: &str, size: u64) {
        tx.send_msg(
            FrameType::FileOpen,
            &msg::FileOpen {
                name: name.into(),
                size,
                mode: 0o600,
            },
            "t",
        )
        .unwrap();
    }

    fn err_of(r: Result<Manifest, StreamError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn missing_end_is_incomplete() {
        let e = err_of(transfer(FILES, |tx, _| {
            open(tx, "a", 1);
            tx.send(FrameType::Data, b"x", "t")?;
            tx.send_msg(
                FrameType::FileClose,
                &msg::FileClose {
                    crc32c: crc32c::crc32c(b"x"),
                },
                "t",
            )
        }));
        assert!(e.contains("missing End") && e.contains("closed"), "{e}");
    }

    #[test]
    fn larger_than_announced() {
        let e = err_of(transfer(FILES, |tx, _| {
            open(tx, "a", 1);
            tx.send(FrameType::Data, b"xy", "t").map(drop)
        }));
        assert!(e.contains("larger than announced"), "{e}");
    }

    #[test]
    fn file_checksum_mismatch() {
        let e = err_of(transfer(FILES, |tx, _| {
            open(tx, "a", 1);
            tx.send(FrameType::Data, b"x", "t")?;
            tx.send_msg(FrameType::FileClose, &msg::FileClose { crc32c: 1 }, "t")
        }));
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn bad_names_refused() {
        for name in ["../escape", "a/b", ".."] {
            let e = err_of(transfer(FILES, move |tx, _| {
                open(tx, name, 0);
                Ok(())
            }));
            assert!(
                e.contains("plain name") || e.contains("starts with '.'"),
                "{e}"
            );
        }
    }

    #[test]
    fn manifest_must_match() {
        let e = err_of(transfer(FILES, |tx, _| {
            open(tx, "inventory.img", 0);
            tx.send_msg(FrameType::FileClose, &msg::FileClose { crc32c: 0 }, "t")?;
            let m = Manifest {
                checkpoint_id: "id".into(),
                files: vec![ManifestEntry {
                    name: "inventory.img".into(),
                    size: 1,
                    crc32c: 0,
                }],
            };
            tx.send_msg(FrameType::End, &msg::End { manifest: Some(m) }, "t")
        }));
        assert!(e.contains("the manifest says 1 bytes"), "{e}");
    }

    #[test]
    fn out_of_place_frame() {
        let e = err_of(transfer(FILES, |tx, _| {
            tx.send(FrameType::Data, b"x", "t").map(drop)
        }));
        assert!(e.contains("Data frame where FileOpen or End"), "{e}");
    }
}
