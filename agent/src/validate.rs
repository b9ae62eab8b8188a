//! Validation of every request the host sends, before the agent acts on it.
//!
//! Everything that arrives over the API is untrusted: each request type implements [`Validate`],
//! which checks identifiers, paths, sizes and value ranges and names the offending field.

use std::net::IpAddr;
use std::path::{Component, Path};

use hull_proto::agent::*;
use hull_proto::network::{Interface, IpAddress, IpFamily, Route};

pub use hull_proto::contract::{
    MAX_ID_LEN, MAX_OCI_PROCESS_BYTES, MAX_OCI_RESOURCES_BYTES, MAX_OCI_SPEC_BYTES,
};
/// Largest pod /dev/shm (tmpfs pages are only used when written).
pub const MAX_POD_SHM_BYTES: u64 = 64 << 30;
/// Longest path accepted anywhere.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest hostname (Linux HOST_NAME_MAX).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// Longest virtio-fs tag.
pub const MAX_FS_TAG_LEN: usize = 36;
/// Most sysctls per sandbox.
pub const MAX_SYSCTLS: usize = 64;
/// Longest sysctl key or value.
pub const MAX_SYSCTL_LEN: usize = 256;
/// Most DNS nameservers / search domains / options.
pub const MAX_NAMESERVERS: usize = 3;
/// Most DNS search domains.
pub const MAX_DNS_SEARCHES: usize = 6;
/// Most resolv.conf options.
pub const MAX_DNS_OPTIONS: usize = 16;
/// Longest DNS search domain or option.
pub const MAX_DNS_ENTRY_LEN: usize = 253;
/// Most addresses per interface.
pub const MAX_INTERFACE_ADDRESSES: usize = 16;
/// Most routes per UpdateRoutes.
pub const MAX_ROUTES: usize = 256;
/// Longest RemoveContainer stop timeout.
pub const MAX_STOP_TIMEOUT_MS: u32 = 600_000;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// A request field with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The field, e.g. "container_id" or "interface.addresses[2].address".
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// A request that can check itself.
pub trait Validate {
    /// Checks every field; the first bad one is returned.
    fn validate(&self) -> Result;
}

// ------------------------------------------------------------------ field checks

/// Checks a required sandbox/container/exec id: 1..=128 of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn check_id(field: &str, id: &str) -> Result {
    if id.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("{} bytes, at most {MAX_ID_LEN} allowed", id.len()),
        ));
    }
    if let Some(bad) = hull_proto::contract::invalid_id_char(id) {
        return Err(ValidationError::new(
            field,
            format!("character {bad:?} not allowed (only A-Z a-z 0-9 _ . -)"),
        ));
    }
    if id == "." || id == ".." {
        return Err(ValidationError::new(field, "must not be \".\" or \"..\""));
    }
    Ok(())
}

/// Checks an exec id that may be empty (empty = the init process).
pub fn check_optional_exec_id(field: &str, id: &str) -> Result {
    if id.is_empty() {
        Ok(())
    } else {
        check_id(field, id)
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{} bytes, at most {max} allowed", value.len()),
        ));
    }
    Ok(())
}

fn check_no_nul(field: &str, value: &str) -> Result {
    if value.contains('\0') {
        return Err(ValidationError::new(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Checks a path relative to a base directory that must not escape it: non-empty, not absolute,
/// no `..` component.
pub fn check_relative_path(field: &str, path: &str) -> Result {
    if path.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    check_len(field, path, MAX_PATH_LEN)?;
    check_no_nul(field, path)?;
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(ValidationError::new(
                    field,
                    "must be relative, not absolute",
                ));
            }
            Component::ParentDir => {
                return Err(ValidationError::new(field, "must not contain \"..\""));
            }
        }
    }
    Ok(())
}

/// Checks an absolute guest path without `..` components.
pub fn check_absolute_path(field: &str, path: &str) -> Result {
    check_len(field, path, MAX_PATH_LEN)?;
    check_no_nul(field, path)?;
    if !path.starts_with('/') {
        return Err(ValidationError::new(field, "must be an absolute path"));
    }
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(ValidationError::new(field, "must not contain \"..\""));
    }
    Ok(())
}

/// Checks a JSON object payload: non-empty, at most `max` bytes, starts with `{`.
pub fn check_json_object(field: &str, bytes: &[u8], max: usize) -> Result {
    if bytes.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{} bytes, at most {max} allowed", bytes.len()),
        ));
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(_) => Err(ValidationError::new(field, "is not a JSON object")),
        None => Err(ValidationError::new(field, "must not be empty")),
    }
}

/// Checks a hostname: 1..=64 bytes, dot-separated labels of `[A-Za-z0-9-]` not starting or
/// ending with `-`.
pub fn check_hostname(field: &str, hostname: &str) -> Result {
    if hostname.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    check_len(field, hostname, MAX_HOSTNAME_LEN)?;
    for label in hostname.split('.') {
        let valid = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(ValidationError::new(
                field,
                format!("label {label:?} is not an RFC 1123 label"),
            ));
        }
    }
    Ok(())
}

fn check_ip(field: &str, text: &str) -> Result<IpAddr> {
    text.parse::<IpAddr>()
        .map_err(|_| ValidationError::new(field, format!("{text:?} is not an IP address")))
}

/// Checks a Linux interface name: 1..=15 of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn check_interface_name(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    check_len(field, name, MAX_INTERFACE_NAME_LEN)?;
    check_id(field, name)
}

fn check_mac(field: &str, mac: &str) -> Result {
    let parts: Vec<&str> = mac.split(':').collect();
    let valid = mac.len() == 17
        && parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        return Err(ValidationError::new(
            field,
            format!("{mac:?} is not a MAC address like aa:bb:cc:dd:ee:ff"),
        ));
    }
    Ok(())
}

/// A MAC address to give an interface: [`check_mac`]'s form, and one the kernel accepts as a
/// link's own address (unicast, not all zeros; `is_valid_ether_addr`).
fn check_unicast_mac(field: &str, mac: &str) -> Result {
    check_mac(field, mac)?;
    // check_mac passed: 17 ASCII characters, hex pairs at 0, 3, ...
    let first = u8::from_str_radix(&mac[..2], 16).unwrap_or(0);
    if first & 1 != 0 {
        return Err(ValidationError::new(
            field,
            format!("{mac:?} is a multicast or broadcast address, not a unicast one"),
        ));
    }
    if mac.split(':').all(|p| p == "00") {
        return Err(ValidationError::new(
            field,
            format!("{mac:?} is all zeros, not a unicast address"),
        ));
    }
    Ok(())
}

fn check_family(field: &str, family: protobuf::EnumOrUnknown<IpFamily>) -> Result<IpFamily> {
    match family.enum_value() {
        Ok(IpFamily::IP_FAMILY_V4) => Ok(IpFamily::IP_FAMILY_V4),
        Ok(IpFamily::IP_FAMILY_V6) => Ok(IpFamily::IP_FAMILY_V6),
        Ok(IpFamily::IP_FAMILY_UNSPECIFIED) => Err(ValidationError::new(
            field,
            "must be IP_FAMILY_V4 or IP_FAMILY_V6",
        )),
        Err(n) => Err(ValidationError::new(field, format!("unknown value {n}"))),
    }
}

fn family_of(ip: IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::IP_FAMILY_V4,
        IpAddr::V6(_) => IpFamily::IP_FAMILY_V6,
    }
}

fn max_prefix(family: IpFamily) -> u32 {
    if family == IpFamily::IP_FAMILY_V4 {
        32
    } else {
        128
    }
}

fn check_stdio(field: &str, stdio: Option<&StdioRequest>) -> Result {
    if let Some(stdio) = stdio {
        if stdio.terminal && stdio.stderr {
            return Err(ValidationError::new(
                format!("{field}.stderr"),
                "must be false with terminal = true (stdout carries the terminal's output)",
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ requests

/// Requests with nothing to check.
macro_rules! nothing_to_validate {
    ($($request:ty),* $(,)?) => {
        $(impl Validate for $request {
            fn validate(&self) -> Result {
                Ok(())
            }
        })*
    };
}

nothing_to_validate!(
    HealthRequest,
    VersionRequest,
    GuestDetailsRequest,
    GetOOMEventRequest,
    ListInterfacesRequest,
    ListTcpListenersRequest,
    PowerOffRequest,
);

/// Requests whose only field is a container id.
macro_rules! container_id_only {
    ($($request:ty),* $(,)?) => {
        $(impl Validate for $request {
            fn validate(&self) -> Result {
                check_id("container_id", &self.container_id)
            }
        })*
    };
}

container_id_only!(
    StartContainerRequest,
    ListProcessesRequest,
    StatsContainerRequest,
    PauseContainerRequest,
    ResumeContainerRequest,
);

/// Requests naming a process: a container id and an optional exec id.
macro_rules! process_ids {
    ($($request:ty),* $(,)?) => {
        $(impl Validate for $request {
            fn validate(&self) -> Result {
                check_id("container_id", &self.container_id)?;
                check_optional_exec_id("exec_id", &self.exec_id)
            }
        })*
    };
}

process_ids!(WaitProcessRequest, CloseStdinRequest);

impl Validate for CreateSandboxRequest {
    fn validate(&self) -> Result {
        check_id("sandbox_id", &self.sandbox_id)?;
        check_hostname("hostname", &self.hostname)?;
        if let Some(shared) = self.shared_fs.as_ref() {
            if shared.tag.is_empty() {
                return Err(ValidationError::new("shared_fs.tag", "must not be empty"));
            }
            check_len("shared_fs.tag", &shared.tag, MAX_FS_TAG_LEN)?;
            if shared
                .tag
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ValidationError::new(
                    "shared_fs.tag",
                    "must not contain whitespace or control characters",
                ));
            }
            check_absolute_path("shared_fs.mount_point", &shared.mount_point)?;
        }
        if let Some(dns) = self.dns.as_ref() {
            check_dns(dns)?;
        }
        if self.sysctls.len() > MAX_SYSCTLS {
            return Err(ValidationError::new(
                "sysctls",
                format!(
                    "{} entries, at most {MAX_SYSCTLS} allowed",
                    self.sysctls.len()
                ),
            ));
        }
        for (key, value) in &self.sysctls {
            check_sysctl(key, value)?;
        }
        if self.shm_size_bytes > MAX_POD_SHM_BYTES {
            return Err(ValidationError::new(
                "shm_size_bytes",
                format!(
                    "{} bytes, at most {MAX_POD_SHM_BYTES} allowed",
                    self.shm_size_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn check_dns(dns: &Dns) -> Result {
    let lists = [
        ("dns.nameservers", &dns.nameservers, MAX_NAMESERVERS),
        ("dns.searches", &dns.searches, MAX_DNS_SEARCHES),
        ("dns.options", &dns.options, MAX_DNS_OPTIONS),
    ];
    for (field, list, max) in lists {
        if list.len() > max {
            return Err(ValidationError::new(
                field,
                format!("{} entries, at most {max} allowed", list.len()),
            ));
        }
    }
    for (i, server) in dns.nameservers.iter().enumerate() {
        check_ip(&format!("dns.nameservers[{i}]"), server)?;
    }
    for (field, list) in [
        ("dns.searches", &dns.searches),
        ("dns.options", &dns.options),
    ] {
        for (i, entry) in list.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if entry.is_empty() {
                return Err(ValidationError::new(field, "must not be empty"));
            }
            check_len(&field, entry, MAX_DNS_ENTRY_LEN)?;
            if !entry.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ValidationError::new(
                    field,
                    "only printable ASCII without spaces allowed",
                ));
            }
        }
    }
    Ok(())
}

/// Whether `key` is a sysctl name: dotted (or slashed) [a-z0-9_.-/], no `..`, not starting with
/// a dot, at most [`MAX_SYSCTL_LEN`] bytes.
pub fn is_sysctl_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_SYSCTL_LEN
        && !key.starts_with('.')
        && !key.contains("..")
        && key.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-' | '/')
        })
}

fn check_sysctl(key: &str, value: &str) -> Result {
    let field = format!("sysctls[{key:?}]");
    if !is_sysctl_name(key) {
        return Err(ValidationError::new(
            field,
            "key must be a dotted sysctl name of [a-z0-9_.-/]",
        ));
    }
    check_len(&field, value, MAX_SYSCTL_LEN)?;
    if value.chars().any(|c| c.is_control()) {
        return Err(ValidationError::new(
            field,
            "value contains control characters",
        ));
    }
    Ok(())
}

impl Validate for DestroySandboxRequest {
    fn validate(&self) -> Result {
        check_id("sandbox_id", &self.sandbox_id)
    }
}

impl Validate for CreateContainerRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_json_object("oci_spec_json", &self.oci_spec_json, MAX_OCI_SPEC_BYTES)?;
        check_relative_path("rootfs_path", &self.rootfs_path)?;
        check_stdio("stdio", self.stdio.as_ref())
    }
}

impl Validate for RemoveContainerRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        if self.stop_timeout_ms > MAX_STOP_TIMEOUT_MS {
            return Err(ValidationError::new(
                "stop_timeout_ms",
                format!(
                    "{} ms, at most {MAX_STOP_TIMEOUT_MS} allowed",
                    self.stop_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

impl Validate for RemoveProcessRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_id("exec_id", &self.exec_id)
    }
}

impl Validate for ExecProcessRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_id("exec_id", &self.exec_id)?;
        check_json_object(
            "oci_process_json",
            &self.oci_process_json,
            MAX_OCI_PROCESS_BYTES,
        )?;
        check_stdio("stdio", self.stdio.as_ref())
    }
}

impl Validate for StartExecRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_id("exec_id", &self.exec_id)
    }
}

impl Validate for SignalProcessRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_optional_exec_id("exec_id", &self.exec_id)?;
        if !(1..=64).contains(&self.signal) {
            return Err(ValidationError::new(
                "signal",
                format!("{} is not a signal number (1..=64)", self.signal),
            ));
        }
        Ok(())
    }
}

impl Validate for UpdateContainerRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_json_object(
            "oci_resources_json",
            &self.oci_resources_json,
            MAX_OCI_RESOURCES_BYTES,
        )
    }
}

impl Validate for TtyWinResizeRequest {
    fn validate(&self) -> Result {
        check_id("container_id", &self.container_id)?;
        check_optional_exec_id("exec_id", &self.exec_id)?;
        for (field, value) in [("rows", self.rows), ("columns", self.columns)] {
            if !(1..=u32::from(u16::MAX)).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("{value} is outside 1..=65535"),
                ));
            }
        }
        Ok(())
    }
}

impl Validate for UpdateInterfaceRequest {
    fn validate(&self) -> Result {
        match self.interface.as_ref() {
            Some(interface) => check_interface("interface", interface),
            None => Err(ValidationError::new("interface", "is required")),
        }
    }
}

fn check_interface(field: &str, interface: &Interface) -> Result {
    check_interface_name(&format!("{field}.name"), &interface.name)?;
    if !interface.hw_address.is_empty() {
        check_mac(&format!("{field}.hw_address"), &interface.hw_address)?;
    }
    if !interface.new_hw_address.is_empty() {
        check_unicast_mac(
            &format!("{field}.new_hw_address"),
            &interface.new_hw_address,
        )?;
    }
    if interface.mtu != 0 && !(68..=65535).contains(&interface.mtu) {
        return Err(ValidationError::new(
            format!("{field}.mtu"),
            format!("{} is outside 68..=65535 (0 = unchanged)", interface.mtu),
        ));
    }
    if interface.addresses.len() > MAX_INTERFACE_ADDRESSES {
        return Err(ValidationError::new(
            format!("{field}.addresses"),
            format!(
                "{} entries, at most {MAX_INTERFACE_ADDRESSES} allowed",
                interface.addresses.len()
            ),
        ));
    }
    for (i, address) in interface.addresses.iter().enumerate() {
        check_ip_address(&format!("{field}.addresses[{i}]"), address)?;
    }
    Ok(())
}

fn check_ip_address(field: &str, address: &IpAddress) -> Result {
    let family = check_family(&format!("{field}.family"), address.family)?;
    let ip = check_ip(&format!("{field}.address"), &address.address)?;
    if family_of(ip) != family {
        return Err(ValidationError::new(
            format!("{field}.family"),
            format!("does not match address {ip}"),
        ));
    }
    if address.prefix_length > max_prefix(family) {
        return Err(ValidationError::new(
            format!("{field}.prefix_length"),
            format!(
                "{} is more than {}",
                address.prefix_length,
                max_prefix(family)
            ),
        ));
    }
    Ok(())
}

impl Validate for UpdateRoutesRequest {
    fn validate(&self) -> Result {
        if self.routes.len() > MAX_ROUTES {
            return Err(ValidationError::new(
                "routes",
                format!(
                    "{} entries, at most {MAX_ROUTES} allowed",
                    self.routes.len()
                ),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            check_route(&format!("routes[{i}]"), route)?;
        }
        Ok(())
    }
}

fn check_route(field: &str, route: &Route) -> Result {
    let family = check_family(&format!("{field}.family"), route.family)?;
    let same_family = |name: &str, ip: IpAddr| {
        if family_of(ip) == family {
            Ok(())
        } else {
            Err(ValidationError::new(
                format!("{field}.{name}"),
                format!("{ip} is not of the route's family"),
            ))
        }
    };
    if route.destination != "default" {
        let dest_field = format!("{field}.destination");
        let (ip, prefix) = route.destination.split_once('/').ok_or_else(|| {
            ValidationError::new(&dest_field, "must be \"default\" or ADDRESS/PREFIX")
        })?;
        let ip = check_ip(&dest_field, ip)?;
        same_family("destination", ip)?;
        let prefix: u32 = prefix
            .parse()
            .map_err(|_| ValidationError::new(&dest_field, "prefix is not a number"))?;
        if prefix > max_prefix(family) {
            return Err(ValidationError::new(
                dest_field,
                format!("prefix {prefix} is more than {}", max_prefix(family)),
            ));
        }
    }
    if !route.gateway.is_empty() {
        same_family(
            "gateway",
            check_ip(&format!("{field}.gateway"), &route.gateway)?,
        )?;
    }
    if !route.source.is_empty() {
        same_family(
            "source",
            check_ip(&format!("{field}.source"), &route.source)?,
        )?;
    }
    if route.device.is_empty() {
        if route.gateway.is_empty() {
            return Err(ValidationError::new(
                format!("{field}.device"),
                "a route needs a device or a gateway",
            ));
        }
    } else {
        check_interface_name(&format!("{field}.device"), &route.device)?;
    }
    if route.scope > 255 {
        return Err(ValidationError::new(
            format!("{field}.scope"),
            format!("{} is outside 0..=255", route.scope),
        ));
    }
    Ok(())
}

impl Validate for SetGuestDateTimeRequest {
    fn validate(&self) -> Result {
        let time = self
            .time
            .as_ref()
            .ok_or_else(|| ValidationError::new("time", "is required"))?;
        if time.seconds < 0 {
            return Err(ValidationError::new("time.seconds", "must not be negative"));
        }
        if !(0..1_000_000_000).contains(&time.nanos) {
            return Err(ValidationError::new(
                "time.nanos",
                "must be in 0..1000000000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
