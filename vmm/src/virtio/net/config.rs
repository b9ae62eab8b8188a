//! Configuration of a virtio-net device: the `--net` CLI value, the feature bits we offer, and the
//! device config space.
//!
//! CLI value: `tap=NAME[,mac=MAC][,mtu=N]` or `fd=N[,mac=MAC][,mtu=N]` (keys in any order, each once).
//!
//! Config space (virtio 1.2, 5.1.4): `mac` (6 bytes), `status` (le16), `max_virtqueue_pairs` (le16),
//! `mtu` (le16).

use std::fmt;
use std::os::fd::RawFd;
use std::str::FromStr;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};

use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use crate::virtio::VIRTIO_F_VERSION_1;

/// Size of the config space we expose (mac, status, max_virtqueue_pairs, mtu).
pub const CONFIG_SPACE_LEN: usize = 12;

/// Smallest MTU accepted (IPv4 minimum).
pub const MIN_MTU: u16 = 68;

/// Features every device offers; MAC and MTU are added when configured.
pub const BASE_FEATURES: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_RING_F_EVENT_IDX);

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = NetConfigError;

    /// Parses `aa:bb:cc:dd:ee:ff`; multicast and all-zero addresses are refused (a NIC cannot
    /// have them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetConfigError::BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() || mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

/// Where the tap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapSource {
    /// Open (or create) the tap with this name through /dev/net/tun.
    Name(String),
    /// A tap file descriptor the VMM inherited (opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).
    Fd(RawFd),
}

/// One `--net` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: TapSource,
    /// The guest NIC's address (VIRTIO_NET_F_MAC); without it the guest picks a random one.
    pub mac: Option<MacAddr>,
    /// The MTU the guest should use (VIRTIO_NET_F_MTU).
    pub mtu: Option<u16>,
}

/// What is wrong with a `--net` value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    #[error("--net: give exactly one of `tap=NAME` or `fd=N` (expected tap=NAME|fd=N[,mac=MAC][,mtu=N])")]
    NoTap,
    #[error("--net: the tap name {0:?} must be 1 to 15 bytes without '/', NUL, whitespace or ':'")]
    BadTapName(String),
    #[error("--net: fd={0:?} is not a file descriptor number above 2")]
    BadFd(String),
    #[error("--net: mac={0:?} is not a unicast address of the form aa:bb:cc:dd:ee:ff")]
    BadMac(String),
    #[error("--net: mtu={0:?} must be a number from {MIN_MTU} to 65535")]
    BadMtu(String),
    #[error("--net: unknown key {0:?} (known: tap, fd, mac, mtu)")]
    UnknownKey(String),
    #[error("--net: {0:?} is not of the form key=value")]
    NotKeyValue(String),
    #[error("--net: `{0}=` is given twice")]
    DuplicateKey(&'static str),
}

impl NetConfig {
    /// Features the device offers for this configuration.
    pub fn features(&self) -> u64 {
        let mut features = BASE_FEATURES;
        if self.mac.is_some() {
            features |= 1 << VIRTIO_NET_F_MAC;
        }
        if self.mtu.is_some() {
            features |= 1 << VIRTIO_NET_F_MTU;
        }
        features
    }

    /// The config space bytes: MAC (zero when not configured), link up, one queue pair, MTU.
    pub fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        if let Some(mac) = self.mac {
            space[..6].copy_from_slice(&mac.0);
        }
        space[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        space[8..10].copy_from_slice(&1u16.to_le_bytes());
        space[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        space
    }
}

/// Checks a Linux interface name (IFNAMSIZ is 16 including the NUL).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), NetConfigError> {
    if slot.is_some() {
        return Err(NetConfigError::DuplicateKey(key));
    }
    *slot = Some(value);
    Ok(())
}

impl FromStr for NetConfig {
    type Err = NetConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut tap = None;
        let mut fd = None;
        let mut mac = None;
        let mut mtu = None;
        for item in value.split(',') {
            let (key, val) = item
                .split_once('=')
                .ok_or_else(|| NetConfigError::NotKeyValue(item.to_string()))?;
            match key {
                "tap" => {
                    if !valid_ifname(val) {
                        return Err(NetConfigError::BadTapName(val.to_string()));
                    }
                    set_once(&mut tap, "tap", val.to_string())?
                }
                "fd" => {
                    let n = val
                        .parse::<RawFd>()
                        .ok()
                        .filter(|n| *n > 2)
                        .ok_or_else(|| NetConfigError::BadFd(val.to_string()))?;
                    set_once(&mut fd, "fd", n)?
                }
                "mac" => set_once(&mut mac, "mac", val.parse::<MacAddr>()?)?,
                "mtu" => {
                    let n = val
                        .parse::<u16>()
                        .ok()
                        .filter(|n| *n >= MIN_MTU)
                        .ok_or_else(|| NetConfigError::BadMtu(val.to_string()))?;
                    set_once(&mut mtu, "mtu", n)?
                }
                other => return Err(NetConfigError::UnknownKey(other.to_string())),
            }
        }
        let tap = match (tap, fd) {
            (Some(name), None) => TapSource::Name(name),
            (None, Some(fd)) => TapSource::Fd(fd),
            _ => return Err(NetConfigError::NoTap),
        };
        Ok(NetConfig { tap, mac, mtu })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tap_and_fd_forms() {
        let cfg: NetConfig = "tap=tap0,mac=02:00:00:aa:bb:cc,mtu=1400".parse().unwrap();
        assert_eq!(cfg.tap, TapSource::Name("tap0".into()));
        assert_eq!(cfg.mac, Some(MacAddr([2, 0, 0, 0xaa, 0xbb, 0xcc])));
        assert_eq!(cfg.mtu, Some(1400));
        assert_eq!(cfg.mac.unwrap().to_string(), "02:00:00:aa:bb:cc");
        let cfg: NetConfig = "fd=7".parse().unwrap();
        assert_eq!(
            cfg,
            NetConfig {
                tap: TapSource::Fd(7),
                mac: None,
                mtu: None
            }
        );
    }

    #[test]
    fn refuses_bad_values() {
        let cases: &[(&str, NetConfigError)] = &[
            ("mac=02:00:00:00:00:01", NetConfigError::NoTap),
            ("tap=a,fd=4", NetConfigError::NoTap),
            ("tap=", NetConfigError::BadTapName(String::new())),
            (
                "tap=0123456789abcdef",
                NetConfigError::BadTapName("0123456789abcdef".into()),
            ),
            ("tap=a/b", NetConfigError::BadTapName("a/b".into())),
            ("fd=2", NetConfigError::BadFd("2".into())),
            ("fd=x", NetConfigError::BadFd("x".into())),
            (
                "tap=t,mac=01:00:00:00:00:01",
                NetConfigError::BadMac("01:00:00:00:00:01".into()),
            ),
            (
                "tap=t,mac=00:00:00:00:00:00",
                NetConfigError::BadMac("00:00:00:00:00:00".into()),
            ),
            (
                "tap=t,mac=02:00:00:00:00",
                NetConfigError::BadMac("02:00:00:00:00".into()),
            ),
            (
                "tap=t,mac=02:00:00:00:00:01:02",
                NetConfigError::BadMac("02:00:00:00:00:01:02".into()),
            ),
            ("tap=t,mtu=67", NetConfigError::BadMtu("67".into())),
            ("tap=t,mtu=65536", NetConfigError::BadMtu("65536".into())),
            ("tap=t,tap=u", NetConfigError::DuplicateKey("tap")),
            ("tap=t,speed=1", NetConfigError::UnknownKey("speed".into())),
            ("tap=t,x", NetConfigError::NotKeyValue("x".into())),
        ];
        for (value, err) in cases {
            assert_eq!(value.parse::<NetConfig>().as_ref(), Err(err), "{value}");
        }
    }

    #[test]
    fn features_and_config_space_follow_the_config() {
        let bare: NetConfig = "tap=t".parse().unwrap();
        assert_eq!(bare.features(), BASE_FEATURES);
        assert_eq!(bare.config_space(), [0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0]);
        let full: NetConfig = "tap=t,mac=02:01:02:03:04:05,mtu=9000".parse().unwrap();
        assert_eq!(
            full.features(),
            BASE_FEATURES | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_MTU)
        );
        let mtu = 9000u16.to_le_bytes();
        assert_eq!(
            full.config_space(),
            [2, 1, 2, 3, 4, 5, 1, 0, 1, 0, mtu[0], mtu[1]]
        );
    }
}
