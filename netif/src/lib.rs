//! netif ABI: written by the netif helper.
#![forbid(unsafe_code)]
