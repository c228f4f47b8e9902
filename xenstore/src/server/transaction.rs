//! Transactions: a private copy of the store, the generations of every
//! node the transaction touched, and the operations to replay on commit.

use super::engine::AccessLog;
use super::store::Store;
use crate::wire::MsgType;

/// One open transaction.
///
/// Invariant: `accessed` holds, for every node an operation of this
/// transaction looked at, the node's generation in the live store at the
/// moment the transaction started (the copy is untouched until the first
/// access, and the first access is always recorded before any change).
/// So the transaction is conflict-free iff the live store still has those
/// generations at commit.
#[derive(Debug)]
pub(crate) struct Tx {
    pub view: Store,
    pub accessed: AccessLog,
    /// Successful mutating requests (type, payload), in order.
    pub ops: Vec<(MsgType, Vec<u8>)>,
}

impl Tx {
    /// Starts a transaction on a copy of `live`.
    pub fn new(live: &Store) -> Tx {
        Tx { view: live.clone(), accessed: AccessLog::new(), ops: Vec::new() }
    }

    /// Whether something this transaction read or wrote has changed
    /// (including creation or removal) in `live` since it started.
    pub fn conflicts(&self, live: &Store) -> bool {
        self.accessed.iter().any(|(path, generation)| live.generation(path) != *generation)
    }
}

/// Whether a request type changes the store (and must be replayed).
pub(crate) fn is_mutation(ty: MsgType) -> bool {
    matches!(ty, MsgType::Write | MsgType::Mkdir | MsgType::Rm | MsgType::SetPerms)
}
