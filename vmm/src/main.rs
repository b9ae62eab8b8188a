//! hull-vmm command line: parses flags into a `VmConfig` and runs the microVM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use hull_vmm::cmdline::DEFAULT_CMDLINE;
use hull_vmm::microvm::{self, SerialOutput, VmConfig, VsockConfig};
use hull_vmm::virtio::fs::FsConfig;
use hull_vmm::virtio::net::NetConfig;

/// Hull's microVM monitor: boots a Linux vmlinux (PVH or 64-bit boot protocol) on KVM with a serial
/// console, an i8042 reset line, a boot-time marker and virtio-mmio devices.
///
/// Exit status: 0 when the guest reboots or powers off (i8042 reset, `reboot=k`) or on SIGTERM/SIGINT;
/// 1 when the VM cannot be set up (bad kernel, no /dev/kvm, ...); 2 when a vCPU fails (triple fault,
/// KVM emulation failure; the error shows the exit reason and registers). A syscall outside a
/// thread's seccomp allowlist kills hull-vmm with SIGSYS: no exit code, the parent sees "killed by
/// signal 31" (a shell shows status 159); nothing is logged by hull-vmm itself (the kernel audit
/// log names the syscall).
#[derive(Parser, Debug)]
#[command(name = "hull-vmm", version, about, long_about)]
struct Args {
    /// Uncompressed kernel image (ELF vmlinux). A PVH entry note is used when present, else the
    /// 64-bit Linux boot protocol. bzImage is not supported.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,

    /// Initial ramdisk (cpio, optionally compressed as the kernel supports), loaded at the top of
    /// low memory.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Kernel command line. `virtio_mmio.device=` entries for the VMM's devices are appended to it.
    /// Keep `reboot=k` so a guest reboot/power-off ends the VMM with status 0.
    #[arg(long, value_name = "ARGS", default_value = DEFAULT_CMDLINE)]
    cmdline: String,

    /// Guest memory in MiB (backed by a shared memfd).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem_mib: u64,

    /// Number of vCPUs (1-32).
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u8,

    /// Write the guest serial console to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,

    /// Guest CID of the virtio-vsock device (>= 3). Requires --vsock-uds.
    #[arg(long, value_name = "CID", requires = "vsock_uds")]
    vsock_cid: Option<u64>,

    /// Unix socket of the hybrid vsock back-end: host clients connect here and send
    /// `CONNECT <port>\n`; guest connections to CID 2 port P go to `PATH_P`. Requires --vsock-cid.
    #[arg(long, value_name = "PATH", requires = "vsock_cid")]
    vsock_uds: Option<PathBuf>,

    /// A virtio-fs device served by a vhost-user daemon (virtiofsd), repeatable:
    /// `tag=NAME,socket=PATH[,queues=N][,queue_size=N]`. The guest mounts it with
    /// `mount -t virtiofs NAME /mnt`. Start virtiofsd on PATH first.
    #[arg(long, value_name = "SPEC")]
    fs: Vec<FsConfig>,

    /// A virtio-net device over a tap, repeatable: `tap=NAME[,mac=MAC][,mtu=N]` opens (or creates)
    /// the tap NAME through /dev/net/tun; `fd=N[,mac=MAC][,mtu=N]` uses an inherited tap fd opened
    /// with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR. MAC (aa:bb:cc:dd:ee:ff) and MTU are given to the guest;
    /// checksum/TSO offloads and mergeable rx buffers are negotiated with the guest driver.
    #[arg(long, value_name = "SPEC")]
    net: Vec<NetConfig>,

    /// A virtio-pmem device over FILE, a read-only guest image (its size a multiple of 2 MiB):
    /// mapped private above the guest's RAM, so reads share the host's page cache of FILE between
    /// VMs and guest writes never reach it. With a PFN info block in the image and fs-DAX in the
    /// guest, `root=/dev/pmem0 rootflags=dax ro` runs the guest's root from it.
    #[arg(long, value_name = "FILE")]
    pmem: Option<PathBuf>,

    /// Guest RAM as an unlinked file on the tmpfs directory DIR instead of a memfd: the page size
    /// the host gives it is then that mount's `huge=` option, not the host-wide `shmem_enabled`
    /// (a tmpfs mounted with `huge=always` gets 2 MiB pages where the host has them free: fewer
    /// nested page faults at boot). The mapping is not advised (`MADV_HUGEPAGE`), so a fault
    /// never waits for the host to compact memory.
    /// DIR must be on a tmpfs.
    #[arg(long, value_name = "DIR")]
    mem_dir: Option<PathBuf>,

    /// Add a virtio-balloon device for free page reporting: the guest driver (Linux
    /// CONFIG_VIRTIO_BALLOON) reports blocks of memory it freed and hull-vmm releases their host
    /// pages (a hole punched in the guest RAM memfd), so the VMM's memory shrinks to what the guest
    /// uses. The balloon is never inflated.
    #[arg(long)]
    free_page_reporting: bool,

    /// Per-thread seccomp filters (vmm thread, vCPU threads): `on` (default) or `off`. `off` is for
    /// debugging only and logs a warning at start.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    seccomp: bool,

    /// When the VM ends, log the guest's exit counts on stderr: the exits hull-vmm handled, by
    /// reason and busiest port/address, and KVM's own per-vCPU and per-VM counters (all exits,
    /// page faults, halts, pages_4k/pages_2m...). Also done with --log-level debug.
    #[arg(long)]
    exit_stats: bool,

    /// Log filter for the VMM's own logs on stderr (error, warn, info, debug, trace, or a
    /// tracing-subscriber directive).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn main() -> ExitCode {
    let vmm_start = Instant::now();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        serial: args
            .serial_log
            .map_or(SerialOutput::Stdout, SerialOutput::File),
        vsock: args
            .vsock_cid
            .zip(args.vsock_uds)
            .map(|(guest_cid, uds_path)| VsockConfig {
                guest_cid,
                uds_path,
            }),
        fs: args.fs,
        net: args.net,
        pmem: args.pmem,
        mem_dir: args.mem_dir,
        free_page_reporting: args.free_page_reporting,
        seccomp: args.seccomp,
        exit_stats: args.exit_stats,
    };
    match microvm::run(&config, vmm_start) {
        Ok(exit) => {
            tracing::info!("VM ended: {exit:?}");
            ExitCode::from(exit.exit_code() as u8)
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("hull-vmm: error: {e}");
            ExitCode::from(1)
        }
    }
}
