use super::*;

#[test]
fn plan_adds_new_ports_and_removes_gone_ones() {
    let current: BTreeSet<u16> = [22, 80, 443].into_iter().collect();
    let (add, remove) = plan(&current, &[80, 8080, 8080, 443]);
    assert_eq!(add, vec![8080]);
    assert_eq!(remove, vec![22]);
    let (add, remove) = plan(&BTreeSet::new(), &[]);
    assert!(add.is_empty() && remove.is_empty());
    let (add, remove) = plan(&current, &[]);
    assert!(add.is_empty());
    assert_eq!(remove, vec![22, 80, 443]);
}

#[test]
fn nothing_is_bound_when_the_netns_cannot_be_entered() {
    // Find a free port in this namespace; a failed netns must not bind it here.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = netns::bind_in_netns(std::path::Path::new("/nonexistent/netns"), &[port]);
    assert!(
        matches!(err, Err(netns::NetnsError::Open { .. })),
        "{err:?}"
    );
    // Not a namespace file: setns refuses, still nothing bound.
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = netns::bind_in_netns(file.path(), &[port]);
    assert!(
        matches!(err, Err(netns::NetnsError::Enter { .. })),
        "{err:?}"
    );
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port stayed free");
}
