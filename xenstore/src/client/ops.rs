//! The request/reply operations of [`Client`]. Each `*_in` helper takes the
//! transaction id (0: none) so [`Transaction`] can share them.

use std::sync::Arc;

use super::watch::WatchQueue;
use super::{CallError, Client, Transaction, Watch, XsError};
use crate::wire::{self, MsgType, Perm, XsErrno};

/// Encodes one string argument, rejecting embedded NULs up front.
fn one_arg(s: &str) -> Result<Vec<u8>, CallError> {
    wire::check_no_nul(s).map_err(|e| CallError::Fatal(XsError::InvalidRequest(e)))?;
    Ok(wire::join_strings(&[s]))
}

fn strings(payload: &[u8]) -> Result<Vec<String>, CallError> {
    let items = wire::parse_strings(payload).map_err(|e| CallError::Fatal(XsError::Protocol(e.to_string())))?;
    Ok(items.into_iter().map(str::to_owned).collect())
}

fn one_string(payload: &[u8]) -> Result<String, CallError> {
    wire::parse_one(payload).map(str::to_owned).map_err(|e| CallError::Fatal(XsError::Protocol(e.to_string())))
}

impl Client {
    pub(crate) fn read_in(&self, tx: u32, path: &str) -> Result<Vec<u8>, XsError> {
        let name = |errno| XsError::Read { path: path.to_owned(), errno };
        one_arg(path).and_then(|p| self.call(MsgType::Read, tx, p)).map_err(|e| e.into_xs(name))
    }

    pub(crate) fn read_string_in(&self, tx: u32, path: &str) -> Result<String, XsError> {
        String::from_utf8(self.read_in(tx, path)?)
            .map_err(|_| XsError::Protocol(format!("value of {path} is not UTF-8")))
    }

    pub(crate) fn exists_in(&self, tx: u32, path: &str) -> Result<bool, XsError> {
        match self.read_in(tx, path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_enoent() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn write_in(&self, tx: u32, path: &str, value: &[u8]) -> Result<(), XsError> {
        let name = |errno| XsError::Write { path: path.to_owned(), errno };
        let run = || {
            wire::check_no_nul(path).map_err(|e| CallError::Fatal(XsError::InvalidRequest(e)))?;
            self.call(MsgType::Write, tx, wire::path_value_payload(path, value))
        };
        run().map(drop).map_err(|e| e.into_xs(name))
    }

    pub(crate) fn mkdir_in(&self, tx: u32, path: &str) -> Result<(), XsError> {
        let name = |errno| XsError::Mkdir { path: path.to_owned(), errno };
        one_arg(path).and_then(|p| self.call(MsgType::Mkdir, tx, p)).map(drop).map_err(|e| e.into_xs(name))
    }

    pub(crate) fn rm_in(&self, tx: u32, path: &str) -> Result<(), XsError> {
        let name = |errno| XsError::Rm { path: path.to_owned(), errno };
        one_arg(path).and_then(|p| self.call(MsgType::Rm, tx, p)).map(drop).map_err(|e| e.into_xs(name))
    }

    pub(crate) fn directory_in(&self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        let name = |errno| XsError::Directory { path: path.to_owned(), errno };
        match one_arg(path).and_then(|p| self.call(MsgType::Directory, tx, p)).and_then(|r| strings(&r)) {
            Err(CallError::Errno(XsErrno::E2big)) => self.directory_parts(tx, path).map_err(|e| e.into_xs(name)),
            other => other.map_err(|e| e.into_xs(name)),
        }
    }

    /// `XS_DIRECTORY_PART` loop for child lists over the payload limit.
    /// Restarts if the node's generation changes between parts.
    fn directory_parts(&self, tx: u32, path: &str) -> Result<Vec<String>, CallError> {
        'restart: for _ in 0..16 {
            let mut children = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<String> = None;
            loop {
                let payload = wire::join_strings(&[path, &offset.to_string()]);
                let reply = strings(&self.call(MsgType::DirectoryPart, tx, payload)?)?;
                let Some((gen_now, rest)) = reply.split_first() else {
                    return Err(CallError::Fatal(XsError::Protocol("empty DIRECTORY_PART reply".into())));
                };
                if generation.get_or_insert_with(|| gen_now.clone()) != gen_now {
                    continue 'restart;
                }
                // A final empty string marks the end of the list.
                let done = rest.last().is_some_and(String::is_empty) || rest.is_empty();
                for child in rest.iter().filter(|c| !c.is_empty()) {
                    offset += child.len() + 1;
                    children.push(child.clone());
                }
                if done {
                    return Ok(children);
                }
            }
        }
        Err(CallError::Errno(XsErrno::Eagain))
    }

    pub(crate) fn get_perms_in(&self, tx: u32, path: &str) -> Result<Vec<Perm>, XsError> {
        let name = |errno| XsError::GetPerms { path: path.to_owned(), errno };
        let reply = one_arg(path).and_then(|p| self.call(MsgType::GetPerms, tx, p)).map_err(|e| e.into_xs(name))?;
        let items = strings(&reply).map_err(|e| e.into_xs(name))?;
        wire::parse_perms(items.iter().map(String::as_str)).map_err(|e| XsError::Protocol(e.to_string()))
    }

    pub(crate) fn set_perms_in(&self, tx: u32, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        let name = |errno| XsError::SetPerms { path: path.to_owned(), errno };
        let run = || {
            let mut payload = one_arg(path)?;
            payload.extend(wire::perms_to_payload(perms));
            self.call(MsgType::SetPerms, tx, payload)
        };
        run().map(drop).map_err(|e| e.into_xs(name))
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(0, path)
    }

    /// Reads a node's value as UTF-8.
    pub fn read_string(&self, path: &str) -> Result<String, XsError> {
        self.read_string_in(0, path)
    }

    /// Whether the node exists (a read that fails with `ENOENT` means no).
    pub fn exists(&self, path: &str) -> Result<bool, XsError> {
        self.exists_in(0, path)
    }

    /// Writes a value, creating missing parents.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsError> {
        self.write_in(0, path, value.as_ref())
    }

    /// Creates a node (and parents) if missing.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.mkdir_in(0, path)
    }

    /// Removes a subtree; absent is fine if the parent exists.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(0, path)
    }

    /// Lists the children's leaf names (falls back to `DIRECTORY_PART` on `E2BIG`).
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_in(0, path)
    }

    /// Gets a node's permission list (owner first).
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>, XsError> {
        self.get_perms_in(0, path)
    }

    /// Replaces a node's permission list (owner first).
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.set_perms_in(0, path, perms)
    }

    /// `/local/domain/<domid>`, as the daemon computes it.
    pub fn get_domain_path(&self, domid: u16) -> Result<String, XsError> {
        let name = |errno| XsError::GetDomainPath { domid, errno };
        let reply = self
            .call(MsgType::GetDomainPath, 0, wire::join_strings(&[domid.to_string()]))
            .map_err(|e| e.into_xs(name))?;
        one_string(&reply).map_err(|e| e.into_xs(name))
    }

    /// Tells xenstored about a new domain (dom0 only); fires `@introduceDomain`.
    pub fn introduce(&self, domid: u16, mfn: u64, port: u32) -> Result<(), XsError> {
        let payload = wire::join_strings(&[domid.to_string(), mfn.to_string(), port.to_string()]);
        self.call(MsgType::Introduce, 0, payload)
            .map(drop)
            .map_err(|e| e.into_xs(|errno| XsError::Introduce { domid, errno }))
    }

    /// Disconnects a domain (dom0 only); fires `@releaseDomain`.
    pub fn release(&self, domid: u16) -> Result<(), XsError> {
        let payload = wire::join_strings(&[domid.to_string()]);
        self.call(MsgType::Release, 0, payload)
            .map(drop)
            .map_err(|e| e.into_xs(|errno| XsError::Release { domid, errno }))
    }

    /// Whether the domain is introduced (dom0 only).
    pub fn is_domain_introduced(&self, domid: u16) -> Result<bool, XsError> {
        let name = |errno| XsError::IsDomainIntroduced { domid, errno };
        let reply = self
            .call(MsgType::IsDomainIntroduced, 0, wire::join_strings(&[domid.to_string()]))
            .map_err(|e| e.into_xs(name))?;
        match one_string(&reply).map_err(|e| e.into_xs(name))?.as_str() {
            "T" => Ok(true),
            "F" => Ok(false),
            other => Err(XsError::Protocol(format!("IS_DOMAIN_INTRODUCED answered {other:?}"))),
        }
    }

    /// Drops every watch and transaction of this connection on the daemon
    /// side. Local [`Watch`] handles stop receiving events.
    pub fn reset_watches(&self) -> Result<(), XsError> {
        self.inner.shared.lock().watches.clear();
        self.call(MsgType::ResetWatches, 0, Vec::new())
            .map(drop)
            .map_err(|e| e.into_xs(|errno| XsError::ResetWatches { errno }))
    }

    /// Registers a watch on `path` (or `@introduceDomain` / `@releaseDomain`).
    /// `token: None` generates a token unique to this client. The first
    /// event (the watched path itself) arrives right after registration.
    pub fn watch(&self, path: &str, token: Option<&str>) -> Result<Watch, XsError> {
        let name = |errno| XsError::Watch { path: path.to_owned(), errno };
        let token = match token {
            Some(t) => t.to_owned(),
            None => self.fresh_token(),
        };
        for s in [path, token.as_str()] {
            wire::check_no_nul(s).map_err(XsError::InvalidRequest)?;
        }
        let queue = Arc::new(WatchQueue::new()?);
        if !self.add_watch_queue(&token, queue.clone()) {
            return Err(name(XsErrno::Eexist));
        }
        let payload = wire::join_strings(&[path, token.as_str()]);
        match self.call(MsgType::Watch, 0, payload) {
            Ok(_) => Ok(Watch::new(self.clone(), path.to_owned(), token, queue)),
            Err(e) => {
                self.forget_watch(&token);
                Err(e.into_xs(name))
            }
        }
    }

    /// Starts a transaction; see also [`Client::transaction`].
    pub fn transaction_start(&self) -> Result<Transaction, XsError> {
        let name = |errno| XsError::TransactionStart { errno };
        let reply = self.call(MsgType::TransactionStart, 0, vec![0]).map_err(|e| e.into_xs(name))?;
        let id = one_string(&reply).map_err(|e| e.into_xs(name))?;
        let tx_id = id.parse::<u32>().map_err(|_| XsError::Protocol(format!("bad transaction id {id:?}")))?;
        if tx_id == 0 {
            return Err(XsError::Protocol("transaction id 0".into()));
        }
        Ok(Transaction::new(self.clone(), tx_id))
    }
}
