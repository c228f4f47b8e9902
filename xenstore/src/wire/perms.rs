//! Permission strings: `n0`, `r1`, `w2`, `b3`.

use std::fmt;
use std::str::FromStr;

use super::WireError;

/// The access a [`Perm`] entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: no access.
    None,
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// Whether this access allows reading.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether this access allows writing.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    /// The wire letter.
    pub fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One entry of a node's permission list.
///
/// In a list, the first entry names the owner and gives the access of every
/// domain not listed; later entries give per-domain access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain this entry is about.
    pub domid: u16,
    /// What it may do.
    pub access: Access,
}

impl Perm {
    /// Builds an entry.
    pub fn new(domid: u16, access: Access) -> Perm {
        Perm { domid, access }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

impl FromStr for Perm {
    type Err = WireError;

    /// Parses `"b3"`; the domid must be a plain decimal `u16`.
    fn from_str(s: &str) -> Result<Perm, WireError> {
        let bad = || WireError::BadPerm(s.to_owned());
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let domid = digits.parse::<u16>().map_err(|_| bad())?;
        Ok(Perm { domid, access })
    }
}

/// Encodes a permission list as NUL-terminated strings (`GET_PERMS` reply /
/// `SET_PERMS` tail).
pub fn perms_to_payload(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}

/// Parses a list of permission strings.
pub fn parse_perms<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<Perm>, WireError> {
    items.into_iter().map(str::parse).collect()
}
