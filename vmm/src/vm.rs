//! The KVM virtual machine: memory slots, in-kernel irqchip and PIT, irqfds and ioeventfds.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("KVM_CREATE_VM failed: {0}")]
    Create(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed: {0}")]
    Tss(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_IDENTITY_MAP_ADDR failed: {0}")]
    IdentityMap(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP failed: {0}")]
    Irqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2 failed: {0}")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("cannot register guest memory slot {slot} at {addr:#x} ({size} bytes): {source}")]
    MemorySlot {
        slot: u32,
        addr: u64,
        size: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register irqfd for GSI {gsi}: {source}")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register ioeventfd at {addr:#x}: {source}")]
    Ioeventfd {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_CREATE_VCPU {index} failed: {source}")]
    CreateVcpu {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Creates the VM with an in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT, and maps guest memory.
pub fn create_vm(kvm: &Kvm, memory: &GuestMemory) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::Create)?;
    vm.set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(VmError::Tss)?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .map_err(VmError::IdentityMap)?;
    vm.create_irq_chip().map_err(VmError::Irqchip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    for (slot, region) in memory.iter().enumerate() {
        // SAFETY: the mapping behind the region is owned by `memory`, which outlives the VM (the
        // VMM keeps both until exit), and the regions do not overlap.
        unsafe {
            map_slot(
                &vm,
                slot as u32,
                region.start_addr().0,
                region.len(),
                region.as_ptr() as u64,
            )
        }?;
    }
    Ok(vm)
}

/// Maps `size` bytes of the VMM's memory at `host` into the guest at `addr` as memory slot
/// `slot`.
///
/// # Safety
/// The mapping at `host..host + size` must stay mapped as long as the VM runs, and must not
/// overlap another slot's guest range.
pub unsafe fn map_slot(
    vm: &VmFd,
    slot: u32,
    addr: u64,
    size: u64,
    host: u64,
) -> Result<(), VmError> {
    let mem_region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: addr,
        memory_size: size,
        userspace_addr: host,
    };
    // SAFETY: the caller keeps the mapping alive and the ranges apart.
    unsafe { vm.set_user_memory_region(mem_region) }.map_err(|source| VmError::MemorySlot {
        slot,
        addr,
        size,
        source,
    })
}

/// Routes `irqfd` to the in-kernel IOAPIC pin `gsi`.
pub fn register_irqfd(vm: &VmFd, irqfd: &EventFd, gsi: u32) -> Result<(), VmError> {
    vm.register_irqfd(irqfd, gsi)
        .map_err(|source| VmError::Irqfd { gsi, source })
}

/// Makes a 32-bit guest write of `datamatch` at MMIO `addr` signal `evt` inside KVM.
pub fn register_mmio_ioeventfd(
    vm: &VmFd,
    evt: &EventFd,
    addr: u64,
    datamatch: u32,
) -> Result<(), VmError> {
    vm.register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
        .map_err(|source| VmError::Ioeventfd { addr, source })
}
