//! The library half of `nbctl`: the toolstack's xenstore layout of a vif (what
//! `xl network-attach` / `xl network-detach` write), shared by the CLI and the tests.
#![forbid(unsafe_code)]

pub mod layout;
