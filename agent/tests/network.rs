//! The network RPCs through the agent's real ttrpc API: ListInterfaces (read-only) against
//! the host's namespace, and the whole set with the agent running inside a scratch network
//! namespace that the test creates and removes (the host's interfaces are never changed).

mod common;

use common::{ctx, rpc_status, AgentProcess};
use hull_proto::agent::*;
use hull_proto::network::{Interface, IpAddress, IpFamily, Route};
use ttrpc::Code;

fn ip_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ip {args:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn list_interfaces_matches_what_ip_shows() {
    let agent = AgentProcess::start();
    let c = agent.client().await;
    let listed = c
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap()
        .interfaces;
    let lo = listed.iter().find(|i| i.name == "lo").expect("no lo");
    assert_eq!(lo.hw_address, "00:00:00:00:00:00");
    assert!(
        lo.addresses
            .iter()
            .any(|a| a.address == "127.0.0.1" && a.prefix_length == 8),
        "{lo:?}"
    );
    // Other links may come and go while this runs (other tests make veths): compare those
    // that `ip` still shows.
    for interface in &listed {
        let Some(link) = ip_json(&["link", "show"])
            .into_iter()
            .find(|l| l["ifname"] == interface.name.as_str())
        else {
            continue;
        };
        assert_eq!(u64::from(interface.mtu), link["mtu"].as_u64().unwrap());
        if let Some(mac) = link["address"].as_str() {
            assert_eq!(interface.hw_address, mac, "{}", interface.name);
        }
    }
}

/// A network namespace for one test, deleted on drop.
struct ScratchNetns(String);

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn network_rpcs_configure_the_agents_namespace() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "this test needs root");
        eprintln!("SKIPPED: network namespace tests need root");
        return;
    }
    let ns = ScratchNetns(format!("hull-agt-api-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    let n = ["-n", ns.0.as_str()];
    let veth = ["link", "add", "nic0", "address", "02:00:00:12:34:56"];
    ip(&[&n[..], &veth, &["type", "veth", "peer", "name", "peer0"]].concat());
    ip(&[&n[..], &["link", "set", "peer0", "up"]].concat());
    let agent = AgentProcess::start_in_netns(&ns.0);
    let c = agent.client().await;

    let wanted = Interface {
        name: "eth0".into(),
        hw_address: "02:00:00:12:34:56".into(),
        mtu: 1450,
        addresses: vec![IpAddress {
            family: IpFamily::IP_FAMILY_V4.into(),
            address: "10.88.0.7".into(),
            prefix_length: 16,
            ..Default::default()
        }],
        ..Default::default()
    };
    let request = UpdateInterfaceRequest {
        interface: Some(wanted.clone()).into(),
        ..Default::default()
    };
    let configured = c.update_interface(ctx(), &request).await.unwrap();
    let configured = configured.interface.unwrap();
    assert_eq!(configured.name, "eth0");
    assert_eq!(configured.mtu, 1450);
    assert!(configured.addresses.contains(&wanted.addresses[0]));

    let routes = vec![Route {
        family: IpFamily::IP_FAMILY_V4.into(),
        destination: "default".into(),
        gateway: "10.88.0.1".into(),
        device: "eth0".into(),
        ..Default::default()
    }];
    let request = UpdateRoutesRequest {
        routes: routes.clone(),
        ..Default::default()
    };
    let installed = c.update_routes(ctx(), &request).await.unwrap().routes;
    assert_eq!(installed.len(), 1, "{installed:?}");
    assert_eq!(installed[0].gateway, "10.88.0.1");
    let shown = ip_json(&[&n[..], &["route", "show", "default"]].concat());
    assert_eq!(shown[0]["gateway"], "10.88.0.1", "{shown:?}");
    assert_eq!(shown[0]["dev"], "eth0", "{shown:?}");

    let listed = c
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap()
        .interfaces;
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "peer0", "eth0"]);

    // A link that does not exist, and bad input refused before netlink.
    let missing = UpdateInterfaceRequest {
        interface: Some(Interface {
            name: "eth9".into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let status = rpc_status(c.update_interface(ctx(), &missing).await);
    assert_eq!(status.code(), Code::NOT_FOUND, "{status:?}");
    assert!(
        status.message.contains("UpdateInterface"),
        "{}",
        status.message
    );
    assert!(status.message.contains("eth9"), "{}", status.message);
    let bad = UpdateRoutesRequest {
        routes: vec![Route {
            destination: "10.0.0.0/40".into(),
            device: "eth0".into(),
            family: IpFamily::IP_FAMILY_V4.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = rpc_status(c.update_routes(ctx(), &bad).await);
    assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{status:?}");
    assert!(
        status.message.contains("routes[0].destination"),
        "{}",
        status.message
    );
    // The kernel's refusal: a gateway nothing reaches.
    let unreachable = UpdateRoutesRequest {
        routes: vec![Route {
            gateway: "192.0.2.1".into(),
            ..routes[0].clone()
        }],
        ..Default::default()
    };
    let status = rpc_status(c.update_routes(ctx(), &unreachable).await);
    assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("192.0.2.1"), "{}", status.message);
}
