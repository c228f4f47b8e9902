//! xenstore: written by the xenstore helper.
#![forbid(unsafe_code)]
