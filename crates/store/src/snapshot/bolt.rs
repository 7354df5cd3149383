//! A read-only reader of bbolt database files (the file etcd keeps its data in, and what
//! `etcdctl snapshot save` writes).
//!
//! The layout, as bbolt writes it (all integers little-endian):
//! - The file is a sequence of pages of `page_size` bytes. Every page starts with a 16-byte
//!   header: `id: u64, flags: u16, count: u16, overflow: u32`; a page with `overflow = n`
//!   spans `n + 1` pages.
//! - Pages 0 and 1 are meta pages (flag 0x04). The meta follows the header: `magic: u32
//!   (0xED0CDAED), version: u32 (2), page_size: u32, flags: u32, root bucket {root: u64,
//!   sequence: u64}, freelist: u64, pgid: u64 (pages in use), txid: u64, checksum: u64`
//!   where the checksum is FNV-1a 64 of the 56 bytes before it. The valid meta with the
//!   higher txid is the current one.
//! - A bucket is a B+tree of branch pages (flag 0x01; elements `pos: u32, ksize: u32,
//!   pgid: u64`) and leaf pages (flag 0x02; elements `flags: u32, pos: u32, ksize: u32,
//!   vsize: u32`). Elements are 16 bytes each after the page header; `pos` is the offset of
//!   the key from the element itself, and a leaf's value follows its key.
//! - A leaf element with flag 0x01 is a nested bucket: its value is a bucket header
//!   `{root: u64, sequence: u64}`. Root 0 means an inline bucket: a leaf page (header and
//!   elements) follows the header inside the value.
//!
//! Everything is bounds-checked: a corrupt or truncated file is an error, never a panic,
//! and a page is visited at most once per walk (no loops through corrupt page ids).

use std::collections::HashSet;
use std::ops::Range;

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// B+trees deeper than this are corrupt (bbolt's trees are a handful of levels deep).
const MAX_DEPTH: usize = 64;

/// What is wrong with the file (the caller adds its name).
pub type BoltError = String;

fn read<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], BoltError> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("truncated: {N} bytes at offset {at} are past the end"))
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BoltError> {
    read::<2>(data, at).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BoltError> {
    read::<4>(data, at).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, BoltError> {
    read::<8>(data, at).map(u64::from_le_bytes)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A page: where its bytes are in the file.
#[derive(Debug, Clone, Copy)]
struct PageRef {
    start: usize,
    end: usize,
}

/// A bucket to walk: its root page, or an inline leaf page inside its parent's value.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    /// Root page id.
    Paged(u64),
    /// Absolute range of the inline page's bytes.
    Inline(usize, usize),
}

/// One key/value of a leaf, as ranges of the file's bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: Range<usize>,
    /// The value (for a nested bucket: its bucket header and inline page).
    pub value: Range<usize>,
    /// Whether this is a nested bucket.
    pub is_bucket: bool,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: usize,
    root: u64,
    pgid: u64,
    txid: u64,
}

/// An open bbolt file, held in memory. `Debug` shows its size only (values may be
/// plaintext secrets).
pub struct Bolt {
    data: Vec<u8>,
    page_size: usize,
    /// Pages in use (bbolt's high-water mark); ids at or above it are corrupt references.
    pages: u64,
    root: u64,
}

impl std::fmt::Debug for Bolt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bolt")
            .field("bytes", &self.data.len())
            .field("page_size", &self.page_size)
            .field("pages", &self.pages)
            .finish()
    }
}

fn meta_at(data: &[u8], at: usize) -> Result<Meta, BoltError> {
    let flags = u16_at(data, at + 8)?;
    let m = at + PAGE_HEADER;
    let magic = u32_at(data, m)?;
    if magic != MAGIC {
        return Err(format!(
            "not a bbolt database (magic {magic:#010x} at offset {m}, want {MAGIC:#010x})"
        ));
    }
    if flags & META == 0 {
        return Err(format!("page at offset {at} is not a meta page"));
    }
    let version = u32_at(data, m + 4)?;
    if version != VERSION {
        return Err(format!(
            "bbolt format version {version}; this reader knows {VERSION}"
        ));
    }
    let checksum = u64_at(data, m + 56)?;
    let body = data
        .get(m..m + 56)
        .ok_or_else(|| "truncated meta page".to_string())?;
    if fnv1a64(body) != checksum {
        return Err(format!("meta page at offset {at}: checksum mismatch"));
    }
    let page_size = u32_at(data, m + 8)? as usize;
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("meta page at offset {at}: page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(data, m + 16)?,
        pgid: u64_at(data, m + 40)?,
        txid: u64_at(data, m + 48)?,
    })
}

impl Bolt {
    /// Opens a database from its bytes (a trailing etcd snapshot checksum, if any, already
    /// removed). `page_size` of meta 0 is tried first, then common page sizes for meta 1.
    pub fn open(data: Vec<u8>) -> Result<Self, BoltError> {
        if data.len() < 2 * 512 {
            return Err(format!(
                "{} bytes is too short for a bbolt database (truncated or empty)",
                data.len()
            ));
        }
        let meta0 = meta_at(&data, 0);
        let size0 = meta0.as_ref().map(|m| m.page_size).ok();
        let mut meta1 = Err("no second meta page".to_string());
        for size in size0
            .into_iter()
            .chain([4096, 8192, 16384, 65536, 1024, 2048, 32768])
        {
            meta1 = meta_at(&data, size);
            if meta1.is_ok() {
                break;
            }
        }
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => a,
            (Err(a), Err(_)) => return Err(a),
        };
        let needed = usize::try_from(meta.pgid)
            .ok()
            .and_then(|p| p.checked_mul(meta.page_size))
            .ok_or_else(|| format!("meta says {} pages: corrupt", meta.pgid))?;
        if data.len() % meta.page_size != 0 {
            return Err(format!(
                "truncated: {} bytes is not a whole number of {}-byte pages",
                data.len(),
                meta.page_size
            ));
        }
        if data.len() < needed {
            return Err(format!(
                "truncated: the database has {} pages of {} bytes ({needed} bytes), the file \
                 {} bytes",
                meta.pgid,
                meta.page_size,
                data.len()
            ));
        }
        Ok(Bolt {
            data,
            page_size: meta.page_size,
            pages: meta.pgid,
            root: meta.root,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        // Ranges come from entries this reader bounds-checked against `data`.
        self.data.get(range).unwrap_or_default()
    }

    fn page(&self, id: u64) -> Result<PageRef, BoltError> {
        if id < 2 || id >= self.pages {
            return Err(format!(
                "reference to page {id}, outside the database's pages 2..{}",
                self.pages
            ));
        }
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(|| format!("page {id}: offset overflows"))?;
        let stored = u64_at(&self.data, start)?;
        if stored != id {
            return Err(format!(
                "page {id} (offset {start}) says it is page {stored}: corrupt"
            ));
        }
        let overflow = u32_at(&self.data, start + 12)? as usize;
        let end = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| format!("page {id} runs past the end of the file (truncated)"))?;
        Ok(PageRef { start, end })
    }

    /// The top-level bucket called `name`, if it exists.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        self.walk(Bucket::Paged(self.root), &mut |entry| {
            if entry.is_bucket && self.bytes(entry.key.clone()) == name {
                found = Some(entry.value.clone());
            }
            Ok(())
        })?;
        let Some(value) = found else {
            return Ok(None);
        };
        if value.len() < 16 {
            return Err(format!(
                "bucket {:?}: header truncated",
                String::from_utf8_lossy(name)
            ));
        }
        let root = u64_at(&self.data, value.start)?;
        Ok(Some(if root == 0 {
            Bucket::Inline(value.start + 16, value.end)
        } else {
            Bucket::Paged(root)
        }))
    }

    /// Calls `f` with every entry of `bucket`, in key order.
    pub fn walk(
        &self,
        bucket: Bucket,
        f: &mut dyn FnMut(Entry) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        match bucket {
            Bucket::Inline(start, end) => {
                if end < start + PAGE_HEADER {
                    return Err(format!("inline bucket at offset {start} is truncated"));
                }
                let page = PageRef { start, end };
                let flags = u16_at(&self.data, start + 8)?;
                if flags & LEAF == 0 {
                    return Err(format!("inline bucket at offset {start} is not a leaf"));
                }
                self.leaf(page, f)
            }
            Bucket::Paged(root) => {
                let mut seen = HashSet::new();
                self.walk_page(root, 0, &mut seen, f)
            }
        }
    }

    fn walk_page(
        &self,
        id: u64,
        depth: usize,
        seen: &mut HashSet<u64>,
        f: &mut dyn FnMut(Entry) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "tree deeper than {MAX_DEPTH} levels at page {id}: corrupt"
            ));
        }
        if !seen.insert(id) {
            return Err(format!("page {id} is referenced twice: corrupt"));
        }
        let page = self.page(id)?;
        let flags = u16_at(&self.data, page.start + 8)?;
        if flags & BRANCH != 0 {
            let count = u16_at(&self.data, page.start + 10)? as usize;
            for i in 0..count {
                let element = page.start + PAGE_HEADER + i * ELEMENT;
                if element + ELEMENT > page.end {
                    return Err(format!("page {id}: {count} elements do not fit"));
                }
                let child = u64_at(&self.data, element + 8)?;
                self.walk_page(child, depth + 1, seen, f)?;
            }
            Ok(())
        } else if flags & LEAF != 0 {
            self.leaf(page, f)
        } else {
            Err(format!(
                "page {id} has flags {flags:#06x}, neither branch nor leaf: corrupt"
            ))
        }
    }

    fn leaf(
        &self,
        page: PageRef,
        f: &mut dyn FnMut(Entry) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        let count = u16_at(&self.data, page.start + 10)? as usize;
        for i in 0..count {
            let element = page.start + PAGE_HEADER + i * ELEMENT;
            if element + ELEMENT > page.end {
                return Err(format!(
                    "leaf page at offset {}: {count} elements do not fit",
                    page.start
                ));
            }
            let flags = u32_at(&self.data, element)?;
            let pos = u32_at(&self.data, element + 4)? as usize;
            let ksize = u32_at(&self.data, element + 8)? as usize;
            let vsize = u32_at(&self.data, element + 12)? as usize;
            let key_start = element + pos;
            let key_end = key_start + ksize;
            let value_end = key_end
                .checked_add(vsize)
                .filter(|end| *end <= page.end)
                .ok_or_else(|| {
                    format!(
                        "leaf page at offset {}: element {i} runs past the page (truncated \
                         or corrupt)",
                        page.start
                    )
                })?;
            f(Entry {
                key: key_start..key_end,
                value: key_end..value_end,
                is_bucket: flags & BUCKET_LEAF != 0,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference() {
        // FNV-1a 64 of "a" and of "foobar", from the FNV reference test vectors.
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn short_and_foreign_files_are_errors() {
        assert!(Bolt::open(Vec::new()).unwrap_err().contains("too short"));
        assert!(Bolt::open(vec![0u8; 8192])
            .unwrap_err()
            .contains("not a bbolt"));
        assert!(Bolt::open(vec![0xffu8; 8192]).is_err());
    }
}
