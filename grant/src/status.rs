//! `GNTST_*` status codes, as `xen/include/public/grant_table.h` numbers them.

use std::fmt;

/// The outcome of one grant operation (`int16_t status` in Xen's structures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GrantStatus {
    /// `GNTST_okay`: normal return.
    Okay = 0,
    /// `GNTST_general_error`: general undefined error.
    GeneralError = -1,
    /// `GNTST_bad_domain`: unrecognised domain id.
    BadDomain = -2,
    /// `GNTST_bad_gntref`: unrecognised or inappropriate gntref.
    BadGntref = -3,
    /// `GNTST_bad_handle`: unrecognised or inappropriate handle.
    BadHandle = -4,
    /// `GNTST_bad_virt_addr`: inappropriate virtual address to map.
    BadVirtAddr = -5,
    /// `GNTST_bad_dev_addr`: inappropriate device address to unmap.
    BadDevAddr = -6,
    /// `GNTST_no_device_space`: out of space in I/O MMU.
    NoDeviceSpace = -7,
    /// `GNTST_permission_denied`: not enough privilege for operation.
    PermissionDenied = -8,
    /// `GNTST_bad_page`: specified page was invalid for op.
    BadPage = -9,
    /// `GNTST_bad_copy_arg`: copy arguments cross page boundary.
    BadCopyArg = -10,
    /// `GNTST_address_too_big`: transfer page address too large.
    AddressTooBig = -11,
    /// `GNTST_eagain`: operation not done; try again.
    Eagain = -12,
    /// `GNTST_no_space`: out of space (handles etc).
    NoSpace = -13,
}

impl GrantStatus {
    /// Every code, in numeric order from 0 downwards.
    pub const ALL: [GrantStatus; 14] = [
        Self::Okay,
        Self::GeneralError,
        Self::BadDomain,
        Self::BadGntref,
        Self::BadHandle,
        Self::BadVirtAddr,
        Self::BadDevAddr,
        Self::NoDeviceSpace,
        Self::PermissionDenied,
        Self::BadPage,
        Self::BadCopyArg,
        Self::AddressTooBig,
        Self::Eagain,
        Self::NoSpace,
    ];

    /// The raw `GNTST_*` value.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// Decodes a raw value; unknown codes are `None`.
    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// Xen's own message for the code (`GNTTABOP_error_msgs`).
    pub fn message(self) -> &'static str {
        match self {
            Self::Okay => "okay",
            Self::GeneralError => "undefined error",
            Self::BadDomain => "unrecognised domain id",
            Self::BadGntref => "invalid grant reference",
            Self::BadHandle => "invalid mapping handle",
            Self::BadVirtAddr => "invalid virtual address",
            Self::BadDevAddr => "invalid device address",
            Self::NoDeviceSpace => "no spare translation slot in the I/O MMU",
            Self::PermissionDenied => "permission denied",
            Self::BadPage => "bad page",
            Self::BadCopyArg => "copy arguments cross page boundary",
            Self::AddressTooBig => "page address size too large",
            Self::Eagain => "operation not done; try again",
            Self::NoSpace => "outof space",
        }
    }

    /// `true` for `GNTST_okay`.
    pub fn is_ok(self) -> bool {
        self == Self::Okay
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GNTST {} ({})", self.code(), self.message())
    }
}
