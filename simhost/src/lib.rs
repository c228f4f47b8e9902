//! The simulated Xen host.
#![forbid(unsafe_code)]
