use containerd_shim_protos::api::Status;

use super::*;

#[tokio::test]
async fn exit_is_recorded_once_and_wakes_waiters() {
    let io = stdio::wire(&StdioPaths::default(), None, None, None);
    let p = Process::new("c1", "", StdioPaths::default(), io);
    p.set_status(Status::RUNNING);
    let mut rx = p.exited.subscribe();
    let waiter = tokio::spawn(async move { rx.wait_for(|e| *e).await.is_ok() });
    let first = ExitRecord {
        status: 3,
        exited_at: exit::now(),
    };
    assert!(p.record_exit(first.clone()));
    assert!(!p.record_exit(lost_record()));
    assert!(waiter.await.unwrap());
    let s = p.state();
    assert_eq!(s.status, Status::STOPPED);
    assert_eq!(s.exit, Some(first));
    p.set_status(Status::RUNNING);
    assert_eq!(
        p.state().status,
        Status::STOPPED,
        "a stopped process stays stopped"
    );
    let resp = state_response("c1", "/b", &p);
    assert_eq!(resp.exit_status, 3);
    assert_eq!(resp.status.enum_value(), Ok(Status::STOPPED));
}
