//! Opening /dev/kvm and checking that the host can run a Hull microVM.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Set when the host's KVM is PVM (pagetable-based virtual machine): it runs PVM-aware guests and tiny
/// guests, but ordinary Linux kernels go through KVM's instruction emulator and do not boot.
pub const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";

#[derive(Debug, thiserror::Error)]
pub enum KvmHostError {
    #[error("/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or run on a host with hardware virtualization)")]
    NoDevice,
    #[error(
        "cannot open /dev/kvm: permission denied (run as root or add the user to the kvm group)"
    )]
    PermissionDenied,
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM lacks a capability Hull needs: {0}")]
    MissingCap(&'static str),
}

/// Opens /dev/kvm and checks the API version and the capabilities the VMM relies on.
pub fn open_kvm() -> Result<Kvm, KvmHostError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(KvmHostError::NoDevice);
    }
    let kvm = Kvm::new().map_err(|e| {
        if e.errno() == libc::EACCES || e.errno() == libc::EPERM {
            KvmHostError::PermissionDenied
        } else {
            KvmHostError::Open(e)
        }
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmHostError::ApiVersion(version));
    }
    let required = [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::PitState2, "KVM_CAP_PIT_STATE2"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ];
    for (cap, name) in required {
        if !kvm.check_extension(cap) {
            return Err(KvmHostError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// True when /dev/kvm is provided by PVM.
pub fn is_pvm_host() -> bool {
    Path::new(PVM_MODULE_PATH).exists()
}

/// The warning printed on PVM hosts.
pub const PVM_WARNING: &str = "this host's KVM is PVM (/sys/module/kvm_pvm): ordinary guest kernels run \
through KVM's instruction emulator (~2000x slower) and die with an emulation failure before init; only \
PVM-aware or tiny hand-written guests run here. Use a host with normal KVM (kvm_intel/kvm_amd), or the \
nested lab (make lab-smoke)";
