//! Unit tests of the RPC handlers.

use super::*;

#[test]
fn implemented_rpcs_exist_in_the_api() {
    let declared = hull_proto::agent_service_rpc_names();
    for rpc in IMPLEMENTED_RPCS {
        assert!(
            declared.iter().any(|d| d == rpc),
            "{rpc} not in {declared:?}"
        );
    }
}

#[test]
fn not_yet_validates_first() {
    let bad = StartContainerRequest {
        container_id: "../x".into(),
        ..Default::default()
    };
    match not_yet::<()>("StartContainer", &bad) {
        Err(TtrpcError::RpcStatus(s)) => {
            assert_eq!(s.code(), Code::INVALID_ARGUMENT);
            assert!(s.message.contains("StartContainer"), "{}", s.message);
            assert!(s.message.contains("container_id"), "{}", s.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    let good = StartContainerRequest {
        container_id: "c1".into(),
        ..Default::default()
    };
    match not_yet::<()>("StartContainer", &good) {
        Err(TtrpcError::RpcStatus(s)) => {
            assert_eq!(s.code(), Code::UNIMPLEMENTED);
            assert!(s.message.contains("StartContainer"), "{}", s.message);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn context() -> TtrpcContext {
    TtrpcContext {
        mh: ttrpc::MessageHeader::default(),
        metadata: Default::default(),
        timeout_nano: 0,
        connection_data: Default::default(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn power_off_is_signalled_and_health_reports_it() {
    let (api, requested) = AgentApi::new();
    let serving = api.health(&context(), HealthRequest::new()).await.unwrap();
    assert_eq!(
        serving.status.enum_value(),
        Ok(health_response::ServingStatus::SERVING_STATUS_SERVING)
    );
    assert!(!*requested.borrow());

    api.power_off(&context(), PowerOffRequest::new())
        .await
        .unwrap();
    assert!(*requested.borrow());
    let after = api.health(&context(), HealthRequest::new()).await.unwrap();
    assert_eq!(
        after.status.enum_value(),
        Ok(health_response::ServingStatus::SERVING_STATUS_NOT_SERVING)
    );
}
