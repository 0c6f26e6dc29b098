//! The on-disk kernel cache: compiled objects keyed by spec, target and
//! compiler version, so a later process loads a kernel instead of
//! compiling it.
//!
//! Off unless `LOWBIT_CACHE_DIR` names a directory (or a caller passes
//! one). Each entry is one file `<hash>.lbk`: a magic line, the full key
//! text, the payload length and a 64-bit FNV-1a checksum, then the object.
//! A file whose magic, key, length or checksum does not match is reported
//! as [`Lookup::Invalid`] and the caller rebuilds and overwrites it.
//! Writes go to a temporary file renamed into place, so readers never see
//! a partial entry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LBKC0001";

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A valid entry: the object bytes.
    Hit(Vec<u8>),
    /// No entry.
    Miss,
    /// An entry that is corrupt or belongs to another key (why).
    Invalid(String),
}

/// The directory named by `LOWBIT_CACHE_DIR`, if set and not empty.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("LOWBIT_CACHE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The entry file for `key` in `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{:016x}.lbk", fnv1a(key.as_bytes())))
}

/// Reads the entry for `key`.
pub fn load(dir: &Path, key: &str) -> Lookup {
    let path = entry_path(dir, key);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
        Err(e) => return Lookup::Invalid(format!("cannot read {}: {e}", path.display())),
    };
    match parse(&data, key) {
        Ok(obj) => Lookup::Hit(obj.to_vec()),
        Err(why) => Lookup::Invalid(format!("{}: {why}", path.display())),
    }
}

fn parse<'a>(data: &'a [u8], key: &str) -> Result<&'a [u8], String> {
    let rest = data
        .strip_prefix(MAGIC)
        .ok_or("not a lowbit kernel cache entry")?;
    let take = |r: &'a [u8], n: usize| -> Result<(&'a [u8], &'a [u8]), String> {
        if r.len() < n {
            Err("truncated".to_string())
        } else {
            Ok(r.split_at(n))
        }
    };
    let (len, rest) = take(rest, 4)?;
    let key_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (stored_key, rest) = take(rest, key_len)?;
    if stored_key != key.as_bytes() {
        return Err("built for another spec, target or compiler version".into());
    }
    let (len, rest) = take(rest, 8)?;
    let payload_len = u64::from_le_bytes(len.try_into().map_err(|_| "truncated")?) as usize;
    let (sum, rest) = take(rest, 8)?;
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| "truncated")?);
    if rest.len() != payload_len {
        return Err(format!(
            "payload is {} bytes, the header says {payload_len}",
            rest.len()
        ));
    }
    if fnv1a(rest) != sum {
        return Err("checksum mismatch".into());
    }
    Ok(rest)
}

/// Writes the entry for `key` atomically (temporary file, then rename).
pub fn store(dir: &Path, key: &str, object: &[u8]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = entry_path(dir, key);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut bytes = Vec::with_capacity(object.len() + key.len() + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(object.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&fnv1a(object).to_le_bytes());
    bytes.extend_from_slice(object);
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| fs::rename(&tmp, &path));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lowbit-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let dir = tmpdir("unit");
        assert_eq!(load(&dir, "k1"), Lookup::Miss);
        store(&dir, "k1", b"object bytes").unwrap();
        assert_eq!(load(&dir, "k1"), Lookup::Hit(b"object bytes".to_vec()));
        let path = entry_path(&dir, "k1");
        let good = fs::read(&path).unwrap();
        // A flipped payload byte, a truncated file, a foreign file.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(load(&dir, "k1"), Lookup::Invalid(m) if m.contains("checksum")));
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(matches!(load(&dir, "k1"), Lookup::Invalid(m) if m.contains("payload")));
        fs::write(&path, b"hello").unwrap();
        assert!(matches!(load(&dir, "k1"), Lookup::Invalid(m) if m.contains("not a lowbit")));
        // An entry stored under a colliding name for another key is stale.
        fs::write(&path, &good).unwrap();
        fs::copy(&path, entry_path(&dir, "k2")).unwrap();
        assert!(matches!(load(&dir, "k2"), Lookup::Invalid(m) if m.contains("another spec")));
        let _ = fs::remove_dir_all(&dir);
    }
}
