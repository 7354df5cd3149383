//! Reading a whole range page by page at one revision, with the next page fetched while the
//! current one is processed. Memory is bounded by two pages, whatever the object count.

use atrest_storage::{EncryptedStore, ScanPage, ScanRange, StorageError};
use atrest_store::StoreError;
use tokio::task::JoinHandle;

/// Keys per page. etcd recounts the rest of the range on every paged request, so small
/// pages cost it far more CPU than the data (500-key pages doubled its work on a 20,000-key
/// scan); 5,000 keys of 1 KiB are about 5 MB, and two pages are held at once.
pub const PAGE_KEYS: usize = 5000;

type Fetch = JoinHandle<Result<ScanPage, StorageError>>;

/// The pages of one range, in key order, all read at the revision of the first.
#[derive(Debug)]
pub struct Scanner {
    storage: EncryptedStore,
    range: ScanRange,
    revision: Option<i64>,
    next: Option<Fetch>,
    done: bool,
}

impl Scanner {
    /// A scan of `range` at `revision` (`None`: the current revision, fixed by the first
    /// page).
    pub fn new(storage: &EncryptedStore, range: ScanRange, revision: Option<i64>) -> Self {
        let mut scanner = Scanner {
            storage: storage.clone(),
            range,
            revision,
            next: None,
            done: false,
        };
        scanner.next = Some(scanner.fetch(None));
        scanner
    }

    fn fetch(&self, after: Option<Vec<u8>>) -> Fetch {
        let storage = self.storage.clone();
        let range = self.range.clone();
        let revision = self.revision;
        tokio::spawn(async move { storage.scan(&range, after, revision, PAGE_KEYS).await })
    }

    /// The revision the scan reads at (known once the first page has arrived).
    pub fn revision(&self) -> Option<i64> {
        self.revision
    }

    /// The next page, or `None` after the last one. The page after it is already being
    /// read when this returns.
    pub async fn next(&mut self) -> Result<Option<ScanPage>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let Some(task) = self.next.take() else {
            return Ok(None);
        };
        let page = task.await.map_err(|e| {
            StorageError::Store(StoreError::Backend(format!("reading a page failed: {e}")))
        })??;
        self.revision = Some(page.revision);
        if page.more {
            self.next = Some(self.fetch(page.last_key.clone()));
        } else {
            self.done = true;
        }
        Ok(Some(page))
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        if let Some(task) = self.next.take() {
            task.abort();
        }
    }
}
