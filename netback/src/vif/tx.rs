//! TX: guest → uplink.
