//! File checksums of a checkpoint: XXH3-64 (the `xxhash-rust` crate), written into
//! `trainer_state.json` at save time and verified on resume.
//!
//! Why XXH3 and not a cryptographic hash: the threat is a flipped bit or a torn write, not
//! an adversary, and a checkpoint at 7B is tens of GB: XXH3 hashes at memory bandwidth
//! (tens of GB/s per core), so verifying costs about what reading the files costs anyway,
//! while SHA-256 would add minutes. A 64-bit hash misses a random corruption with
//! probability 2^-64.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Result, TrainError};

/// Read buffer: large enough that the hash, not the syscalls, dominates.
const CHUNK: usize = 4 << 20;

/// The XXH3-64 of the file at `path` as 16 lowercase hex digits, and its length in bytes.
pub fn file_checksum(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(|e| TrainError::io("open", path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| TrainError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("{:016x}", hasher.digest()), len))
}

/// The XXH3-64 of `bytes` as 16 lowercase hex digits (what [`file_checksum`] gives for a
/// file holding them).
pub fn bytes_checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_xxh3_of_the_bytes_and_sees_one_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes: Vec<u8> = (0..(CHUNK + 123)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let (sum, len) = file_checksum(&path).unwrap();
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(
            sum,
            bytes_checksum(&bytes),
            "streaming over chunks equals the one-shot hash"
        );
        bytes[CHUNK + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(file_checksum(&path).unwrap().0, sum);
    }
}
