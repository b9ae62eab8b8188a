use super::*;
use hull_proto::network::{Interface, IpAddress, IpFamily, Route};

fn field_of(result: Result) -> String {
    result.expect_err("expected a validation error").field
}

#[test]
fn good_ids_pass() {
    for id in [
        "a",
        "c1",
        "abc_DEF-1.2",
        &"x".repeat(MAX_ID_LEN),
        "..a",
        "a..b",
    ] {
        assert_eq!(check_id("id", id), Ok(()), "{id}");
    }
}

#[test]
fn bad_ids_fail_with_a_reason() {
    let too_long = "x".repeat(MAX_ID_LEN + 1);
    for id in [
        "", ".", "..", "../etc", "a/b", "a b", "a\0b", "é", "a\n", &too_long,
    ] {
        let err = check_id("container_id", id).unwrap_err();
        assert_eq!(err.field, "container_id", "{id:?}");
        assert!(!err.reason.is_empty());
    }
    assert!(check_id("id", "a/b").unwrap_err().reason.contains("'/'"));
}

#[test]
fn optional_exec_id_allows_empty_only() {
    assert_eq!(check_optional_exec_id("exec_id", ""), Ok(()));
    assert_eq!(check_optional_exec_id("exec_id", "e1"), Ok(()));
    assert!(check_optional_exec_id("exec_id", "..").is_err());
}

#[test]
fn relative_paths_must_stay_inside() {
    for good in ["c1/rootfs", "rootfs", "./c1/rootfs", "a/b/c", "a..b/c"] {
        assert_eq!(check_relative_path("rootfs_path", good), Ok(()), "{good}");
    }
    for bad in ["", "/c1/rootfs", "../x", "c1/../../x", "c1/..", "a\0b"] {
        assert!(check_relative_path("rootfs_path", bad).is_err(), "{bad:?}");
    }
    let long = "a/".repeat(MAX_PATH_LEN);
    assert!(check_relative_path("rootfs_path", &long).is_err());
}

#[test]
fn absolute_paths() {
    assert_eq!(check_absolute_path("p", "/run/hull/shared"), Ok(()));
    assert!(check_absolute_path("p", "run/hull").is_err());
    assert!(check_absolute_path("p", "/run/../etc").is_err());
    assert!(check_absolute_path("p", "").is_err());
}

#[test]
fn json_objects() {
    assert_eq!(check_json_object("j", b" \n{\"a\":1}", 100), Ok(()));
    assert!(check_json_object("j", b"", 100).is_err());
    assert!(check_json_object("j", b"   ", 100).is_err());
    assert!(check_json_object("j", b"[1]", 100).is_err());
    assert!(check_json_object("j", &[b'{'; 101], 100).is_err());
}

#[test]
fn hostnames() {
    for good in ["pod", "my-pod.example", "a1", &"a".repeat(63)] {
        assert_eq!(check_hostname("hostname", good), Ok(()), "{good}");
    }
    for bad in ["", "-a", "a-", "a..b", "a_b", "a b", &"a".repeat(65)] {
        assert!(check_hostname("hostname", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn create_container_checks_every_field() {
    let good = CreateContainerRequest {
        container_id: "c1".into(),
        oci_spec_json: b"{}".to_vec(),
        rootfs_path: "c1/rootfs".into(),
        stdio: protobuf::MessageField::some(StdioRequest {
            stdout: true,
            terminal: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(good.validate(), Ok(()));

    let mut bad = good.clone();
    bad.container_id = "c/1".into();
    assert_eq!(field_of(bad.validate()), "container_id");

    let mut bad = good.clone();
    bad.rootfs_path = "../../etc".into();
    assert_eq!(field_of(bad.validate()), "rootfs_path");

    let mut bad = good.clone();
    bad.oci_spec_json = vec![b' '; 10];
    assert_eq!(field_of(bad.validate()), "oci_spec_json");

    let mut bad = good.clone();
    bad.oci_spec_json = vec![b'{'; MAX_OCI_SPEC_BYTES + 1];
    assert_eq!(field_of(bad.validate()), "oci_spec_json");

    let mut bad = good;
    bad.stdio.as_mut().unwrap().stderr = true;
    assert_eq!(field_of(bad.validate()), "stdio.stderr");
}

#[test]
fn exec_needs_an_exec_id() {
    let req = ExecProcessRequest {
        container_id: "c1".into(),
        exec_id: String::new(),
        oci_process_json: b"{}".to_vec(),
        ..Default::default()
    };
    assert_eq!(field_of(req.validate()), "exec_id");
}

#[test]
fn signals_are_in_range() {
    let mut req = SignalProcessRequest {
        container_id: "c1".into(),
        signal: 9,
        ..Default::default()
    };
    assert_eq!(req.validate(), Ok(()));
    for bad in [0, 65, u32::MAX] {
        req.signal = bad;
        assert_eq!(field_of(req.validate()), "signal");
    }
}

#[test]
fn tty_size_and_stop_timeout_ranges() {
    let mut resize = TtyWinResizeRequest {
        container_id: "c1".into(),
        rows: 24,
        columns: 80,
        ..Default::default()
    };
    assert_eq!(resize.validate(), Ok(()));
    resize.columns = 0;
    assert_eq!(field_of(resize.validate()), "columns");
    resize.columns = 70_000;
    assert_eq!(field_of(resize.validate()), "columns");

    let remove = RemoveContainerRequest {
        container_id: "c1".into(),
        stop_timeout_ms: MAX_STOP_TIMEOUT_MS + 1,
        ..Default::default()
    };
    assert_eq!(field_of(remove.validate()), "stop_timeout_ms");
}

fn sandbox() -> CreateSandboxRequest {
    let mut req = CreateSandboxRequest {
        sandbox_id: "pod1".into(),
        hostname: "pod1".into(),
        shared_fs: protobuf::MessageField::some(SharedFs {
            tag: "hullfs".into(),
            mount_point: "/run/hull/shared".into(),
            ..Default::default()
        }),
        dns: protobuf::MessageField::some(Dns {
            nameservers: vec!["10.0.0.10".into(), "fd00::a".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    req.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    req
}

#[test]
fn sandbox_fields() {
    assert_eq!(sandbox().validate(), Ok(()));

    let mut bad = sandbox();
    bad.shared_fs.as_mut().unwrap().mount_point = "relative".into();
    assert_eq!(field_of(bad.validate()), "shared_fs.mount_point");

    let mut bad = sandbox();
    bad.shared_fs.as_mut().unwrap().tag = "a b".into();
    assert_eq!(field_of(bad.validate()), "shared_fs.tag");

    let mut bad = sandbox();
    bad.dns
        .as_mut()
        .unwrap()
        .nameservers
        .push("not-an-ip".into());
    assert_eq!(field_of(bad.validate()), "dns.nameservers[2]");

    let mut bad = sandbox();
    bad.dns.as_mut().unwrap().nameservers = vec!["1.1.1.1".into(); 4];
    assert_eq!(field_of(bad.validate()), "dns.nameservers");

    let mut bad = sandbox();
    bad.sysctls.insert("../../proc/x".into(), "1".into());
    assert!(field_of(bad.validate()).starts_with("sysctls["));

    let mut bad = sandbox();
    bad.sysctls.insert("kernel.x".into(), "1\n2".into());
    assert!(field_of(bad.validate()).starts_with("sysctls["));

    let mut bad = sandbox();
    for i in 0..=MAX_SYSCTLS {
        bad.sysctls.insert(format!("net.k{i}"), "1".into());
    }
    assert_eq!(field_of(bad.validate()), "sysctls");
}

fn interface() -> Interface {
    Interface {
        name: "eth0".into(),
        hw_address: "02:00:0a:58:00:05".into(),
        mtu: 1500,
        addresses: vec![IpAddress {
            family: IpFamily::IP_FAMILY_V4.into(),
            address: "10.88.0.5".into(),
            prefix_length: 16,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn interface_fields() {
    let request = |interface: Interface| UpdateInterfaceRequest {
        interface: protobuf::MessageField::some(interface),
        ..Default::default()
    };
    assert_eq!(request(interface()).validate(), Ok(()));
    assert_eq!(
        field_of(UpdateInterfaceRequest::default().validate()),
        "interface"
    );

    let mut bad = interface();
    bad.name = "a-very-long-interface-name".into();
    assert_eq!(field_of(request(bad).validate()), "interface.name");

    let mut bad = interface();
    bad.hw_address = "02:00:0a:58:00".into();
    assert_eq!(field_of(request(bad).validate()), "interface.hw_address");

    let mut bad = interface();
    bad.mtu = 20;
    assert_eq!(field_of(request(bad).validate()), "interface.mtu");

    let mut bad = interface();
    bad.addresses[0].family = IpFamily::IP_FAMILY_V6.into();
    assert_eq!(
        field_of(request(bad).validate()),
        "interface.addresses[0].family"
    );

    let mut bad = interface();
    bad.addresses[0].family = protobuf::EnumOrUnknown::from_i32(7);
    assert_eq!(
        field_of(request(bad).validate()),
        "interface.addresses[0].family"
    );

    let mut bad = interface();
    bad.addresses[0].prefix_length = 33;
    assert_eq!(
        field_of(request(bad).validate()),
        "interface.addresses[0].prefix_length"
    );
}

#[test]
fn interface_new_hw_address() {
    let request = |new_hw_address: &str| UpdateInterfaceRequest {
        interface: protobuf::MessageField::some(Interface {
            new_hw_address: new_hw_address.into(),
            ..interface()
        }),
        ..Default::default()
    };
    // Empty leaves the MAC; either case of a unicast address is fine.
    for good in [
        "",
        "02:00:0a:58:00:09",
        "AA:BB:CC:DD:EE:FE",
        "00:16:3e:00:00:01",
    ] {
        assert_eq!(request(good).validate(), Ok(()), "{good:?}");
    }
    for bad in [
        "02:00:0a:58:00",
        "02:00:0a:58:00:09:01",
        "02-00-0a-58-00-09",
        "02:00:0a:58:0:009",
        "02:00:0a:58:00:zz",
        "0200.0a58.0009",
        " 02:00:0a:58:00:09",
        "not a mac",
    ] {
        let err = request(bad).validate().unwrap_err();
        assert_eq!(err.field, "interface.new_hw_address", "{bad:?}");
        assert!(err.reason.contains("not a MAC address"), "{bad:?}: {err:?}");
    }
    for (bad, why) in [
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("01:00:5e:00:00:01", "multicast"),
        ("33:33:00:00:00:01", "multicast"),
        ("00:00:00:00:00:00", "all zeros"),
    ] {
        let err = request(bad).validate().unwrap_err();
        assert_eq!(err.field, "interface.new_hw_address", "{bad:?}");
        assert!(err.reason.contains(why), "{bad:?}: {err:?}");
    }
}

fn route(destination: &str, gateway: &str, device: &str) -> Route {
    Route {
        destination: destination.into(),
        gateway: gateway.into(),
        device: device.into(),
        family: IpFamily::IP_FAMILY_V4.into(),
        ..Default::default()
    }
}

#[test]
fn route_fields() {
    let request = |routes: Vec<Route>| UpdateRoutesRequest {
        routes,
        ..Default::default()
    };
    assert_eq!(
        request(vec![
            route("default", "10.88.0.1", "eth0"),
            route("10.88.0.0/16", "", "eth0"),
        ])
        .validate(),
        Ok(())
    );
    assert_eq!(
        field_of(request(vec![route("10.88.0.0", "", "eth0")]).validate()),
        "routes[0].destination"
    );
    assert_eq!(
        field_of(request(vec![route("10.88.0.0/40", "", "eth0")]).validate()),
        "routes[0].destination"
    );
    assert_eq!(
        field_of(request(vec![route("default", "fd00::1", "eth0")]).validate()),
        "routes[0].gateway"
    );
    assert_eq!(
        field_of(request(vec![route("default", "", "")]).validate()),
        "routes[0].device"
    );
    assert_eq!(
        field_of(request(vec![route("default", "10.0.0.1", ""); MAX_ROUTES + 1]).validate()),
        "routes"
    );
}

#[test]
fn guest_time() {
    use protobuf::well_known_types::timestamp::Timestamp;
    let request = |seconds, nanos| SetGuestDateTimeRequest {
        time: protobuf::MessageField::some(Timestamp {
            seconds,
            nanos,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(request(1_700_000_000, 5).validate(), Ok(()));
    assert_eq!(field_of(request(-1, 0).validate()), "time.seconds");
    assert_eq!(field_of(request(1, 1_000_000_000).validate()), "time.nanos");
    assert_eq!(
        field_of(SetGuestDateTimeRequest::default().validate()),
        "time"
    );
}
