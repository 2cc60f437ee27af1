//! binfmt_misc instances: the formats registered in one, read at dump and registered again at
//! restore, because they end with the instance's last mount.
//!
//! One instance per user namespace lives while some mount of it does; a new mount made after
//! the last one went shows an empty instance (its `register` and `status` files only). A
//! format reads back (its file under the mount) as the kernel's `entry_status` prints it:
//! `enabled|disabled`, `interpreter PATH`, `flags: [POCF]*`, then `extension .EXT` or
//! `offset N`, `magic HEX` and maybe `mask HEX`. cryo parses that, writes the line `register`
//! takes, and keeps the text: a format that would not print the same once registered again is
//! refused at dump, and one that does not at restore fails it.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::{BinfmtFormat, BinfmtMisc};

/// Why an instance's formats cannot be read or made again.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    /// Reading or writing a file of the instance failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What cryo was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The kernel's error.
        source: io::Error,
    },
    /// A format's file reads as nothing cryo can register again exactly.
    #[error("its format {name:?} reads {shown:?}, which cryo cannot register again as it is")]
    Unreadable {
        /// The format's name.
        name: String,
        /// What its file showed.
        shown: String,
    },
    /// The instance a restore mounted already holds formats other than the dumped ones (it
    /// outlived the dump in some other mount, and was changed since).
    #[error("the binfmt_misc instance mounted again holds {found}, dumped: {dumped}")]
    Differs {
        /// What it holds.
        found: String,
        /// What was dumped.
        dumped: String,
    },
}

/// The files of an instance that are not formats.
const CONTROL: [&str; 2] = ["register", "status"];

/// Reads the instance mounted on `dir`: its status and every format, each with the line that
/// registers it again.
pub fn read(dir: &Path) -> Result<BinfmtMisc, BinfmtError> {
    let mut formats = formats_of(dir)?;
    for format in &mut formats {
        format.register =
            register_line(&format.name, &format.shown).ok_or_else(|| BinfmtError::Unreadable {
                name: String::from_utf8_lossy(&format.name).into_owned(),
                shown: String::from_utf8_lossy(&format.shown).into_owned(),
            })?;
        format.enabled = format.shown.starts_with(b"enabled\n");
    }
    Ok(BinfmtMisc {
        enabled: status_enabled(dir)?,
        formats,
    })
}

/// Makes the instance mounted on `dir` hold `dumped`: an empty (new) one gets its formats
/// registered, disabled where they were, and its status; one that outlived the dump must
/// already hold exactly them.
pub fn restore(dir: &Path, dumped: &BinfmtMisc) -> Result<(), BinfmtError> {
    let found = formats_of(dir)?;
    if found.is_empty() {
        for format in &dumped.formats {
            write(
                &dir.join("register"),
                &format.register,
                "register a format through",
            )?;
            if !format.enabled {
                write(
                    &dir.join(std::ffi::OsStr::from_bytes(&format.name)),
                    b"0",
                    "disable",
                )?;
            }
        }
        if !dumped.enabled {
            write(&dir.join("status"), b"0", "disable")?;
        }
    }
    let now = BinfmtMisc {
        enabled: status_enabled(dir)?,
        formats: formats_of(dir)?,
    };
    let summary = |m: &BinfmtMisc| {
        let names: Vec<_> = m
            .formats
            .iter()
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect();
        format!(
            "{} formats {names:?}, {}",
            m.formats.len(),
            if m.enabled { "enabled" } else { "disabled" }
        )
    };
    let same = now.enabled == dumped.enabled
        && now.formats.len() == dumped.formats.len()
        && now
            .formats
            .iter()
            .zip(&dumped.formats)
            .all(|(a, b)| a.name == b.name && a.shown == b.shown);
    if same {
        Ok(())
    } else {
        Err(BinfmtError::Differs {
            found: summary(&now),
            dumped: summary(dumped),
        })
    }
}

/// Every format of the instance on `dir` by name, with its file's text (`name` and `shown`).
fn formats_of(dir: &Path) -> Result<Vec<BinfmtFormat>, BinfmtError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BinfmtError::Io { what, path, source }
    };
    let mut formats = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        if CONTROL.iter().any(|c| name == *c) {
            continue;
        }
        let path = entry.path();
        let shown = fs::read(&path).map_err(io_err("read", &path))?;
        formats.push(BinfmtFormat {
            name: name.as_bytes().to_vec(),
            shown,
            ..Default::default()
        });
    }
    formats.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(formats)
}

fn status_enabled(dir: &Path) -> Result<bool, BinfmtError> {
    let path = dir.join("status");
    let status = fs::read(&path).map_err(|source| BinfmtError::Io {
        what: "read",
        path,
        source,
    })?;
    Ok(status.starts_with(b"enabled"))
}

fn write(path: &Path, bytes: &[u8], what: &'static str) -> Result<(), BinfmtError> {
    fs::write(path, bytes).map_err(|source| BinfmtError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The line `register` takes to make format `name` shown as `shown` again, if the text
/// parses and the format it describes prints exactly so.
fn register_line(name: &[u8], shown: &[u8]) -> Option<Vec<u8>> {
    let text = shown.strip_suffix(b"\n")?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let (state, interpreter, flags, kind) = match lines.as_slice() {
        [state, interpreter, flags, kind @ ..] => (
            *state,
            interpreter.strip_prefix(b"interpreter ")?,
            flags.strip_prefix(b"flags: ")?,
            kind,
        ),
        _ => return None,
    };
    if !matches!(state, b"enabled" | b"disabled") || !flags.iter().all(|f| b"POCF".contains(f)) {
        return None;
    }
    // (type, offset, magic as written, mask as written): the magic and mask in \x escapes, an
    // extension as is.
    let hex_escaped = |hex: &[u8]| -> Option<Vec<u8>> {
        let bytes = decode_hex(hex)?;
        Some(
            bytes
                .iter()
                .flat_map(|b| format!("\\x{b:02x}").into_bytes())
                .collect(),
        )
    };
    let (kind, offset, magic, mask): (&[u8], Vec<u8>, Vec<u8>, Vec<u8>) = match kind {
        [extension] => (
            b"E",
            Vec::new(),
            extension.strip_prefix(b"extension .")?.to_vec(),
            Vec::new(),
        ),
        [offset, magic, rest @ ..] => {
            let offset = offset.strip_prefix(b"offset ")?;
            std::str::from_utf8(offset).ok()?.parse::<u32>().ok()?;
            let mask = match rest {
                [] => Vec::new(),
                [mask] => hex_escaped(mask.strip_prefix(b"mask ")?)?,
                _ => return None,
            };
            (
                b"M",
                offset.to_vec(),
                hex_escaped(magic.strip_prefix(b"magic ")?)?,
                mask,
            )
        }
        _ => return None,
    };
    // A delimiter none of the raw fields holds (nor a hex escape, a digit or a flag).
    let raw = [
        name,
        interpreter,
        if kind == b"E" { &magic[..] } else { b"" },
    ];
    let delimiter = b":;|,!#%&*+=@^~"
        .iter()
        .copied()
        .find(|d| raw.iter().all(|field| !field.contains(d)))?;
    let mut line = Vec::new();
    for field in [name, kind, &offset, &magic, &mask, interpreter, flags] {
        line.push(delimiter);
        line.extend_from_slice(field);
    }
    Some(line)
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_back_as_the_lines_that_register_them() {
        let magic =
            b"enabled\ninterpreter /bin/interp\nflags: POC\noffset 12\nmagic 7f3a00\nmask ff00ff\n";
        assert_eq!(
            register_line(b"m", magic).unwrap(),
            b":m:M:12:\\x7f\\x3a\\x00:\\xff\\x00\\xff:/bin/interp:POC".to_vec()
        );
        let extension = b"disabled\ninterpreter /bin/bash\nflags: \nextension .a:b\n";
        assert_eq!(
            register_line(b"e", extension).unwrap(),
            b";e;E;;a:b;;/bin/bash;".to_vec()
        );
        let no_mask = b"enabled\ninterpreter /x\nflags: F\noffset 0\nmagic 41\n";
        assert_eq!(
            register_line(b"n", no_mask).unwrap(),
            b":n:M:0:\\x41::/x:F".to_vec()
        );
        // An interpreter with a newline in it, a flag cryo does not know, odd hex.
        for bad in [
            &b"enabled\ninterpreter /a\nb\nflags: \nextension .x\n"[..],
            b"enabled\ninterpreter /x\nflags: Z\nextension .x\n",
            b"enabled\ninterpreter /x\nflags: \noffset 0\nmagic 4\n",
            b"enabled\n",
        ] {
            assert_eq!(register_line(b"b", bad), None, "{bad:?}");
        }
    }
}
