//! Byte buffers that may hold decrypted content, wiped when dropped.
//!
//! `zeroize::Zeroizing<Vec<u8>>` wipes a vector's elements through its per-element path, one
//! volatile byte store at a time: for the tens of kilobytes of plaintext each message leaves
//! behind that was a few per cent of a watcher's time per message. [`Secret`] wipes the same
//! bytes (the elements and the spare capacity) through zeroize's slice path, a fill followed by
//! an optimisation barrier, which the compiler may not remove either.

use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// A `Vec<u8>` whose whole allocation is zeroed when it is dropped.
#[derive(Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(v: Vec<u8>) -> Secret {
        Secret(v)
    }
}

impl Deref for Secret {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Secret {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Zeroes a vector's whole allocation, its spare capacity and its elements (the length stays),
/// through zeroize's slice path: what `Vec::zeroize` does, without the per-byte loop.
pub fn wipe(v: &mut Vec<u8>) {
    v.spare_capacity_mut().zeroize();
    v.as_mut_slice().zeroize();
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_the_content_in_place() {
        let mut s = Secret::new(Vec::with_capacity(4096));
        s.extend_from_slice(&[0xA5u8; 3000]);
        s.extend_from_slice(b"plaintext");
        let (ptr, cap, len) = (s.as_ptr(), s.capacity(), s.len());
        wipe(&mut s);
        // Same allocation, same length, every element zero (the spare capacity is zeroed by
        // zeroize's MaybeUninit path, which safe code cannot read back).
        assert_eq!((s.as_ptr(), s.capacity(), s.len()), (ptr, cap, len));
        assert!(s.iter().all(|&b| b == 0));
    }
}
