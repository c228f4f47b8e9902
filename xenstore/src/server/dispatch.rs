//! Request dispatch: parse a payload, apply xenstored's rules, queue the
//! reply (and watch events) in C xenstored's order.

use super::engine::Engine;
use super::store::{self, canonicalize};
use super::transaction::{Tx, is_mutation};
use super::watch::ConnId;
use super::{Limits, State};
use crate::wire::{self, Header, MsgType, RawMessage, XsErrno};

type Reply = Result<Vec<u8>, XsErrno>;

/// Reserved domain ids start here (`DOMID_FIRST_RESERVED`).
const DOMID_FIRST_RESERVED: u16 = 0x7ff0;

fn ok() -> Reply {
    Ok(b"OK\0".to_vec())
}

fn einval<E>(_: E) -> XsErrno {
    XsErrno::Einval
}

fn parse_domid(s: &str) -> Result<u16, XsErrno> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsErrno::Einval);
    }
    s.parse().map_err(einval)
}

/// Requests only dom0 may make (`XS_FLAG_PRIV`).
fn privileged_only(ty: MsgType) -> bool {
    matches!(
        ty,
        MsgType::Control
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::IsDomainIntroduced
            | MsgType::Resume
            | MsgType::SetTarget
    )
}

impl State {
    /// Handles one request from `conn` and queues the reply.
    pub(super) fn handle(&mut self, limits: &Limits, conn: ConnId, raw: &RawMessage) {
        let Some(domid) = self.conns.get(&conn).map(|c| c.domid) else { return };
        let h = raw.header;
        let mut after_reply = None;
        let reply = match h.typed() {
            Ok(ty) => {
                tracing::debug!(conn, domid, ?ty, req_id = h.req_id, tx_id = h.tx_id, "xenstored request");
                self.request(limits, conn, domid, ty, h.tx_id, &raw.payload, &mut after_reply)
            }
            Err(e) => {
                tracing::warn!(conn, domid, error = %e, "unknown request type");
                Err(XsErrno::Enosys)
            }
        };
        let bytes = match reply {
            Ok(payload) if payload.len() <= wire::XENSTORE_PAYLOAD_MAX => {
                let mut m = Header { len: payload.len() as u32, ..h }.encode().to_vec();
                m.extend_from_slice(&payload);
                m
            }
            Ok(_) => super::conn::error_reply(&h, &XsErrno::E2big),
            Err(errno) => {
                if errno == XsErrno::Einval {
                    tracing::warn!(conn, domid, msg_type = h.msg_type, req_id = h.req_id, "malformed request");
                } else {
                    tracing::debug!(conn, domid, %errno, "xenstored error reply");
                }
                super::conn::error_reply(&h, &errno)
            }
        };
        if let Some(c) = self.conns.get(&conn) {
            c.out.push(bytes);
            // The registration event of a new watch follows its reply.
            if let Some((path, token)) = after_reply {
                c.out.push_event(&path, &token);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        limits: &Limits,
        conn: ConnId,
        domid: u16,
        ty: MsgType,
        tx_id: u32,
        payload: &[u8],
        after_reply: &mut Option<(String, String)>,
    ) -> Reply {
        let caller = self.caller(domid);
        if privileged_only(ty) && !caller.privileged() {
            return Err(XsErrno::Eacces);
        }
        let ignores_tx = matches!(ty, MsgType::Watch | MsgType::Unwatch);
        if tx_id != 0 && !ignores_tx && !self.conns.get(&conn).is_some_and(|c| c.txs.contains_key(&tx_id)) {
            return Err(XsErrno::Enoent);
        }
        match ty {
            MsgType::Read
            | MsgType::Write
            | MsgType::Mkdir
            | MsgType::Rm
            | MsgType::Directory
            | MsgType::DirectoryPart
            | MsgType::GetPerms
            | MsgType::SetPerms => self.db_request(limits, conn, domid, ty, tx_id, payload),
            MsgType::Watch => {
                let (path, token) = two_args(payload)?;
                let c = canonicalize(domid, path, true)?;
                let first = c.path[c.prefix_len..].to_owned();
                self.watches.add(conn, domid, c.path, token.to_owned(), c.prefix_len, limits.max_watches_per_domain)?;
                *after_reply = Some((first, token.to_owned()));
                ok()
            }
            MsgType::Unwatch => {
                let (path, token) = two_args(payload)?;
                let c = canonicalize(domid, path, true)?;
                self.watches.remove(conn, &c.path, token)?;
                ok()
            }
            MsgType::ResetWatches => {
                self.watches.remove_conn(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.txs.clear();
                }
                ok()
            }
            MsgType::TransactionStart => self.transaction_start(limits, conn, tx_id),
            MsgType::TransactionEnd => self.transaction_end(limits, conn, domid, tx_id, payload),
            MsgType::GetDomainPath => {
                let d = parse_domid(wire::parse_one(payload).map_err(einval)?)?;
                Ok(wire::join_strings(&[store::domain_path(d)]))
            }
            MsgType::Introduce => {
                let args = wire::parse_strings(payload).map_err(einval)?;
                let [d, mfn, port, ..] = args.as_slice() else { return Err(XsErrno::Einval) };
                let d = parse_domid(d)?;
                if d == 0 || d >= DOMID_FIRST_RESERVED {
                    return Err(XsErrno::Einval);
                }
                // The mfn is signed decimal (xenstore.txt); only its syntax matters here.
                mfn.parse::<i64>().map(drop).or_else(|_| mfn.parse::<u64>().map(drop)).map_err(einval)?;
                port.parse::<u32>().map_err(einval)?;
                self.introduce(d);
                ok()
            }
            MsgType::Release => {
                let d = parse_domid(wire::parse_one(payload).map_err(einval)?)?;
                if d == 0 {
                    return Err(XsErrno::Einval);
                }
                if !self.introduced.contains(&d) {
                    return Err(XsErrno::Enoent);
                }
                self.release(d);
                ok()
            }
            MsgType::IsDomainIntroduced => {
                let d = parse_domid(wire::parse_one(payload).map_err(einval)?)?;
                let yes = d == 0 || self.introduced.contains(&d);
                Ok(if yes { b"T\0".to_vec() } else { b"F\0".to_vec() })
            }
            MsgType::Resume => {
                let d = parse_domid(wire::parse_one(payload).map_err(einval)?)?;
                if self.introduced.contains(&d) { ok() } else { Err(XsErrno::Enoent) }
            }
            MsgType::SetTarget => {
                let (d, t) = two_args(payload)?;
                let (d, t) = (parse_domid(d)?, parse_domid(t)?);
                self.targets.insert(d, t);
                ok()
            }
            // CONTROL is implementation specific; the rest are replies,
            // obsolete, optional or invalid.
            _ => Err(XsErrno::Enosys),
        }
    }

    /// Store operations, live or inside transaction `tx_id`.
    fn db_request(
        &mut self,
        limits: &Limits,
        conn: ConnId,
        domid: u16,
        ty: MsgType,
        tx_id: u32,
        payload: &[u8],
    ) -> Reply {
        let caller = self.caller(domid);
        if tx_id == 0 {
            let mut eng = Engine::new(&mut self.store, caller, limits, None);
            let reply = run_db(&mut eng, ty, payload);
            let events = std::mem::take(&mut eng.events);
            self.fire(events);
            return reply;
        }
        let Some(tx) = self.conns.get_mut(&conn).and_then(|c| c.txs.get_mut(&tx_id)) else {
            return Err(XsErrno::Enoent);
        };
        let mut eng = Engine::new(&mut tx.view, caller, limits, Some(&mut tx.accessed));
        let reply = run_db(&mut eng, ty, payload);
        if reply.is_ok() && is_mutation(ty) {
            tx.ops.push((ty, payload.to_vec()));
        }
        reply
    }

    fn transaction_start(&mut self, limits: &Limits, conn: ConnId, tx_id: u32) -> Reply {
        if tx_id != 0 {
            // Nested transactions are not supported (tx_id was validated).
            return Err(XsErrno::Ebusy);
        }
        let open = self.conns.get(&conn).map_or(0, |c| c.txs.len());
        if open >= limits.max_transactions_per_connection {
            return Err(XsErrno::Enospc);
        }
        let mut id = self.next_tx;
        while id == 0 || self.conns.values().any(|c| c.txs.contains_key(&id)) {
            id = id.wrapping_add(1);
        }
        self.next_tx = id.wrapping_add(1);
        let tx = Tx::new(&self.store);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.txs.insert(id, tx);
        }
        Ok(wire::join_strings(&[id.to_string()]))
    }

    fn transaction_end(&mut self, limits: &Limits, conn: ConnId, domid: u16, tx_id: u32, payload: &[u8]) -> Reply {
        let commit = match wire::parse_one(payload).map_err(einval)? {
            "T" => true,
            "F" => false,
            _ => return Err(XsErrno::Einval),
        };
        let tx = self.conns.get_mut(&conn).and_then(|c| c.txs.remove(&tx_id)).ok_or(XsErrno::Enoent)?;
        if !commit {
            return ok();
        }
        if tx.conflicts(&self.store) {
            tracing::debug!(conn, tx_id, "transaction conflict");
            return Err(XsErrno::Eagain);
        }
        if tx.ops.is_empty() {
            return ok();
        }
        // Replay on a copy so a failing replay leaves the store untouched.
        let caller = self.caller(domid);
        let mut copy = self.store.clone();
        let mut events = Vec::new();
        for (ty, op) in &tx.ops {
            let mut eng = Engine::new(&mut copy, caller, limits, None);
            if let Err(e) = run_db(&mut eng, *ty, op) {
                tracing::warn!(conn, tx_id, ?ty, errno = %e, "transaction replay failed");
                return Err(XsErrno::Eagain);
            }
            events.append(&mut eng.events);
        }
        self.store = copy;
        self.fire(events);
        ok()
    }
}

fn two_args(payload: &[u8]) -> Result<(&str, &str), XsErrno> {
    match wire::parse_strings(payload).map_err(einval)?.as_slice() {
        [a, b] => Ok((a, b)),
        _ => Err(XsErrno::Einval),
    }
}

/// Parses and runs one store request on `eng`.
fn run_db(eng: &mut Engine<'_>, ty: MsgType, payload: &[u8]) -> Reply {
    let domid = eng.caller.domid;
    let path_of = |special: bool| -> Result<String, XsErrno> {
        let raw = wire::parse_one(payload).map_err(einval)?;
        Ok(canonicalize(domid, raw, special)?.path)
    };
    match ty {
        MsgType::Read => eng.read(&path_of(false)?),
        MsgType::Write => {
            let (raw, value) = wire::split_path_value(payload).map_err(einval)?;
            eng.write(&canonicalize(domid, raw, false)?.path, value).and_then(|()| ok())
        }
        MsgType::Mkdir => eng.mkdir(&path_of(false)?).and_then(|()| ok()),
        MsgType::Rm => eng.rm(&path_of(false)?).and_then(|()| ok()),
        MsgType::Directory => eng.directory(&path_of(false)?).map(|c| wire::join_strings(&c)),
        MsgType::DirectoryPart => {
            let (raw, offset) = two_args(payload)?;
            let offset = offset.parse::<usize>().map_err(einval)?;
            eng.directory_part(&canonicalize(domid, raw, false)?.path, offset)
        }
        MsgType::GetPerms => eng.get_perms(&path_of(true)?).map(|p| wire::perms_to_payload(&p)),
        MsgType::SetPerms => {
            let args = wire::parse_strings(payload).map_err(einval)?;
            let [raw, perms @ ..] = args.as_slice() else { return Err(XsErrno::Einval) };
            let perms = wire::parse_perms(perms.iter().copied()).map_err(einval)?;
            eng.set_perms(&canonicalize(domid, raw, true)?.path, perms).and_then(|()| ok())
        }
        _ => Err(XsErrno::Enosys),
    }
}
