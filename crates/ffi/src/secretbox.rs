//! NaCl secretbox (XSalsa20-Poly1305) from the system libsodium, detached form: the caller
//! keeps the 16-byte tag and the ciphertext wherever its wire format wants them.

use std::os::raw::{c_int, c_uchar, c_ulonglong};
use std::sync::OnceLock;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

extern "C" {
    fn sodium_init() -> c_int;
    fn crypto_secretbox_detached(
        c: *mut c_uchar,
        mac: *mut c_uchar,
        m: *const c_uchar,
        mlen: c_ulonglong,
        n: *const c_uchar,
        k: *const c_uchar,
    ) -> c_int;
    fn crypto_secretbox_open_detached(
        m: *mut c_uchar,
        c: *const c_uchar,
        mac: *const c_uchar,
        clen: c_ulonglong,
        n: *const c_uchar,
        k: *const c_uchar,
    ) -> c_int;
}

/// Why a secretbox call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// `sodium_init` failed; libsodium must not be used.
    Init,
    /// The message is longer than libsodium accepts.
    TooLong,
    /// The tag does not authenticate the ciphertext (the buffer is left unchanged).
    Authentication,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Init => "libsodium failed to initialise",
            Error::TooLong => "message too long for secretbox",
            Error::Authentication => "secretbox authentication failed",
        })
    }
}

impl std::error::Error for Error {}

/// `sodium_init` selects the fastest implementations for this CPU (without it libsodium uses
/// its portable code); it is thread-safe and idempotent, and is run once per process.
pub fn init() -> Result<(), Error> {
    static INIT: OnceLock<bool> = OnceLock::new();
    // SAFETY: `sodium_init` takes no arguments and may be called from any thread.
    #[allow(unsafe_code)]
    let ok = *INIT.get_or_init(|| unsafe { sodium_init() } >= 0);
    if ok {
        Ok(())
    } else {
        Err(Error::Init)
    }
}

fn len(buf: &[u8]) -> Result<c_ulonglong, Error> {
    c_ulonglong::try_from(buf.len()).map_err(|_| Error::TooLong)
}

/// Encrypts `buf` in place and returns the Poly1305 tag.
pub fn seal_in_place(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], Error> {
    init()?;
    let mlen = len(buf)?;
    let mut tag = [0u8; TAG_LEN];
    let p = buf.as_mut_ptr();
    // SAFETY: `p` is valid for reads and writes of `mlen` bytes; libsodium documents that the
    // message and ciphertext may be the same buffer. `tag`, `nonce` and `key` are arrays of
    // exactly the sizes libsodium reads or writes (16, 24, 32). Nothing is retained.
    #[allow(unsafe_code)]
    let rc = unsafe {
        crypto_secretbox_detached(p, tag.as_mut_ptr(), p, mlen, nonce.as_ptr(), key.as_ptr())
    };
    if rc == 0 {
        Ok(tag)
    } else {
        Err(Error::TooLong)
    }
}

/// Verifies `tag` and decrypts `buf` in place. On failure `buf` is unchanged.
pub fn open_in_place(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    tag: &[u8; TAG_LEN],
    buf: &mut [u8],
) -> Result<(), Error> {
    init()?;
    let clen = len(buf)?;
    let p = buf.as_mut_ptr();
    // SAFETY: as in `seal_in_place`: `p` is valid for `clen` bytes and may be both input and
    // output; the fixed-size arrays match libsodium's sizes. libsodium checks the tag before
    // writing any output.
    #[allow(unsafe_code)]
    let rc = unsafe {
        crypto_secretbox_open_detached(p, p, tag.as_ptr(), clen, nonce.as_ptr(), key.as_ptr())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; KEY_LEN];
        let nonce = [9u8; NONCE_LEN];
        let mut buf = b"hello secretbox".to_vec();
        let tag = seal_in_place(&key, &nonce, &mut buf).expect("seals");
        assert_ne!(buf, b"hello secretbox");
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert_eq!(
            open_in_place(&key, &nonce, &tag, &mut bad),
            Err(Error::Authentication)
        );
        open_in_place(&key, &nonce, &tag, &mut buf).expect("opens");
        assert_eq!(buf, b"hello secretbox");
    }

    #[test]
    fn empty_message() {
        let key = [1u8; KEY_LEN];
        let nonce = [2u8; NONCE_LEN];
        let tag = seal_in_place(&key, &nonce, &mut []).expect("seals");
        open_in_place(&key, &nonce, &tag, &mut []).expect("opens");
    }
}
