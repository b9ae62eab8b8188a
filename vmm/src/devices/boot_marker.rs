//! Boot-time marker device.
