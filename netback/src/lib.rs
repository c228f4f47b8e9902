//! netback library.
#![deny(unsafe_code)]
