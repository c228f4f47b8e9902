//! The xenstore wire protocol of `xen/include/public/io/xs_wire.h`.
//!
//! Every message, in both directions, is a 16-byte [`Header`]
//! (`type`, `req_id`, `tx_id`, `len`, native endian) followed by `len`
//! bytes of payload, `len <= XENSTORE_PAYLOAD_MAX`. Payloads are mostly
//! NUL-terminated strings; `WRITE` values and `READ` replies are raw bytes.
//!
//! Decoding is total: any byte sequence yields a value or a [`WireError`].

mod errno;
mod perms;

pub use errno::{KNOWN_ERRNOS, XsErrno};
pub use perms::{Access, Perm, parse_perms, perms_to_payload};

/// Maximum payload length in either direction.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Maximum length of an absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Maximum length of a relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// Size of the message header.
pub const HEADER_LEN: usize = 16;

/// Errors from encoding or decoding wire messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header announces (or the caller built) a payload over the limit.
    #[error("payload of {len} bytes exceeds XENSTORE_PAYLOAD_MAX ({XENSTORE_PAYLOAD_MAX})")]
    PayloadTooLarge {
        /// The offending length.
        len: usize,
    },
    /// Fewer bytes than a header or the announced payload.
    #[error("truncated message: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The type field is not an `xsd_sockmsg_type`.
    #[error("unknown message type {0}")]
    UnknownType(u32),
    /// A string field lacks its terminating NUL.
    #[error("payload string is not NUL-terminated")]
    MissingNul,
    /// A string field is not UTF-8.
    #[error("payload string is not valid UTF-8")]
    NotUtf8,
    /// A string field contains a NUL where none is allowed.
    #[error("string contains an embedded NUL")]
    EmbeddedNul,
    /// Wrong number of NUL-terminated arguments.
    #[error("expected {expected} argument(s), got {got}")]
    ArgCount {
        /// Arguments required.
        expected: usize,
        /// Arguments present.
        got: usize,
    },
    /// Bytes follow the single message that was expected.
    #[error("{extra} trailing byte(s) after the message")]
    TrailingBytes {
        /// Number of unexpected bytes.
        extra: usize,
    },
    /// A permission string is not `[nrwb]<domid>`.
    #[error("bad permission string {0:?}")]
    BadPerm(String),
}

macro_rules! msg_types {
    ($($(#[$m:meta])* $name:ident = $num:literal,)*) => {
        /// Every `enum xsd_sockmsg_type` value.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType {
            $($(#[$m])* $name = $num,)*
        }

        impl MsgType {
            /// All known types, in numeric order.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name,)*];

            /// Maps a wire number to a type.
            pub fn from_u32(v: u32) -> Option<MsgType> {
                match v {
                    $($num => Some(MsgType::$name),)*
                    _ => None,
                }
            }
        }
    };
}

msg_types! {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: list children.
    Directory = 1,
    /// `XS_READ`: read a value.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`.
    Introduce = 8,
    /// `XS_RELEASE`.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT` (daemon to client only).
    WatchEvent = 15,
    /// `XS_ERROR` (daemon to client only).
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESTRICT`: obsolete, the value is invalid today.
    Restrict = 20,
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
    /// `XS_GET_FEATURE` (optional, newer daemons).
    GetFeature = 23,
    /// `XS_SET_FEATURE` (optional, newer daemons).
    SetFeature = 24,
    /// `XS_GET_QUOTA` (optional, newer daemons).
    GetQuota = 25,
    /// `XS_SET_QUOTA` (optional, newer daemons).
    SetQuota = 26,
    /// `XS_INVALID`: guaranteed never valid.
    Invalid = 0xffff,
}

impl MsgType {
    /// The wire number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// The 16-byte `struct xsd_sockmsg` header. `msg_type` stays a raw `u32` so a
/// daemon can still frame (and reject) messages of unknown type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `XS_*` type number.
    pub msg_type: u32,
    /// Request id, echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Encodes in native byte order.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (i, v) in [self.msg_type, self.req_id, self.tx_id, self.len].into_iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        out
    }

    /// Decodes any 16 bytes (never fails).
    pub fn decode(raw: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_ne_bytes([raw[i * 4], raw[i * 4 + 1], raw[i * 4 + 2], raw[i * 4 + 3]]);
        Header { msg_type: word(0), req_id: word(1), tx_id: word(2), len: word(3) }
    }

    /// Checks `len` against the protocol limit.
    pub fn check_len(&self) -> Result<usize, WireError> {
        let len = self.len as usize;
        if len > XENSTORE_PAYLOAD_MAX { Err(WireError::PayloadTooLarge { len }) } else { Ok(len) }
    }

    /// The typed message type.
    pub fn typed(&self) -> Result<MsgType, WireError> {
        MsgType::from_u32(self.msg_type).ok_or(WireError::UnknownType(self.msg_type))
    }
}

/// A framed message whose type has not been validated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The header as received.
    pub header: Header,
    /// Exactly `header.len` bytes.
    pub payload: Vec<u8>,
}

/// Splits one message off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((msg, used)))`
/// with the number of bytes consumed, or an error when the header announces
/// an oversized payload (the stream cannot be re-synchronised after that).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(RawMessage, usize)>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else { return Ok(None) };
    let header = Header::decode(head);
    let len = header.check_len()?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else { return Ok(None) };
    Ok(Some((RawMessage { header, payload: payload.to_vec() }, HEADER_LEN + len)))
}

/// A message with a known type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub msg_type: MsgType,
    /// Request id.
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// Builds a message.
    pub fn new(msg_type: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message { msg_type, req_id, tx_id, payload }
    }

    /// Header plus payload as one buffer (one `write` on `/dev/xen/xenbus`).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let len = self.payload.len();
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::PayloadTooLarge { len });
        }
        let header =
            Header { msg_type: self.msg_type.as_u32(), req_id: self.req_id, tx_id: self.tx_id, len: len as u32 };
        let mut out = Vec::with_capacity(HEADER_LEN + len);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes exactly one complete message; trailing bytes are an error.
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        let (raw, used) =
            decode_frame(buf)?.ok_or(WireError::Truncated { needed: needed_len(buf), have: buf.len() })?;
        if used != buf.len() {
            return Err(WireError::TrailingBytes { extra: buf.len() - used });
        }
        Message::try_from(raw)
    }
}

/// Bytes needed for the first frame of `buf` (header only if it is short).
fn needed_len(buf: &[u8]) -> usize {
    buf.first_chunk::<HEADER_LEN>().map_or(HEADER_LEN, |h| HEADER_LEN + Header::decode(h).len as usize)
}

impl TryFrom<RawMessage> for Message {
    type Error = WireError;

    fn try_from(raw: RawMessage) -> Result<Message, WireError> {
        let msg_type = raw.header.typed()?;
        Ok(Message { msg_type, req_id: raw.header.req_id, tx_id: raw.header.tx_id, payload: raw.payload })
    }
}

/// Encodes strings, each followed by a NUL.
pub fn join_strings<S: AsRef<str>>(items: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(s.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// Parses `<s>|*`: zero or more NUL-terminated UTF-8 strings filling the
/// whole payload. An empty payload is an empty list.
pub fn parse_strings(payload: &[u8]) -> Result<Vec<&str>, WireError> {
    let Some(body) = payload.strip_suffix(&[0]) else {
        return if payload.is_empty() { Ok(Vec::new()) } else { Err(WireError::MissingNul) };
    };
    body.split(|&b| b == 0).map(|s| std::str::from_utf8(s).map_err(|_| WireError::NotUtf8)).collect()
}

/// Parses exactly one NUL-terminated string filling the payload (`onearg`).
pub fn parse_one(payload: &[u8]) -> Result<&str, WireError> {
    let items = parse_strings(payload)?;
    match items.as_slice() {
        [one] => Ok(one),
        _ => Err(WireError::ArgCount { expected: 1, got: items.len() }),
    }
}

/// Splits a `WRITE` payload `<path>|<value|>`: the value is everything after
/// the first NUL and may itself contain NULs.
pub fn split_path_value(payload: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let nul = payload.iter().position(|&b| b == 0).ok_or(WireError::MissingNul)?;
    let path = std::str::from_utf8(&payload[..nul]).map_err(|_| WireError::NotUtf8)?;
    Ok((path, &payload[nul + 1..]))
}

/// Builds a `WRITE` payload.
pub fn path_value_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1 + value.len());
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    out.extend_from_slice(value);
    out
}

/// Checks that a string can be sent as one NUL-terminated field.
pub fn check_no_nul(s: &str) -> Result<(), WireError> {
    if s.as_bytes().contains(&0) { Err(WireError::EmbeddedNul) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_xs_wire_h() {
        assert_eq!(MsgType::Control.as_u32(), 0);
        assert_eq!(MsgType::WatchEvent.as_u32(), 15);
        assert_eq!(MsgType::Error.as_u32(), 16);
        assert_eq!(MsgType::ResetWatches.as_u32(), 21);
        assert_eq!(MsgType::DirectoryPart.as_u32(), 22);
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u32(t.as_u32()), Some(*t));
        }
        assert_eq!(MsgType::from_u32(27), None);
    }

    #[test]
    fn strings() {
        assert_eq!(parse_strings(b"").unwrap(), Vec::<&str>::new());
        assert_eq!(parse_strings(b"a\0bc\0").unwrap(), vec!["a", "bc"]);
        assert_eq!(parse_strings(b"\0").unwrap(), vec![""]);
        assert_eq!(parse_strings(b"a"), Err(WireError::MissingNul));
        assert_eq!(parse_strings(b"\xff\0"), Err(WireError::NotUtf8));
        assert_eq!(parse_one(b"/x\0").unwrap(), "/x");
        assert!(parse_one(b"/x\0y\0").is_err());
        assert_eq!(split_path_value(b"/a\0v\0w").unwrap(), ("/a", &b"v\0w"[..]));
    }
}
