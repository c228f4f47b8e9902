//! netfront-test library.
#![forbid(unsafe_code)]
