//! Transactions: operations scoped to a `tx_id`, committed atomically.

use super::{Client, XsError};
use crate::wire::{self, MsgType, Perm};

/// How many times [`Client::transaction`] runs the closure before giving up
/// with the last `EAGAIN`.
pub const MAX_TRANSACTION_ATTEMPTS: usize = 64;

/// An open transaction. Its operations see a private view of the store;
/// [`commit`](Transaction::commit) applies them atomically or fails with
/// `EAGAIN` if something it touched changed meanwhile. Dropping it without
/// commit aborts it (best effort).
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    tx_id: u32,
    /// Set once `TRANSACTION_END` has been sent.
    finished: bool,
}

impl Transaction {
    pub(crate) fn new(client: Client, tx_id: u32) -> Transaction {
        Transaction { client, tx_id, finished: false }
    }

    /// The daemon's transaction id.
    pub fn id(&self) -> u32 {
        self.tx_id
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.client.read_in(self.tx_id, path)
    }

    /// Reads a node's value as UTF-8.
    pub fn read_string(&self, path: &str) -> Result<String, XsError> {
        self.client.read_string_in(self.tx_id, path)
    }

    /// Whether the node exists.
    pub fn exists(&self, path: &str) -> Result<bool, XsError> {
        self.client.exists_in(self.tx_id, path)
    }

    /// Writes a value, creating missing parents.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsError> {
        self.client.write_in(self.tx_id, path, value.as_ref())
    }

    /// Creates a node if missing.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.client.mkdir_in(self.tx_id, path)
    }

    /// Removes a subtree.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.client.rm_in(self.tx_id, path)
    }

    /// Lists children.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.client.directory_in(self.tx_id, path)
    }

    /// Gets a node's permissions.
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>, XsError> {
        self.client.get_perms_in(self.tx_id, path)
    }

    /// Sets a node's permissions.
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.client.set_perms_in(self.tx_id, path, perms)
    }

    /// Commits; `Err` with [`XsError::is_eagain`] means a conflict: retry.
    pub fn commit(self) -> Result<(), XsError> {
        self.end(true)
    }

    /// Discards every change.
    pub fn abort(self) -> Result<(), XsError> {
        self.end(false)
    }

    fn end(mut self, commit: bool) -> Result<(), XsError> {
        self.finished = true;
        let tx_id = self.tx_id;
        let payload = wire::join_strings(&[if commit { "T" } else { "F" }]);
        self.client
            .call(MsgType::TransactionEnd, tx_id, payload)
            .map(drop)
            .map_err(|e| e.into_xs(|errno| XsError::TransactionEnd { tx_id, errno }))
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.finished {
            self.client.send_detached(MsgType::TransactionEnd, self.tx_id, wire::join_strings(&["F"]));
        }
    }
}

impl Client {
    /// Runs `body` in a transaction and commits it, re-running the whole
    /// closure on `EAGAIN` (from the commit or from an operation) up to
    /// [`MAX_TRANSACTION_ATTEMPTS`] times. Other errors abort and return.
    pub fn transaction<T, F>(&self, mut body: F) -> Result<T, XsError>
    where
        F: FnMut(&Transaction) -> Result<T, XsError>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = self.transaction_start()?;
            let result = match body(&tx) {
                Ok(value) => tx.commit().map(|()| value),
                Err(e) => {
                    let _ = tx.abort();
                    Err(e)
                }
            };
            match result {
                Err(e) if e.is_eagain() && attempt < MAX_TRANSACTION_ATTEMPTS => {
                    tracing::debug!(attempt, "xenstore transaction conflict, retrying");
                }
                other => return other,
            }
        }
    }
}
