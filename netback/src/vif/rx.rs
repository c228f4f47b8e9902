//! RX: uplink → guest.
