//! Configuration of the virtio-fs device: the `--fs` CLI value and the device config space.
//!
//! CLI value: `tag=hullfs,socket=/path[,queues=N][,queue_size=N]`.
//!
//! Config space (virtio 1.2, 5.11.4): `tag` (36 bytes, UTF-8, NUL padded when shorter) followed by
//! `num_request_queues` (u32, little-endian).

use std::path::PathBuf;
use std::str::FromStr;

/// Size of the `tag` field of the config space.
pub const TAG_LEN: usize = 36;

/// Size of the whole config space: tag + num_request_queues.
pub const CONFIG_SPACE_LEN: usize = TAG_LEN + 4;

/// Request queues when `queues=` is not given.
pub const DEFAULT_REQUEST_QUEUES: u16 = 1;

/// Queue size when `queue_size=` is not given.
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;

/// Largest queue size virtio allows for a split queue.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Most request queues we accept: the hiprio queue plus these must fit the vhost-user limit of
/// 256 vrings per device, and virtiofsd serves far fewer anyway.
pub const MAX_REQUEST_QUEUES: u16 = 255;

/// The virtio-fs device settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag the guest uses (`mount -t virtiofs TAG /mnt`); 1 to 36 bytes.
    pub tag: String,
    /// The vhost-user socket virtiofsd listens on.
    pub socket: PathBuf,
    /// Number of request queues (the hiprio queue comes on top); 1 to [`MAX_REQUEST_QUEUES`].
    pub num_request_queues: u16,
    /// Maximum size of every queue: a power of two up to [`MAX_QUEUE_SIZE`].
    pub queue_size: u16,
}

/// What is wrong with an `--fs` value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsConfigError {
    #[error("--fs: `tag=` is missing (expected tag=NAME,socket=PATH[,queues=N][,queue_size=N])")]
    MissingTag,
    #[error(
        "--fs: `socket=` is missing (expected tag=NAME,socket=PATH[,queues=N][,queue_size=N])"
    )]
    MissingSocket,
    #[error("--fs: the tag is empty")]
    EmptyTag,
    #[error("--fs: the tag {tag:?} is {len} bytes long; at most {TAG_LEN} bytes fit")]
    TagTooLong { tag: String, len: usize },
    #[error("--fs: the tag {0:?} contains a NUL byte")]
    TagHasNul(String),
    #[error("--fs: the socket path is empty")]
    EmptySocket,
    #[error("--fs: unknown key {0:?} (known: tag, socket, queues, queue_size)")]
    UnknownKey(String),
    #[error("--fs: {0:?} is not of the form key=value")]
    NotKeyValue(String),
    #[error("--fs: `{0}=` is given twice")]
    DuplicateKey(&'static str),
    #[error("--fs: {key}={value:?} is not a number")]
    BadNumber { key: &'static str, value: String },
    #[error("--fs: queues={0} is out of range (1 to {MAX_REQUEST_QUEUES})")]
    BadQueueCount(u32),
    #[error("--fs: queue_size={0} must be a power of two from 1 to {MAX_QUEUE_SIZE}")]
    BadQueueSize(u32),
}

impl FsConfig {
    /// A config with the default queue count and size.
    pub fn new(tag: impl Into<String>, socket: impl Into<PathBuf>) -> Result<Self, FsConfigError> {
        let cfg = Self {
            tag: tag.into(),
            socket: socket.into(),
            num_request_queues: DEFAULT_REQUEST_QUEUES,
            queue_size: DEFAULT_QUEUE_SIZE,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field against the limits documented on [`FsConfig`].
    pub fn validate(&self) -> Result<(), FsConfigError> {
        if self.tag.is_empty() {
            return Err(FsConfigError::EmptyTag);
        }
        if self.tag.len() > TAG_LEN {
            return Err(FsConfigError::TagTooLong {
                tag: self.tag.clone(),
                len: self.tag.len(),
            });
        }
        if self.tag.contains('\0') {
            return Err(FsConfigError::TagHasNul(self.tag.clone()));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(FsConfigError::EmptySocket);
        }
        if self.num_request_queues == 0 || self.num_request_queues > MAX_REQUEST_QUEUES {
            return Err(FsConfigError::BadQueueCount(u32::from(
                self.num_request_queues,
            )));
        }
        if !self.queue_size.is_power_of_two() || self.queue_size > MAX_QUEUE_SIZE {
            return Err(FsConfigError::BadQueueSize(u32::from(self.queue_size)));
        }
        Ok(())
    }

    /// Total number of virtqueues: the hiprio queue plus the request queues.
    pub fn num_queues(&self) -> usize {
        1 + usize::from(self.num_request_queues)
    }

    /// The device config space bytes: tag NUL-padded to 36 bytes, then num_request_queues (LE).
    pub fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        let tag = self.tag.as_bytes();
        let tag_len = tag.len().min(TAG_LEN);
        space[..tag_len].copy_from_slice(&tag[..tag_len]);
        space[TAG_LEN..].copy_from_slice(&u32::from(self.num_request_queues).to_le_bytes());
        space
    }
}

/// Parses a number option; the range is checked by [`FsConfig::validate`].
fn parse_number(key: &'static str, value: &str) -> Result<u32, FsConfigError> {
    value.parse::<u32>().map_err(|_| FsConfigError::BadNumber {
        key,
        value: value.to_string(),
    })
}

/// Stores `value` in `slot` unless the key was given before.
fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), FsConfigError> {
    if slot.is_some() {
        return Err(FsConfigError::DuplicateKey(key));
    }
    *slot = Some(value);
    Ok(())
}

impl FromStr for FsConfig {
    type Err = FsConfigError;

    /// Parses `tag=NAME,socket=PATH[,queues=N][,queue_size=N]` (keys in any order, each once).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut tag = None;
        let mut socket = None;
        let mut queues = None;
        let mut queue_size = None;
        for item in value.split(',') {
            let (key, val) = item
                .split_once('=')
                .ok_or_else(|| FsConfigError::NotKeyValue(item.to_string()))?;
            match key {
                "tag" => set_once(&mut tag, "tag", val.to_string())?,
                "socket" => set_once(&mut socket, "socket", PathBuf::from(val))?,
                "queues" => set_once(&mut queues, "queues", parse_number("queues", val)?)?,
                "queue_size" => set_once(
                    &mut queue_size,
                    "queue_size",
                    parse_number("queue_size", val)?,
                )?,
                other => return Err(FsConfigError::UnknownKey(other.to_string())),
            }
        }
        let queues = queues.unwrap_or(u32::from(DEFAULT_REQUEST_QUEUES));
        let queue_size = queue_size.unwrap_or(u32::from(DEFAULT_QUEUE_SIZE));
        let cfg = FsConfig {
            tag: tag.ok_or(FsConfigError::MissingTag)?,
            socket: socket.ok_or(FsConfigError::MissingSocket)?,
            num_request_queues: u16::try_from(queues)
                .map_err(|_| FsConfigError::BadQueueCount(queues))?,
            queue_size: u16::try_from(queue_size)
                .map_err(|_| FsConfigError::BadQueueSize(queue_size))?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_value_with_defaults() {
        let cfg: FsConfig = "tag=hullfs,socket=/run/hull/fs.sock".parse().unwrap();
        assert_eq!(cfg.tag, "hullfs");
        assert_eq!(cfg.socket, PathBuf::from("/run/hull/fs.sock"));
        assert_eq!(cfg.num_request_queues, 1);
        assert_eq!(cfg.queue_size, 1024);
        assert_eq!(cfg.num_queues(), 2);
    }

    #[test]
    fn parses_all_keys_in_any_order() {
        let cfg: FsConfig = "queue_size=256,socket=/s,queues=3,tag=t".parse().unwrap();
        assert_eq!(
            cfg,
            FsConfig {
                tag: "t".into(),
                socket: "/s".into(),
                num_request_queues: 3,
                queue_size: 256
            }
        );
        assert_eq!(cfg.num_queues(), 4);
    }

    #[test]
    fn missing_keys_are_named() {
        assert_eq!(
            "socket=/s".parse::<FsConfig>(),
            Err(FsConfigError::MissingTag)
        );
        assert_eq!(
            "tag=t".parse::<FsConfig>(),
            Err(FsConfigError::MissingSocket)
        );
        assert_eq!(
            "tag=t,socket=".parse::<FsConfig>(),
            Err(FsConfigError::EmptySocket)
        );
    }

    #[test]
    fn tag_must_be_1_to_36_bytes() {
        assert_eq!(
            "tag=,socket=/s".parse::<FsConfig>(),
            Err(FsConfigError::EmptyTag)
        );
        let longest = "a".repeat(36);
        let cfg: FsConfig = format!("tag={longest},socket=/s").parse().unwrap();
        assert_eq!(cfg.tag, longest);
        let too_long = "a".repeat(37);
        assert_eq!(
            format!("tag={too_long},socket=/s").parse::<FsConfig>(),
            Err(FsConfigError::TagTooLong {
                tag: too_long,
                len: 37
            })
        );
        // The limit is in bytes, not characters: 13 three-byte characters are 39 bytes.
        let wide = "€".repeat(13);
        assert!(matches!(
            format!("tag={wide},socket=/s").parse::<FsConfig>(),
            Err(FsConfigError::TagTooLong { len: 39, .. })
        ));
        assert!(matches!(
            "tag=a\0b,socket=/s".parse::<FsConfig>(),
            Err(FsConfigError::TagHasNul(_))
        ));
    }

    #[test]
    fn unknown_duplicate_and_malformed_items_are_rejected() {
        assert_eq!(
            "tag=t,socket=/s,cache=always".parse::<FsConfig>(),
            Err(FsConfigError::UnknownKey("cache".into()))
        );
        assert_eq!(
            "tag=t,tag=u,socket=/s".parse::<FsConfig>(),
            Err(FsConfigError::DuplicateKey("tag"))
        );
        assert_eq!(
            "tag=t,socket=/s,queues".parse::<FsConfig>(),
            Err(FsConfigError::NotKeyValue("queues".into()))
        );
        assert_eq!(
            "".parse::<FsConfig>(),
            Err(FsConfigError::NotKeyValue(String::new()))
        );
    }

    #[test]
    fn numbers_are_checked() {
        assert_eq!(
            "tag=t,socket=/s,queues=two".parse::<FsConfig>(),
            Err(FsConfigError::BadNumber {
                key: "queues",
                value: "two".into()
            })
        );
        assert_eq!(
            "tag=t,socket=/s,queue_size=-1".parse::<FsConfig>(),
            Err(FsConfigError::BadNumber {
                key: "queue_size",
                value: "-1".into()
            })
        );
        assert_eq!(
            "tag=t,socket=/s,queues=0".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueCount(0))
        );
        assert_eq!(
            "tag=t,socket=/s,queues=256".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueCount(256))
        );
        assert_eq!(
            "tag=t,socket=/s,queues=70000".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueCount(70000))
        );
        assert_eq!(
            "tag=t,socket=/s,queue_size=1000".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueSize(1000))
        );
        assert_eq!(
            "tag=t,socket=/s,queue_size=65536".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueSize(65536))
        );
        assert_eq!(
            "tag=t,socket=/s,queue_size=0".parse::<FsConfig>(),
            Err(FsConfigError::BadQueueSize(0))
        );
        let cfg: FsConfig = "tag=t,socket=/s,queue_size=32768".parse().unwrap();
        assert_eq!(cfg.queue_size, 32768);
    }

    #[test]
    fn config_space_layout() {
        let cfg: FsConfig = "tag=hullfs,socket=/s,queues=2".parse().unwrap();
        let space = cfg.config_space();
        assert_eq!(space.len(), 40);
        assert_eq!(&space[..6], b"hullfs");
        assert!(space[6..36].iter().all(|&b| b == 0), "tag is NUL padded");
        assert_eq!(&space[36..40], &[2, 0, 0, 0]);

        // A 36-byte tag fills the field with no NUL terminator.
        let full = FsConfig::new("x".repeat(36), "/s").unwrap();
        let space = full.config_space();
        assert!(space[..36].iter().all(|&b| b == b'x'));
        assert_eq!(&space[36..], &[1, 0, 0, 0]);
    }
}
