//! Task events published to containerd (topics and messages as runc's shim sends them).

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageDyn;

use crate::exit::ExitRecord;

/// One event about a task or one of its exec processes.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// The container was created.
    Create {
        /// Container id.
        container_id: String,
        /// Bundle path.
        bundle: String,
        /// Stdio paths and terminal.
        stdin: String,
        /// Stdout FIFO.
        stdout: String,
        /// Stderr FIFO.
        stderr: String,
        /// Terminal requested.
        terminal: bool,
        /// Pid reported.
        pid: u32,
    },
    /// The init process started.
    Start {
        /// Container id.
        container_id: String,
        /// Pid reported.
        pid: u32,
    },
    /// A process (init when `exec_id` is empty) exited.
    Exit {
        /// Container id.
        container_id: String,
        /// Exec id, empty for init.
        exec_id: String,
        /// Pid reported.
        pid: u32,
        /// Status and time.
        exit: ExitRecord,
    },
    /// The container was deleted.
    Delete {
        /// Container id.
        container_id: String,
        /// Pid reported.
        pid: u32,
        /// Status and time of the init process.
        exit: ExitRecord,
    },
    /// The container was OOM-killed.
    Oom {
        /// Container id.
        container_id: String,
    },
    /// An exec process was added.
    ExecAdded {
        /// Container id.
        container_id: String,
        /// Exec id.
        exec_id: String,
    },
    /// An exec process started.
    ExecStarted {
        /// Container id.
        container_id: String,
        /// Exec id.
        exec_id: String,
        /// Pid reported.
        pid: u32,
    },
    /// The container was paused.
    Paused {
        /// Container id.
        container_id: String,
    },
    /// The container was resumed.
    Resumed {
        /// Container id.
        container_id: String,
    },
}

impl TaskEvent {
    /// The containerd topic.
    pub fn topic(&self) -> &'static str {
        match self {
            TaskEvent::Create { .. } => "/tasks/create",
            TaskEvent::Start { .. } => "/tasks/start",
            TaskEvent::Exit { .. } => "/tasks/exit",
            TaskEvent::Delete { .. } => "/tasks/delete",
            TaskEvent::Oom { .. } => "/tasks/oom",
            TaskEvent::ExecAdded { .. } => "/tasks/exec-added",
            TaskEvent::ExecStarted { .. } => "/tasks/exec-started",
            TaskEvent::Paused { .. } => "/tasks/paused",
            TaskEvent::Resumed { .. } => "/tasks/resumed",
        }
    }

    /// The protobuf message containerd decodes for this topic.
    pub fn to_message(&self) -> Box<dyn MessageDyn> {
        match self.clone() {
            TaskEvent::Create {
                container_id,
                bundle,
                stdin,
                stdout,
                stderr,
                terminal,
                pid,
            } => Box::new(TaskCreate {
                container_id,
                bundle,
                io: Some(TaskIO {
                    stdin,
                    stdout,
                    stderr,
                    terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            }),
            TaskEvent::Start { container_id, pid } => Box::new(TaskStart {
                container_id,
                pid,
                ..Default::default()
            }),
            TaskEvent::Exit {
                container_id,
                exec_id,
                pid,
                exit,
            } => Box::new(TaskExit {
                // runc's shim: `id` is the exec id, or the container id for init.
                id: if exec_id.is_empty() {
                    container_id.clone()
                } else {
                    exec_id
                },
                container_id,
                pid,
                exit_status: exit.status,
                exited_at: Some(exit.exited_at).into(),
                ..Default::default()
            }),
            TaskEvent::Delete {
                container_id,
                pid,
                exit,
            } => Box::new(TaskDelete {
                id: container_id.clone(),
                container_id,
                pid,
                exit_status: exit.status,
                exited_at: Some(exit.exited_at).into(),
                ..Default::default()
            }),
            TaskEvent::Oom { container_id } => Box::new(TaskOOM {
                container_id,
                ..Default::default()
            }),
            TaskEvent::ExecAdded {
                container_id,
                exec_id,
            } => Box::new(TaskExecAdded {
                container_id,
                exec_id,
                ..Default::default()
            }),
            TaskEvent::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => Box::new(TaskExecStarted {
                container_id,
                exec_id,
                pid,
                ..Default::default()
            }),
            TaskEvent::Paused { container_id } => Box::new(TaskPaused {
                container_id,
                ..Default::default()
            }),
            TaskEvent::Resumed { container_id } => Box::new(TaskResumed {
                container_id,
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::well_known_types::timestamp::Timestamp;

    fn exit(status: u32) -> ExitRecord {
        ExitRecord {
            status,
            exited_at: Timestamp {
                seconds: 1_700_000_000,
                nanos: 42,
                ..Default::default()
            },
        }
    }

    #[test]
    fn init_exit_uses_container_id_as_id() {
        let event = TaskEvent::Exit {
            container_id: "c1".into(),
            exec_id: String::new(),
            pid: 7,
            exit: exit(3),
        };
        assert_eq!(event.topic(), "/tasks/exit");
        let msg = event.to_message();
        let msg = msg.downcast_ref::<TaskExit>().unwrap();
        assert_eq!(msg.id, "c1");
        assert_eq!(msg.container_id, "c1");
        assert_eq!(msg.pid, 7);
        assert_eq!(msg.exit_status, 3);
        assert_eq!(msg.exited_at.nanos, 42);
    }

    #[test]
    fn exec_exit_uses_exec_id_as_id() {
        let msg = TaskEvent::Exit {
            container_id: "c1".into(),
            exec_id: "e1".into(),
            pid: 8,
            exit: exit(137),
        }
        .to_message();
        let msg = msg.downcast_ref::<TaskExit>().unwrap();
        assert_eq!(msg.id, "e1");
        assert_eq!(msg.container_id, "c1");
        assert_eq!(msg.exit_status, 137);
    }

    #[test]
    fn create_carries_io_and_delete_carries_status() {
        let msg = TaskEvent::Create {
            container_id: "c1".into(),
            bundle: "/b".into(),
            stdin: "/i".into(),
            stdout: "/o".into(),
            stderr: "/e".into(),
            terminal: true,
            pid: 9,
        }
        .to_message();
        let msg = msg.downcast_ref::<TaskCreate>().unwrap();
        assert_eq!(msg.bundle, "/b");
        assert_eq!(msg.io.stdout, "/o");
        assert!(msg.io.terminal);
        let del = TaskEvent::Delete {
            container_id: "c1".into(),
            pid: 9,
            exit: exit(0),
        };
        assert_eq!(del.topic(), "/tasks/delete");
        let msg = del.to_message();
        let msg = msg.downcast_ref::<TaskDelete>().unwrap();
        assert_eq!((msg.id.as_str(), msg.exit_status), ("c1", 0));
    }

    #[test]
    fn every_topic_is_distinct_and_prefixed() {
        let c = || "c".to_string();
        let events = [
            TaskEvent::Start {
                container_id: c(),
                pid: 1,
            },
            TaskEvent::Oom { container_id: c() },
            TaskEvent::ExecAdded {
                container_id: c(),
                exec_id: c(),
            },
            TaskEvent::ExecStarted {
                container_id: c(),
                exec_id: c(),
                pid: 1,
            },
            TaskEvent::Paused { container_id: c() },
            TaskEvent::Resumed { container_id: c() },
        ];
        let topics: std::collections::BTreeSet<_> = events.iter().map(|e| e.topic()).collect();
        assert_eq!(topics.len(), events.len());
        assert!(topics.iter().all(|t| t.starts_with("/tasks/")));
        let msg = events[3].to_message();
        assert_eq!(msg.downcast_ref::<TaskExecStarted>().unwrap().exec_id, "c");
    }
}
