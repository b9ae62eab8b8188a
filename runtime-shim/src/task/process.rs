//! One process the shim tracks: a container's init or an exec, its state and its stdio.

use std::sync::{Arc, Mutex as StdMutex};

use containerd_shim_protos::api::Status;
use tokio::sync::watch;

use crate::exit::ExitRecord;
use crate::stdio::{ProcessIo, StdioPaths};

/// Status and exit of a process.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// CREATED, RUNNING, PAUSED or STOPPED.
    pub status: Status,
    /// Set once, when it exited.
    pub exit: Option<ExitRecord>,
}

/// One process (a container's init or an exec).
pub struct Process {
    /// Its container.
    pub container_id: String,
    /// Empty for the init.
    pub exec_id: String,
    /// containerd's stdio paths.
    pub stdio: StdioPaths,
    state: StdMutex<ProcessState>,
    /// Turns true when the exit is recorded.
    pub exited: watch::Sender<bool>,
    io: StdMutex<Option<ProcessIo>>,
}

impl Process {
    /// A created process with its wired stdio.
    pub fn new(
        container_id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        io: ProcessIo,
    ) -> Arc<Process> {
        Arc::new(Process {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            stdio,
            state: StdMutex::new(ProcessState {
                status: Status::CREATED,
                exit: None,
            }),
            exited: watch::channel(false).0,
            io: StdMutex::new(Some(io)),
        })
    }

    /// A copy of the state.
    pub fn state(&self) -> ProcessState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the status, unless the process already stopped.
    pub fn set_status(&self, status: Status) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.status != Status::STOPPED {
            state.status = status;
        }
    }

    /// Records the exit once; returns false if it was already recorded.
    pub fn record_exit(&self, record: ExitRecord) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.exit.is_some() {
            return false;
        }
        state.status = Status::STOPPED;
        state.exit = Some(record);
        drop(state);
        self.exited.send_replace(true);
        true
    }

    /// Closes the process's stdin (CloseIO).
    pub fn close_stdin(&self) {
        if let Some(io) = self.io.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            io.close_stdin();
        }
    }

    /// The output copiers, to await before the exit is reported.
    pub fn take_outputs(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.io
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(|io| io.take_outputs())
            .unwrap_or_default()
    }
}
