//! The simulated Xen host: written by the grant helper.
