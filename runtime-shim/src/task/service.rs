//! containerd's Task API: short handlers over [`HullTask`].

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use hull_proto::contract::{MAX_OCI_PROCESS_BYTES, MAX_OCI_RESOURCES_BYTES};
use ttrpc::Code;

use super::{create, lost_record, shim_pid, state_response, status_error, HullTask, Process};
use crate::cri::PodRole;
use crate::events::TaskEvent;
use crate::exit::{self, ExitRecord};
use crate::sandbox::cleanup::remove_container_dir;
use crate::stdio::StdioPaths;

/// How long RemoveContainer lets a still-running container stop after SIGTERM.
const REMOVE_STOP_TIMEOUT_MS: u32 = 1000;

#[async_trait]
impl Task for HullTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        if let Some(error) = &self.config_error {
            return Err(status_error(Code::FAILED_PRECONDITION, error.clone()));
        }
        let prepared = create::prepare(&req)?;
        let id = prepared.id.clone();
        let sandbox_init_pid = {
            let mut state = self.state.lock().await;
            if state.containers.contains_key(&id) || !state.creating.insert(id.clone()) {
                return Err(status_error(
                    Code::ALREADY_EXISTS,
                    format!("container {id} exists"),
                ));
            }
            state.sandbox_init_pid
        };
        let created = self
            .create_reserved(prepared, &req.bundle, sandbox_init_pid)
            .await;
        let stdio = {
            let mut state = self.state.lock().await;
            state.creating.remove(&id);
            created.map(|container| {
                let stdio = container.init.stdio.clone();
                state.containers.insert(id.clone(), container);
                stdio
            })
        };
        let stdio = match stdio {
            Ok(stdio) => stdio,
            Err(e) => {
                self.teardown_if_empty().await;
                return Err(e);
            }
        };
        crate::bench::stages::mark(crate::bench::stages::Stage::CreateContainer, &id);
        self.publish(TaskEvent::Create {
            container_id: id,
            bundle: req.bundle,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            pid: shim_pid(),
        });
        Ok(api::CreateTaskResponse {
            pid: shim_pid(),
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if process.state().status != Status::CREATED {
            return Err(status_error(
                Code::FAILED_PRECONDITION,
                "process already started",
            ));
        }
        let sandbox = self.sandbox().await?;
        let agent = sandbox.agent();
        let started = if req.exec_id.is_empty() {
            agent.start_container(&req.id).await
        } else {
            agent.start_exec(&req.id, &req.exec_id).await
        };
        let guest_pid = match started {
            Ok(pid) => pid,
            Err(err) => {
                // It will not run: a Wait already pending (containerd waits before it starts
                // an exec) returns 255 instead of hanging, and Delete finds it stopped.
                // containerd does not retry a Start, so refusals the agent would let pass
                // (late streams, a paused container) end the process here too.
                process.record_exit(ExitRecord {
                    status: exit::NOT_STARTED_EXIT_STATUS,
                    exited_at: exit::now(),
                });
                return Err(err.into());
            }
        };
        if req.exec_id.is_empty() {
            let mut state = self.state.lock().await;
            if state.containers.get(&req.id).map(|c| &c.role) == Some(&PodRole::Sandbox) {
                state.sandbox_init_pid = Some(guest_pid);
            }
        }
        process.set_status(Status::RUNNING);
        if req.exec_id.is_empty() {
            crate::bench::stages::mark(crate::bench::stages::Stage::StartContainer, &req.id);
        }
        self.spawn_waiter(sandbox, process.clone());
        let event = if req.exec_id.is_empty() {
            TaskEvent::Start {
                container_id: req.id.clone(),
                pid: shim_pid(),
            }
        } else {
            TaskEvent::ExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: shim_pid(),
            }
        };
        self.publish(event);
        Ok(api::StartResponse {
            pid: shim_pid(),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        if !hull_proto::valid_id(&req.exec_id) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad exec id {:?}", req.exec_id),
            ));
        }
        let process_json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if process_json.is_empty() || process_json.len() > MAX_OCI_PROCESS_BYTES {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                "exec process spec missing or larger than 256 KiB",
            ));
        }
        let sandbox = self.sandbox().await?;
        let key = (req.id.clone(), req.exec_id.clone());
        {
            let mut state = self.state.lock().await;
            let container = state.containers.get(&req.id).ok_or_else(|| {
                status_error(Code::NOT_FOUND, format!("container {} not found", req.id))
            })?;
            if container.execs.contains_key(&req.exec_id) || state.pending_execs.contains(&key) {
                return Err(status_error(
                    Code::ALREADY_EXISTS,
                    format!("exec {} exists", req.exec_id),
                ));
            }
            state.pending_execs.insert(key.clone());
        }
        let stdio_paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let prepared = async {
            let ports = sandbox
                .agent()
                .exec_process(&req.id, &req.exec_id, process_json, stdio_paths.request())
                .await?;
            Self::connect_stdio(&sandbox, &stdio_paths, &ports).await
        }
        .await;
        {
            let mut state = self.state.lock().await;
            state.pending_execs.remove(&key);
            let io = prepared?;
            let container = state.containers.get_mut(&req.id).ok_or_else(|| {
                status_error(Code::NOT_FOUND, format!("container {} was removed", req.id))
            })?;
            container.execs.insert(
                req.exec_id.clone(),
                Process::new(&req.id, &req.exec_id, stdio_paths, io),
            );
        }
        self.publish(TaskEvent::ExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
        });
        Ok(Empty::new())
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let bundle = self
            .state
            .lock()
            .await
            .containers
            .get(&req.id)
            .map(|c| c.bundle.clone())
            .unwrap_or_default();
        Ok(state_response(&req.id, &bundle, &process))
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        self.process(&req.id, "").await?;
        let pids = self
            .sandbox()
            .await?
            .agent()
            .list_processes(&req.id)
            .await?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if !(1..=64).contains(&req.signal) {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                format!("bad signal {}", req.signal),
            ));
        }
        if process.state().status == Status::STOPPED {
            return Err(status_error(Code::NOT_FOUND, "process already finished"));
        }
        let sandbox = self.sandbox().await?;
        sandbox
            .agent()
            .signal_process(&req.id, &req.exec_id, req.signal, req.all)
            .await?;
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let mut exited = process.exited.subscribe();
        exited
            .wait_for(|e| *e)
            .await
            .map_err(|_| status_error(Code::INTERNAL, "process state lost"))?;
        let record = process.state().exit.unwrap_or_else(lost_record);
        Ok(api::WaitResponse {
            exit_status: record.status,
            exited_at: Some(record.exited_at).into(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, "").await?;
        self.sandbox()
            .await?
            .agent()
            .pause_container(&req.id)
            .await?;
        process.set_status(Status::PAUSED);
        self.publish(TaskEvent::Paused {
            container_id: req.id,
        });
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, "").await?;
        self.sandbox()
            .await?
            .agent()
            .resume_container(&req.id)
            .await?;
        process.set_status(Status::RUNNING);
        self.publish(TaskEvent::Resumed {
            container_id: req.id,
        });
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        self.process(&req.id, "").await?;
        let stats = self
            .sandbox()
            .await?
            .agent()
            .stats_container(&req.id)
            .await?;
        let metrics = crate::convert::metrics_from_agent(&stats);
        let any = crate::convert::metrics_any(&metrics)
            .map_err(|e| status_error(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<Empty> {
        self.process(&req.id, "").await?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if resources.len() > MAX_OCI_RESOURCES_BYTES {
            return Err(status_error(
                Code::INVALID_ARGUMENT,
                "resources larger than 64 KiB",
            ));
        }
        let sandbox = self.sandbox().await?;
        sandbox.agent().update_container(&req.id, resources).await?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        self.process(&req.id, &req.exec_id).await?;
        let clamp = |v: u32| v.clamp(1, 65535);
        let sandbox = self.sandbox().await?;
        sandbox
            .agent()
            .tty_win_resize(&req.id, &req.exec_id, clamp(req.height), clamp(req.width))
            .await?;
        Ok(Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<Empty> {
        let process = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            process.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let process = self.process(&req.id, &req.exec_id).await?;
        let state = process.state();
        if matches!(state.status, Status::RUNNING | Status::PAUSED) {
            return Err(status_error(
                Code::FAILED_PRECONDITION,
                "cannot delete a running process",
            ));
        }
        let record = if req.exec_id.is_empty() {
            self.delete_container(&req.id, &process).await
        } else {
            self.delete_exec(&req.id, &req.exec_id).await;
            state.exit.unwrap_or_else(lost_record)
        };
        Ok(api::DeleteResponse {
            pid: shim_pid(),
            exit_status: record.status,
            exited_at: Some(record.exited_at).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: shim_pid(),
            task_pid: shim_pid(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> ttrpc::Result<Empty> {
        {
            let state = self.state.lock().await;
            if !state.containers.is_empty() || !state.creating.is_empty() {
                return Ok(Empty::new());
            }
        }
        self.teardown_if_empty().await;
        self.exit.signal();
        Ok(Empty::new())
    }
}

impl HullTask {
    /// Delete of an exec: the agent forgets it too (best effort: it also bounds what it keeps).
    async fn delete_exec(&self, id: &str, exec_id: &str) {
        if let Ok(sandbox) = self.sandbox().await {
            if let Err(e) = sandbox.agent().remove_process(id, exec_id).await {
                tracing::warn!(container = id, exec = exec_id, %e, "agent RemoveProcess");
            }
        }
        if let Some(c) = self.state.lock().await.containers.get_mut(id) {
            c.execs.remove(exec_id);
        }
    }

    /// Delete of a container: RemoveContainer in the agent, its mounts under the shared
    /// directory, the Delete event, and the sandbox if it was the last container.
    async fn delete_container(&self, id: &str, process: &Process) -> ExitRecord {
        if let Ok(sandbox) = self.sandbox().await {
            if !sandbox.is_dead() {
                if let Err(e) = sandbox
                    .agent()
                    .remove_container(id, REMOVE_STOP_TIMEOUT_MS)
                    .await
                {
                    tracing::warn!(container = id, %e, "agent RemoveContainer");
                }
            }
            match sandbox.shared_dir() {
                Ok(shared) => remove_container_dir(&shared, id),
                Err(e) => tracing::warn!(%e, "removing the container's mounts"),
            }
        }
        let record = process.state().exit.unwrap_or_else(|| {
            // Created but never started: it is gone now.
            let r = ExitRecord {
                status: exit::KILLED_EXIT_STATUS,
                exited_at: exit::now(),
            };
            process.record_exit(r.clone());
            r
        });
        self.state.lock().await.containers.remove(id);
        self.publish(TaskEvent::Delete {
            container_id: id.to_string(),
            pid: shim_pid(),
            exit: record.clone(),
        });
        self.teardown_if_empty().await;
        record
    }
}
