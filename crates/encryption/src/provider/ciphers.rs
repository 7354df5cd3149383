//! The three static-key constructions, each byte-compatible with kube-apiserver (spec c.2-c.4).
//!
//! Implementations were chosen by measurement (BENCHMARKS.md): ring for AES-128/256-GCM (its
//! assembly is the fastest here), RustCrypto `aes-gcm` for AES-192-GCM (which ring lacks),
//! RustCrypto `aes` block cipher with CBC chaining written here (decryption runs the parallel
//! AES-NI/VAES path over all blocks at once), and libsodium's `crypto_secretbox` (through
//! `atrest-ffi`) for XSalsa20-Poly1305, which is several times faster than RustCrypto's.
//!
//! Nonces and IVs come from [`super::nonce`], a per-thread buffer that avoids a syscall per
//! value.
//!
//! Each `seal_into` appends the provider payload (everything after `<keyname>:`) to `out`;
//! each `open` takes that payload and returns the plaintext.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes_gcm::AeadInOut;
use atrest_ffi::secretbox;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use zeroize::Zeroizing;

use super::nonce::random_nonce;
use crate::error::CipherError;
use crate::key::Key;

pub(crate) const GCM_NONCE_LEN: usize = 12;
pub(crate) const GCM_TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;
/// CBC decryption works through the data this many bytes at a time, so that the copy, the
/// parallel block decryption and the chaining XOR of a chunk all hit L1.
const CBC_DECRYPT_CHUNK: usize = 64 * AES_BLOCK;
const SECRETBOX_NONCE_LEN: usize = secretbox::NONCE_LEN;
const SECRETBOX_TAG_LEN: usize = secretbox::TAG_LEN;

/// `N` bytes straight from the OS CSPRNG (for values other than nonces and IVs).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CipherError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| CipherError::Random(e.to_string()))?;
    Ok(out)
}

/// AES-GCM with a 12-byte random nonce and the storage key as additional data.
// Built once per configured key and never moved in a hot loop: the size of the inline ring
// key does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AesGcm {
    Ring(LessSafeKey),
    Aes192(Box<aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>>),
}

impl std::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesGcm(<key redacted>)")
    }
}

impl AesGcm {
    pub(crate) fn new(key: &Key) -> Result<Self, CipherError> {
        let bytes = key.as_bytes();
        let ring_key = |alg| {
            UnboundKey::new(alg, bytes)
                .map(|k| AesGcm::Ring(LessSafeKey::new(k)))
                .map_err(|_| CipherError::KeyLength(bytes.len()))
        };
        match bytes.len() {
            16 => ring_key(&AES_128_GCM),
            32 => ring_key(&AES_256_GCM),
            24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(bytes)
                .map(|c| AesGcm::Aes192(Box::new(c)))
                .map_err(|_| CipherError::KeyLength(24)),
            n => Err(CipherError::KeyLength(n)),
        }
    }

    pub(crate) fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), CipherError> {
        let nonce = random_nonce::<GCM_NONCE_LEN>()?;
        self.seal_with_nonce(out, nonce, plaintext, aad)
    }

    /// Sealing with a caller-chosen nonce is only for the KMS v1/v2 envelopes (whose per-value
    /// keys make a random nonce equally safe) and for tests.
    pub(crate) fn seal_with_nonce(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; GCM_NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), CipherError> {
        out.reserve(GCM_NONCE_LEN + plaintext.len() + GCM_TAG_LEN);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        match self {
            AesGcm::Ring(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut out[start..],
                    )
                    .map_err(|_| CipherError::Seal)?;
                out.extend_from_slice(tag.as_ref());
            }
            AesGcm::Aes192(cipher) => {
                let nonce = Array::from(nonce);
                let tag = cipher
                    .encrypt_inout_detached(&nonce, aad, (&mut out[start..]).into())
                    .map_err(|_| CipherError::Seal)?;
                out.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    pub(crate) fn open(&self, payload: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        if payload.len() < GCM_NONCE_LEN {
            return Err(CipherError::TooShort);
        }
        let (nonce_bytes, sealed) = payload.split_at(GCM_NONCE_LEN);
        if sealed.len() < GCM_TAG_LEN {
            return Err(CipherError::Authentication("message authentication failed"));
        }
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce.copy_from_slice(nonce_bytes);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - GCM_TAG_LEN);
        // The output is exactly the plaintext's size: only the ciphertext is copied, and a
        // 1 KiB value stays within the allocator's fast size classes.
        let mut buf = ciphertext.to_vec();
        fn failed<E>(_: E) -> CipherError {
            CipherError::Authentication("message authentication failed")
        }
        match self {
            AesGcm::Ring(key) => {
                let tag = ring::aead::Tag::try_from(tag).map_err(|_| CipherError::TooShort)?;
                key.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    tag,
                    &mut buf,
                    0..,
                )
                .map_err(failed)?;
            }
            AesGcm::Aes192(cipher) => {
                let tag = Array::try_from(tag).map_err(|_| CipherError::TooShort)?;
                cipher
                    .decrypt_inout_detached(&Array::from(nonce), aad, (&mut buf[..]).into(), &tag)
                    .map_err(failed)?;
            }
        }
        Ok(buf)
    }
}

/// AES-CBC with a random 16-byte IV and PKCS#7 padding (no authentication, no AAD).
pub(crate) enum AesCbc {
    Aes128(Box<aes::Aes128>),
    Aes192(Box<aes::Aes192>),
    Aes256(Box<aes::Aes256>),
}

impl std::fmt::Debug for AesCbc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesCbc(<key redacted>)")
    }
}

/// Runs `$body` with `$c` bound to the concrete AES cipher of an [`AesCbc`].
macro_rules! with_aes {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            AesCbc::Aes128($c) => $body,
            AesCbc::Aes192($c) => $body,
            AesCbc::Aes256($c) => $body,
        }
    };
}

impl AesCbc {
    pub(crate) fn new(key: &Key) -> Result<Self, CipherError> {
        let bytes = key.as_bytes();
        let bad = |_| CipherError::KeyLength(bytes.len());
        Ok(match bytes.len() {
            16 => AesCbc::Aes128(Box::new(aes::Aes128::new_from_slice(bytes).map_err(bad)?)),
            24 => AesCbc::Aes192(Box::new(aes::Aes192::new_from_slice(bytes).map_err(bad)?)),
            32 => AesCbc::Aes256(Box::new(aes::Aes256::new_from_slice(bytes).map_err(bad)?)),
            n => return Err(CipherError::KeyLength(n)),
        })
    }

    pub(crate) fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8]) -> Result<(), CipherError> {
        let iv = random_nonce::<AES_BLOCK>()?;
        self.seal_with_iv(out, iv, plaintext);
        Ok(())
    }

    pub(crate) fn seal_with_iv(&self, out: &mut Vec<u8>, iv: [u8; AES_BLOCK], plaintext: &[u8]) {
        let pad = AES_BLOCK - plaintext.len() % AES_BLOCK;
        out.reserve(AES_BLOCK + plaintext.len() + pad);
        out.extend_from_slice(&iv);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // PKCS#7 padding is always added: 1..=16 bytes, each equal to the pad length.
        out.resize(out.len() + pad, pad as u8);
        let (blocks, _) =
            Array::<u8, aes::cipher::consts::U16>::slice_as_chunks_mut(&mut out[start..]);
        // One backend dispatch for the whole message, not one per block.
        let chain = CbcEncrypt {
            iv: Array::from(iv),
            blocks,
        };
        with_aes!(self, c => c.encrypt_with_backend(chain));
    }

    pub(crate) fn open(&self, payload: &[u8]) -> Result<Vec<u8>, CipherError> {
        if payload.len() < AES_BLOCK {
            return Err(CipherError::TooShort);
        }
        let (iv, ciphertext) = payload.split_at(AES_BLOCK);
        if ciphertext.len() % AES_BLOCK != 0 {
            return Err(CipherError::NotBlockMultiple);
        }
        if ciphertext.is_empty() {
            // Upstream would index an empty slice here; an IV with no data is simply invalid.
            return Err(CipherError::Padding(
                "invalid PKCS7 data (empty or not padded)",
            ));
        }
        // One pass over the data in L1-sized chunks: copy a chunk of ciphertext, decrypt its
        // blocks (independent of each other, so the cipher runs them in parallel), then apply
        // the chaining XOR from the untouched ciphertext.
        let mut buf = Vec::with_capacity(ciphertext.len());
        let mut previous = iv;
        for chunk in ciphertext.chunks(CBC_DECRYPT_CHUNK) {
            let start = buf.len();
            buf.extend_from_slice(chunk);
            let plain = &mut buf[start..];
            {
                let (blocks, _) =
                    Array::<u8, aes::cipher::consts::U16>::slice_as_chunks_mut(&mut *plain);
                with_aes!(self, c => c.decrypt_blocks(blocks));
            }
            let (first, rest) = plain.split_at_mut(AES_BLOCK);
            xor_in_place(first, previous);
            xor_in_place(rest, &chunk[..chunk.len() - AES_BLOCK]);
            previous = &chunk[chunk.len() - AES_BLOCK..];
        }
        let pad = usize::from(*buf.last().unwrap_or(&0));
        if pad == 0 || pad > buf.len() {
            return Err(CipherError::Padding(
                "invalid PKCS7 data (empty or not padded)",
            ));
        }
        if buf[buf.len() - pad..]
            .iter()
            .any(|b| usize::from(*b) != pad)
        {
            return Err(CipherError::Padding("invalid padding on input"));
        }
        buf.truncate(buf.len() - pad);
        Ok(buf)
    }
}

/// CBC encryption of `blocks` in place, run inside the cipher's backend (see
/// `BlockCipherEncrypt::encrypt_with_backend`), so that the serial chain of block
/// encryptions is not interrupted by CPU-feature dispatch.
struct CbcEncrypt<'a> {
    iv: Array<u8, aes::cipher::consts::U16>,
    blocks: &'a mut [Array<u8, aes::cipher::consts::U16>],
}

impl aes::cipher::BlockSizeUser for CbcEncrypt<'_> {
    type BlockSize = aes::cipher::consts::U16;
}

impl aes::cipher::BlockCipherEncClosure for CbcEncrypt<'_> {
    #[inline(always)]
    fn call<B: aes::cipher::BlockCipherEncBackend<BlockSize = Self::BlockSize>>(self, backend: &B) {
        let mut previous = self.iv;
        for block in self.blocks.iter_mut() {
            xor_in_place(block, &previous);
            backend.encrypt_block_inplace(block);
            previous = *block;
        }
    }
}

/// `a ^= b` over equal-length slices (written so that it vectorises).
fn xor_in_place(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// NaCl secretbox: XSalsa20-Poly1305 with a 24-byte random nonce; the sealed form is the
/// Poly1305 tag followed by the ciphertext. No AAD.
pub(crate) struct Secretbox(Zeroizing<[u8; secretbox::KEY_LEN]>);

impl std::fmt::Debug for Secretbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secretbox(<key redacted>)")
    }
}

impl Secretbox {
    pub(crate) fn new(key: &Key) -> Result<Self, CipherError> {
        let mut k = Zeroizing::new([0u8; secretbox::KEY_LEN]);
        if key.len() != k.len() {
            return Err(CipherError::KeyLength(key.len()));
        }
        k.copy_from_slice(key.as_bytes());
        // Fail at build time, not on the first value, if libsodium cannot start.
        secretbox::init().map_err(|_| CipherError::Seal)?;
        Ok(Secretbox(k))
    }

    pub(crate) fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8]) -> Result<(), CipherError> {
        let nonce = random_nonce::<SECRETBOX_NONCE_LEN>()?;
        self.seal_with_nonce(out, nonce, plaintext)
    }

    pub(crate) fn seal_with_nonce(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; SECRETBOX_NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<(), CipherError> {
        out.reserve(SECRETBOX_NONCE_LEN + SECRETBOX_TAG_LEN + plaintext.len());
        out.extend_from_slice(&nonce);
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; SECRETBOX_TAG_LEN]);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = secretbox::seal_in_place(&self.0, &nonce, &mut out[start..])
            .map_err(|_| CipherError::Seal)?;
        out[tag_at..start].copy_from_slice(&tag);
        Ok(())
    }

    pub(crate) fn open(&self, payload: &[u8]) -> Result<Vec<u8>, CipherError> {
        if payload.len() < SECRETBOX_NONCE_LEN + SECRETBOX_TAG_LEN {
            return Err(CipherError::TooShort);
        }
        let (nonce, rest) = payload.split_at(SECRETBOX_NONCE_LEN);
        let (tag, ciphertext) = rest.split_at(SECRETBOX_TAG_LEN);
        let nonce: [u8; SECRETBOX_NONCE_LEN] =
            nonce.try_into().map_err(|_| CipherError::TooShort)?;
        let tag: [u8; SECRETBOX_TAG_LEN] = tag.try_into().map_err(|_| CipherError::TooShort)?;
        let mut buf = ciphertext.to_vec();
        secretbox::open_in_place(&self.0, &nonce, &tag, &mut buf)
            // Upstream's (misleading) message for an authentication failure.
            .map_err(|_| {
                CipherError::Authentication("output array was not large enough for encryption")
            })?;
        Ok(buf)
    }
}
