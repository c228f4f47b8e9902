//! netback library.
#![deny(unsafe_code)]

pub mod frame;
pub mod port;
pub mod switch;
